"""Paste-back: round trips on real photos, the feathered mask, colour fix, grayscale, ParseNet."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from drbfr_cli.faces.align import align_face
from drbfr_cli.faces.detect import DetectOptions, DetectorKind, build_detector, detect_faces
from drbfr_cli.faces.paste import (
    PARSE_SIZE,
    FaceParser,
    PasteFace,
    build_parser,
    match_color,
    paste_faces,
    square_mask,
    to_grayscale,
)
from drbfr_cli.imaging import read_image
from drbfr_cli.restore.background import LanczosUpsampler

PHOTOS = ("00.jpg", "10045.png", "Blake_Lively.jpg", "example.jpg", "rfpp_06.png")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def aligned_photos(real_lq_whole_dir: Path, shared_weights_dir: Path):
    detector = build_detector(DetectorKind.YUNET, shared_weights_dir)
    result = []
    for name in PHOTOS:
        image = read_image(real_lq_whole_dir / name).rgb
        faces = detect_faces(detector, image, DetectOptions())
        result.append((name, image, [align_face(image, face) for face in faces]))
    return result


def _unchanged(aligned) -> list[PasteFace]:
    return [PasteFace(a.crop, a.affine, a.size, reference=a.crop) for a in aligned]


def _footprint(shape, aligned, scale: float) -> np.ndarray:
    """Pixels any crop square can reach, grown by 3 px."""
    covered = np.zeros(shape[:2], np.uint8)
    for a in aligned:
        back = cv2.invertAffineTransform(a.affine) * scale
        square = np.ones((a.size, a.size), np.uint8)
        covered |= cv2.warpAffine(square, back, (shape[1], shape[0]), flags=cv2.INTER_NEAREST)
    return cv2.dilate(covered, np.ones((7, 7), np.uint8)).astype(bool)


def test_round_trip_reproduces_faces_and_leaves_the_rest_exact(aligned_photos):
    for name, image, aligned in aligned_photos:
        out = paste_faces(image, _unchanged(aligned), scale=1.0)
        for a in aligned:
            x0, y0, x1, y1 = (round(v) for v in a.face.box)
            assert _psnr(out[y0:y1, x0:x1], image[y0:y1, x0:x1]) > 35.0, name
        outside = ~_footprint(image.shape, aligned, 1.0)
        assert outside.mean() > 0.3, name
        assert np.array_equal(out[outside], image[outside]), name


def test_identity_restorer_matches_the_upscaled_background(aligned_photos):
    """The pipeline's geometry check: unchanged crops pasted on a 2x background are seamless."""
    for name, image, aligned in aligned_photos:
        background = LanczosUpsampler(scale=2)(image)
        out = paste_faces(background, _unchanged(aligned), scale=2.0)
        assert out.shape == background.shape
        assert _psnr(out, background) >= 35.0, name
        for a in aligned:
            x0, y0, x1, y1 = (round(2 * v) for v in a.face.box)
            assert _psnr(out[y0:y1, x0:x1], background[y0:y1, x0:x1]) >= 33.0, name


def test_restored_faces_of_another_size_land_in_the_same_place(aligned_photos):
    name, image, aligned = aligned_photos[-1]
    half = [
        PasteFace(cv2.resize(a.crop, (256, 256), interpolation=cv2.INTER_AREA), a.affine, a.size)
        for a in aligned
    ]
    out = paste_faces(image, half, scale=1.0)
    for a in aligned:
        x0, y0, x1, y1 = (round(v) for v in a.face.box)
        assert _psnr(out[y0:y1, x0:x1], image[y0:y1, x0:x1]) > 30.0, name


def test_pasted_face_replaces_the_face_region(aligned_photos):
    _, image, aligned = aligned_photos[-1]
    white = [PasteFace(np.ones_like(a.crop), a.affine, a.size) for a in aligned]
    out = paste_faces(image, white, scale=1.0)
    for a in aligned:
        nose = np.round(a.face.landmarks[2]).astype(int)
        assert np.allclose(out[nose[1], nose[0]], 1.0, atol=1e-6)


