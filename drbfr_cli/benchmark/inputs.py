"""Inputs of the restore benchmark, and stand-in tools whose speed is that of the real ones.

- Whole photos (a folder) with a real face detector; aligned face crops (a folder); or, when
  neither is given, synthetic 512 x 512 images restored as `--aligned` inputs.
- Canvases holding k faces at known places, with a detector that reports those places, so
  that the faces-per-image scaling has exactly k faces in every image.
- A Real-ESRGAN background upsampler with random weights (the release architecture).

Images are float32 RGB HxWx3 in [0, 1], as everywhere in the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from drbfr_cli.faces.align import FACE_SIZE, template
from drbfr_cli.faces.detect import DetectorKind, Face
from drbfr_cli.imaging import ImageSource, read_image, write_image
from drbfr_cli.restore.prepare import resize_square

CANVAS_SIDE = 1024
"""Side of the face-count canvases (the background is the same size for every count)."""
CANVAS_CELL = 256
"""Side of each face on a canvas (a 4 x 4 grid: up to 16 faces)."""


def synthetic_image(rng: np.random.Generator, size: int = FACE_SIZE) -> np.ndarray:
    """A smooth random picture (blurred noise over a gradient): content for speed runs."""
    noise = rng.random((size, size, 3), dtype=np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), size / 64)
    ramp = np.linspace(0.2, 0.8, size, dtype=np.float32)[None, :, None]
    image = 0.5 * ramp + 0.5 * (smooth - smooth.mean() + 0.5)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def write_synthetic_set(folder: Path, count: int, *, size: int = FACE_SIZE, seed: int = 0) -> Path:
    """`count` synthetic PNG images in `folder` (created); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        write_image(folder / f"synthetic_{index:03d}.png", synthetic_image(rng, size))
    return folder


def read_faces(sources: Sequence[ImageSource], count: int) -> list[np.ndarray]:
    """The first `count` of `sources`, each resized to a FACE_SIZE square crop."""
    return [resize_square(read_image(source.path).rgb, FACE_SIZE) for source in sources[:count]]


def cycle_to(items: Sequence[np.ndarray], count: int) -> list[np.ndarray]:
    """`count` items, repeating `items` in order."""
    if not items:
        raise ValueError("no items to repeat")
    return [items[index % len(items)] for index in range(count)]


# ---------------------------------------------------------------------------------------------
# Canvases of k faces


@dataclass(frozen=True)
class Canvas:
    """An image holding aligned faces at known places."""

    image: np.ndarray
    landmarks: tuple[np.ndarray, ...]
    """float32 5x2 per face, in canvas pixels (the FFHQ template points of each cell)."""


def face_canvas(faces: Sequence[np.ndarray], count: int, *, seed: int = 0) -> Canvas:
    """A CANVAS_SIDE square picture with `count` (1-16) faces, each an aligned crop shrunk to
    CANVAS_CELL, in the first cells of a 4 x 4 grid, over a smooth synthetic background."""
    per_row = CANVAS_SIDE // CANVAS_CELL
    if not 1 <= count <= per_row * per_row:
        raise ValueError(f"a canvas holds 1 to {per_row * per_row} faces, not {count}")
    image = synthetic_image(np.random.default_rng(seed), CANVAS_SIDE)
    points = template(CANVAS_CELL).astype(np.float32)
    landmarks = []
    for index, face in enumerate(cycle_to(faces, count)):
        y, x = divmod(index, per_row)
        top, left = y * CANVAS_CELL, x * CANVAS_CELL
        image[top : top + CANVAS_CELL, left : left + CANVAS_CELL] = resize_square(face, CANVAS_CELL)
        landmarks.append(points + np.array([left, top], dtype=np.float32))
    return Canvas(image=image, landmarks=tuple(landmarks))


class KnownFacesDetector:
    """A Detector that reports the faces of a canvas layout (scaled to the image's size): the
    number of faces per image is then exact. Its kind only sets a default score threshold."""

    kind = DetectorKind.YUNET

    def __init__(self, landmarks: Sequence[np.ndarray], side: int = CANVAS_SIDE) -> None:
        self.landmarks = [np.asarray(points, dtype=np.float32) for points in landmarks]
        self.side = side

    def detect(self, image: np.ndarray, threshold: float) -> list[Face]:
        factor = image.shape[1] / self.side
        faces = []
        for points in self.landmarks:
            scaled = points * factor
            (x0, y0), (x1, y1) = scaled.min(axis=0), scaled.max(axis=0)
            pad = 0.6 * (x1 - x0)
            box = (float(x0 - pad), float(y0 - pad), float(x1 + pad), float(y1 + pad))
            faces.append(Face(box=box, score=1.0, landmarks=scaled))
        return faces


# ---------------------------------------------------------------------------------------------
# Background


def random_realesrgan(scale: float, *, tile: int, device: str, half: bool, seed: int = 0):
    """A SpandrelUpsampler for `scale` whose network (the release x2plus or x4plus RRDBNet:
    64 features, 23 blocks) has random weights."""
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN

    from drbfr_cli.restore.background import (
        SpandrelUpsampler,
        load_realesrgan,
        realesrgan_weights,
    )

    name = realesrgan_weights(scale)
    x2 = name.endswith("x2plus")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = ESRGAN(  # x2plus: pixel-unshuffle by 2, then the x4 body
            in_nc=12 if x2 else 3,
            out_nc=3,
            num_filters=64,
            num_blocks=23,
            scale=4,
            shuffle_factor=2 if x2 else None,
        )
    descriptor = load_realesrgan(network.state_dict(), name=name)
    return SpandrelUpsampler(
        descriptor=descriptor, scale=scale, tile=tile, device=device, half=half
    )
