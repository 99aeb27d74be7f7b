"""Alignment: a similarity transform from five landmarks to the FFHQ template, and the crop."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from drbfr_cli.faces.detect import Face

FACE_SIZE = 512
"""Side of the aligned crops the template is defined for."""

FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],  # image-left eye
        [318.90277, 240.19360],  # other eye
        [256.63416, 314.01935],  # nose tip
        [201.26117, 371.41043],  # image-left mouth corner
        [313.08905, 371.15118],  # other mouth corner
    ],
    dtype=np.float64,
)
"""Five-point template of FFHQ-aligned 512x512 faces, in pixels.

Source: the "standard 5 landmarks for FFHQ faces with 512 x 512" in facexlib
(`facexlib/utils/face_restoration_helper.py`, `FaceRestoreHelper.face_template`), the template
GFPGAN and CodeFormer align to; it is the mean 5-point position on faces aligned with the FFHQ
procedure (Karras et al., "A Style-Based Generator Architecture for GANs", 2019,
NVlabs/ffhq-dataset).
"""


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """A face cropped to the template: `crop` = warp of the image by `affine`."""

    crop: np.ndarray
    """float32 RGB size x size x 3 in [0, 1]."""
    affine: np.ndarray
    """float64 2x3: image pixels -> crop pixels (a similarity)."""
    face: Face | None = None
    """The detection it came from (None for inputs that were already aligned)."""

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])


def template(size: int = FACE_SIZE) -> np.ndarray:
    """The FFHQ template scaled to `size` x `size` crops (float64 5x2)."""
    return FFHQ_TEMPLATE_512 * (size / FACE_SIZE)


def estimate_affine(landmarks: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, shift) taking `landmarks` to the
    template for `size` crops, as a 2x3 float64 matrix (Umeyama, 1991, without reflection)."""
    return similarity_transform(np.asarray(landmarks, dtype=np.float64), template(size))


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 similarity minimising sum |A source_i - target_i|^2 (Umeyama's closed form).

    Umeyama, "Least-squares estimation of transformation parameters between two point
    patterns", IEEE TPAMI 13(4), 1991, Eqs. (40)-(42), with the reflection excluded.
    """
    src_mean, dst_mean = source.mean(axis=0), target.mean(axis=0)
    src, dst = source - src_mean, target - dst_mean
    covariance = dst.T @ src / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    variance = (src**2).sum() / len(source)
    if variance <= 0:
        raise ValueError("landmarks coincide: no similarity transform exists")
    scale = float(np.trace(np.diag(singular) @ sign)) / variance
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def warp_face(image: np.ndarray, affine: np.ndarray, size: int = FACE_SIZE) -> AlignedFace:
    """Crop `image` (float32 RGB HxWx3) through `affine` into a size x size face.

    Pixels outside the image are filled by reflection (paste-back never uses them: its mask
    covers only the part of the crop that came from inside the image).
    """
    crop = cv2.warpAffine(
        image,
        affine,
        (size, size),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    return AlignedFace(crop=np.clip(crop, 0.0, 1.0), affine=np.asarray(affine, np.float64))


def align_face(image: np.ndarray, face: Face, size: int = FACE_SIZE) -> AlignedFace:
    """Align one detected face: estimate its affine from the landmarks and crop."""
    aligned = warp_face(image, estimate_affine(face.landmarks, size), size)
    return AlignedFace(crop=aligned.crop, affine=aligned.affine, face=face)


def transform_points(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to Nx2 points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ affine[:, :2].T + affine[:, 2]


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine."""
    return cv2.invertAffineTransform(np.asarray(affine, dtype=np.float64))