def test_square_mask_is_feathered_and_scales_with_the_face():
    for side in (128, 512):
        mask = square_mask(side)
        assert mask[side // 2, side // 2] == pytest.approx(1.0)
        assert mask[0].max() == 0 and mask[:, -1].max() == 0
        np.testing.assert_allclose(mask, mask.T, atol=1e-6)
        np.testing.assert_allclose(mask, mask[::-1, ::-1], atol=1e-6)
        row = mask[side // 2, : side // 2]
        assert np.all(np.diff(row) >= -1e-6)
        ramp = np.count_nonzero((row > 0.01) & (row < 0.99))
        assert 0.04 * side < ramp < 0.15 * side
    assert not square_mask(64).flags.writeable


def _lab_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2Lab).reshape(-1, 3)
    return lab.mean(0), lab.std(0)


def test_color_fix_moves_mean_and_std_to_the_reference(aligned_photos):
    _, _, aligned = aligned_photos[-1]
    reference = aligned[0].crop
    tinted = np.clip(reference * [0.8, 0.95, 1.1] + [0.05, 0.0, -0.05], 0, 1).astype(np.float32)
    ref_mean, ref_std = _lab_stats(reference)
    before_mean, _ = _lab_stats(tinted)
    fixed_mean, fixed_std = _lab_stats(match_color(tinted, reference))
    assert np.abs(before_mean - ref_mean).max() > 3.0
    np.testing.assert_allclose(fixed_mean, ref_mean, atol=0.5)
    np.testing.assert_allclose(fixed_std, ref_std, rtol=0.05)


def test_paste_with_color_fix_undoes_a_tint(aligned_photos):
    _, image, aligned = aligned_photos[-1]
    tint = np.array([1.0, 0.85, 0.7], np.float32)
    faces = [PasteFace(a.crop * tint, a.affine, a.size, reference=a.crop) for a in aligned]
    plain = paste_faces(image, faces, scale=1.0)
    fixed = paste_faces(image, faces, scale=1.0, color_fix=True)
    assert _psnr(fixed, image) > _psnr(plain, image) + 5.0
    with pytest.raises(ValueError, match="reference"):
        paste_faces(
            image, [PasteFace(aligned[0].crop, aligned[0].affine, 512)], scale=1.0, color_fix=True
        )


def test_grayscale_input_stays_grayscale(aligned_photos):
    _, image, aligned = aligned_photos[-1]
    gray = to_grayscale(image)
    assert np.array_equal(gray[..., 0], gray[..., 2])
    colourful = [PasteFace(a.crop * [1.0, 0.5, 0.2], a.affine, a.size) for a in aligned]
    out = paste_faces(gray, colourful, scale=1.0, grayscale=True)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    coloured = paste_faces(gray, colourful, scale=1.0)
    assert np.abs(coloured[..., 0] - coloured[..., 2]).max() > 0.1


@pytest.fixture
def random_parsenet(tmp_path, register_weights) -> Path:
    from facexlib.parsing.parsenet import ParseNet

    torch.manual_seed(0)
    net = ParseNet(in_size=PARSE_SIZE, out_size=PARSE_SIZE, parsing_ch=19)
    path = tmp_path / "parsing_parsenet.pth"
    torch.save(net.state_dict(), path)
    register_weights("parsenet", path)
    return tmp_path


def test_parser_loads_verified_weights_and_masks_stay_inside(random_parsenet, aligned_photos):
    parser = build_parser(random_parsenet)
    assert isinstance(parser, FaceParser)
    parser = FaceParser(state_dict=parser.net.state_dict(), device="cpu", size=64)
    _, image, aligned = aligned_photos[-1]
    mask = parser(aligned[0].crop)
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    white = [PasteFace(np.ones_like(a.crop), a.affine, a.size) for a in aligned]
    out = paste_faces(image, white, scale=1.0, parser=parser)
    outside = ~_footprint(image.shape, aligned, 1.0)
    assert np.array_equal(out[outside], image[outside])


def test_no_parser_without_parsenet_weights(tmp_path):
    assert build_parser(tmp_path) is None
