"""Alignment: the similarity fit, the crop's pixel geometry, real detections onto the template."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from drbfr_cli.faces.align import (
    FFHQ_TEMPLATE_512,
    align_face,
    estimate_affine,
    invert_affine,
    template,
    transform_points,
    warp_face,
)
from drbfr_cli.faces.detect import DetectOptions, DetectorKind, build_detector, detect_faces
from drbfr_cli.imaging import read_image

PHOTOS = ("00.jpg", "10045.png", "Blake_Lively.jpg", "example.jpg", "rfpp_06.png")


def _similarity(scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def test_template_scales_with_the_crop_size():
    np.testing.assert_allclose(template(256), FFHQ_TEMPLATE_512 / 2)
    np.testing.assert_allclose(template(), FFHQ_TEMPLATE_512)


@pytest.mark.parametrize("size", [512, 256])
def test_estimate_affine_recovers_an_exact_similarity(size):
    truth = _similarity(1.7, 0.3, (40.0, -25.0))
    landmarks = transform_points(invert_affine(truth), template(size))
    np.testing.assert_allclose(estimate_affine(landmarks, size), truth, atol=1e-9)


def test_estimate_affine_agrees_with_opencv_on_noisy_points():
    rng = np.random.default_rng(3)
    landmarks = transform_points(_similarity(0.4, -0.5, (300, 120)), template())
    landmarks += rng.normal(0.0, 2.0, landmarks.shape)
    ours = estimate_affine(landmarks)
    theirs, _ = cv2.estimateAffinePartial2D(
        landmarks.astype(np.float32), template().astype(np.float32), method=cv2.LMEDS
    )
    residual = np.linalg.norm(transform_points(ours, landmarks) - template(), axis=1)
    opencv = np.linalg.norm(transform_points(theirs, landmarks) - template(), axis=1)
    assert (residual**2).sum() <= (opencv**2).sum() + 1e-6  # least squares is optimal
    np.testing.assert_allclose(ours, theirs, atol=0.05 * np.abs(theirs).max())


def test_mirrored_landmarks_give_a_rotation_not_a_reflection():
    mirrored = template() * [-1.0, 1.0]
    affine = estimate_affine(mirrored)
    assert np.linalg.det(affine[:, :2]) > 0


def test_warp_face_samples_where_the_affine_says():
    height, width = 300, 400
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    points = np.array([[150.0, 120.0], [210.0, 118.0], [182.0, 160.0], [155, 195], [205, 196]])
    image = np.zeros((height, width, 3), np.float32)
    for x, y in points:
        image[..., 1] += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))
    affine = estimate_affine(points)
    crop = warp_face(image, affine).crop
    assert crop.shape == (512, 512, 3) and crop.dtype == np.float32
    for expected in transform_points(affine, points):
        x, y = np.round(expected).astype(int)
        window = crop[y - 12 : y + 13, x - 12 : x + 13, 1]
        peak = np.unravel_index(np.argmax(window), window.shape)
        assert abs(peak[0] - 12) <= 1 and abs(peak[1] - 12) <= 1


@pytest.fixture(scope="module")
def real_faces(real_lq_whole_dir: Path, shared_weights_dir: Path):
    detector = build_detector(DetectorKind.YUNET, shared_weights_dir)
    found = []
    for name in PHOTOS:
        image = read_image(real_lq_whole_dir / name).rgb
        found += [(name, image, face) for face in detect_faces(detector, image, DetectOptions())]
    return detector, found


def test_real_faces_land_on_the_template(real_faces):
    _, found = real_faces
    assert len(found) == 13
    for name, image, face in found:
        aligned = align_face(image, face)
        assert aligned.crop.shape == (512, 512, 3) and aligned.face is face
        moved = transform_points(aligned.affine, face.landmarks)
        # Real faces are not the mean face: residuals of a 5-point similarity fit stay within
        # 3% of the crop side on average (measured 3-10 px at 512).
        assert np.linalg.norm(moved - template(), axis=1).mean() < 16.0, name
        np.testing.assert_allclose(moved.mean(axis=0), template().mean(axis=0), atol=1e-6)


def test_aligned_crops_of_large_faces_are_redetected_on_the_template(real_faces):
    detector, found = real_faces
    large = [(name, image, face) for name, image, face in found if face.size >= 200]
    assert len(large) >= 2
    for name, image, face in large:
        crop = align_face(image, face).crop
        again = detect_faces(detector, crop, DetectOptions(max_side=None, only_center_face=True))
        assert len(again) == 1, name
        error = np.linalg.norm(again[0].landmarks - template(), axis=1).mean()
        assert error < 16.0, name
