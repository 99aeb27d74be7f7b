"""`drbfr inspect`: what happened to each face, without restoring it.

Each image is read, its faces detected and aligned as `drbfr restore` does (or taken as one
aligned face with `aligned`), and each aligned face goes through E_DR and the degradation head
(bundle.Estimator) at the bundle's face size: the estimate restore reports, at a fraction of
its cost (no first stage, no denoiser, no background, nothing written).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from drbfr_cli.bundle import Estimator
from drbfr_cli.errors import DrbfrError
from drbfr_cli.estimate import DegradationEstimate
from drbfr_cli.faces.align import FACE_SIZE, AlignedFace, align_face
from drbfr_cli.faces.detect import DetectOptions, Detector, detect_faces
from drbfr_cli.imaging import DEFAULT_MAX_PIXELS, ImageSource, faces_to_tensor, read_image
from drbfr_cli.restore.prepare import aligned_input, resize_square


@dataclass(frozen=True)
class FaceReport:
    """One face's estimate, where it is in its image, and how sure the detector was."""

    index: int
    estimate: DegradationEstimate
    box: tuple[float, float, float, float] | None
    """x0, y0, x1, y1 in input pixels; None for an aligned input."""
    score: float | None


@dataclass(frozen=True)
class ImageReport:
    """One image: its faces (largest first), or the one-line reason it could not be read."""

    source: ImageSource
    faces: tuple[FaceReport, ...] = ()
    error: str | None = None


def inspect_images(
    sources: Sequence[ImageSource],
    estimator: Estimator,
    *,
    face_size: int,
    detector: Detector | None,
    detect: DetectOptions,
    aligned: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[ImageReport]:
    """The estimate of every face of every source, one ImageReport per source in order; an
    unreadable image is a report with an error, never an exception."""
    for source in sources:
        try:
            rgb = read_image(source.path, max_pixels=max_pixels).rgb
            faces = aligned_faces(rgb, detector, detect, aligned)
        except (DrbfrError, cv2.error, MemoryError) as exc:
            yield ImageReport(source, error=str(exc) or type(exc).__name__)
            continue
        yield ImageReport(source, tuple(estimate_aligned(estimator, faces, face_size)))


def aligned_faces(
    rgb: np.ndarray, detector: Detector | None, detect: DetectOptions, aligned: bool
) -> list[AlignedFace]:
    """The image as one aligned face, or its detected faces aligned to FACE_SIZE."""
    if aligned:
        return [aligned_input(rgb)]
    if detector is None:
        raise ValueError("whole images need a face detector")
    return [align_face(rgb, face, FACE_SIZE) for face in detect_faces(detector, rgb, detect)]


BATCH = 8
"""Faces per E_DR call (bounds memory on group photos)."""


def estimate_aligned(
    estimator: Estimator, faces: Sequence[AlignedFace], face_size: int
) -> Iterator[FaceReport]:
    """Each aligned face's estimate, at the bundle's face size, as restore computes it."""
    estimates: list[DegradationEstimate] = []
    for start in range(0, len(faces), BATCH):
        crops = [resize_square(face.crop, face_size) for face in faces[start : start + BATCH]]
        estimates += estimator.estimate(faces_to_tensor(crops) * 2 - 1)
    for index, (face, estimate) in enumerate(zip(faces, estimates, strict=True)):
        detection = face.face
        box = None if detection is None else tuple(float(v) for v in detection.box)
        score = None if detection is None else float(detection.score)
        yield FaceReport(index, estimate, box, score)  # type: ignore[arg-type]
