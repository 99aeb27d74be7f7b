"""Training samples: degraded patch pairs for the DRM (paper Eqs. 1-2), HQ patches for the VAE.

Faces are read from disk when an item needs them (`FaceFiles`): only the list of files is
kept, so memory does not grow with the number of faces, and decoding runs in the data-loader
workers. `--data` takes one folder or a weighted mixture, `DIR[:WEIGHT],...`.

`PatchPairDataset`: each item draws its own Eq. (11) parameters phi_i, degrades one crop of one
HQ face with them, and returns two non-overlapping patches of that LQ crop (p1, p2) with the HQ
patches at the same positions (r1, r2). `FacePatchDataset`: random crops of HQ faces at random
scales, for the first-stage autoencoder. All randomness comes from a generator seeded by
(dataset seed, index, torch's seed); the training loop seeds torch per (seed, epoch, index), so
an item is the same in every worker, process count and resumed run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from drbfr_cli.degradations import (
    DegradationRanges,
    degrade,
    sample_mixed_params,
    sample_params,
)
from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import collect_images, read_image, to_uint8
from drbfr_cli.synthetic import prepare_hq

VIRTUAL_LENGTH = 100_000
"""Items per 'epoch'; the training loop reseeds torch per (seed, epoch, index), so every epoch
draws new degradations."""


@dataclass(frozen=True)
class FolderShare:
    """One folder of a training mixture and its weight (items drawn per face, relative)."""

    folder: Path
    weight: float = 1.0


def parse_mixture(spec: str | Sequence[str]) -> list[FolderShare]:
    """'DIR' or 'DIR:WEIGHT' entries (a comma-separated string, or a list) -> FolderShares.

    A suffix after the last ':' that is not a number belongs to the path."""
    entries = spec.split(",") if isinstance(spec, str) else list(spec)
    shares = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        path, _, tail = entry.rpartition(":")
        try:
            weight = float(tail) if path else None
        except ValueError:
            weight = None
        if weight is None:
            shares.append(FolderShare(Path(entry)))
        elif weight <= 0:
            raise DrbfrError(f"{entry}: a folder's weight must be positive")
        else:
            shares.append(FolderShare(Path(path), weight))
    if not shares:
        raise DrbfrError("no training folder given")
    return shares


class FaceFiles(Sequence[np.ndarray]):
    """Training faces read from disk when indexed: uint8 RGB size x size (prepare_hq).

    Only the file list is held (the mixture's weights repeat a folder's files in the index), so
    host memory does not grow with the number of faces; decoding happens in the data-loader
    workers that index it. A file that cannot be read is replaced by the next readable one.
    """

    def __init__(self, shares: Sequence[FolderShare], size: int) -> None:
        self.size = size
        self.paths: list[Path] = []
        for share in shares:
            files = [s.path for s in collect_images([share.folder])]
            if not files:
                raise DrbfrError(f"{share.folder}: no images to train on")
            count = max(1, round(share.weight * len(files)))
            self.paths += [files[i % len(files)] for i in range(count)]
        self[0]  # at least one file must decode: fail now, not in a worker

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        if not -len(self.paths) <= index < len(self.paths):
            raise IndexError(f"face {index} of {len(self.paths)}")
        for step in range(len(self.paths)):
            path = self.paths[(index + step) % len(self.paths)]
            try:
                return to_uint8(prepare_hq(read_image(path).rgb, self.size))
            except DrbfrError:
                continue
        folders = ", ".join(sorted({str(p.parent) for p in self.paths}))
        raise DrbfrError(f"{folders}: no readable image to train on")


def _face_shape(faces: Sequence[np.ndarray]) -> tuple[int, int]:
    """(height, width) shared by all faces: FaceFiles knows it without decoding them."""
    if isinstance(faces, FaceFiles):
        return faces.size, faces.size
    sizes = {face.shape[:2] for face in faces}
    if len(sizes) != 1:
        raise DrbfrError("training faces must all have one size (load them with load_faces)")
    return sizes.pop()


def load_faces(data: str | Path | Sequence[str], size: int) -> FaceFiles:
    """The training faces of a folder or mixture ('DIR[:WEIGHT],...'), read lazily at `size`.

    Raises DrbfrError when a folder is missing or holds no image."""
    return FaceFiles(parse_mixture(str(data) if isinstance(data, Path) else data), size)


def patch_positions(
    rng: np.random.Generator, crop: int, patch: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Top-left corners of two patches inside a crop x crop region that do not overlap."""
    while True:
        a = tuple(int(v) for v in rng.integers(0, crop - patch + 1, size=2))
        b = tuple(int(v) for v in rng.integers(0, crop - patch + 1, size=2))
        if abs(a[0] - b[0]) >= patch or abs(a[1] - b[1]) >= patch:
            return a, b  # type: ignore[return-value]


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """float32 RGB HxWx3 in [0, 1] -> 3xHxW in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))) * 2.0 - 1.0


class PatchPairDataset(Dataset):
    """Items: lq1, lq2, hq1, hq2 (3 x P x P in [-1, 1]) and params (sigma, r, delta, q)."""

    def __init__(
        self,
        faces: Sequence[np.ndarray],
        *,
        crop_size: int,
        patch_size: int,
        ranges: DegradationRanges | None = None,
        seed: int = 0,
    ) -> None:
        if min(_face_shape(faces)) < crop_size:
            raise DrbfrError(f"faces must be at least {crop_size} px for crop_size {crop_size}")
        self.faces = faces
        self.crop_size, self.patch_size = crop_size, patch_size
        self.ranges = ranges or DegradationRanges()
        self.seed = seed

    def __len__(self) -> int:
        return VIRTUAL_LENGTH

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index, torch.initial_seed() % 2**63])
        face = self.faces[int(rng.integers(len(self.faces)))]
        top, left = (int(v) for v in rng.integers(0, np.array(face.shape[:2]) - self.crop_size + 1))
        hq = (
            face[top : top + self.crop_size, left : left + self.crop_size].astype(np.float32)
            / 255.0
        )
        params = sample_params(rng, self.ranges)
        lq = degrade(hq, params, rng)
        (y1, x1), (y2, x2) = patch_positions(rng, self.crop_size, self.patch_size)
        p = self.patch_size
        return {
            "lq1": _to_tensor(lq[y1 : y1 + p, x1 : x1 + p]),
            "lq2": _to_tensor(lq[y2 : y2 + p, x2 : x2 + p]),
            "hq1": _to_tensor(hq[y1 : y1 + p, x1 : x1 + p]),
            "hq2": _to_tensor(hq[y2 : y2 + p, x2 : x2 + p]),
            "params": torch.tensor(
                [params.sigma, params.r, params.delta, params.q], dtype=torch.float32
            ),
        }


class FacePatchDataset(Dataset):
    """Items: dict with `image`, a 3 x P x P patch in [-1, 1] of one HQ face at a random scale.

    Each item picks a face, resizes it (area filter) to a side drawn log-uniformly in
    [min_side, max_side], takes a random patch_size crop and flips it horizontally with
    probability 1/2. `faces` are uint8 RGB squares of side max_side (see `load_faces`). With
    min_side == patch_size, some items are whole faces at the patch size.
    """

    def __init__(
        self,
        faces: Sequence[np.ndarray],
        *,
        patch_size: int,
        sides: tuple[int, int],
        seed: int = 0,
        color_augment: bool = False,
    ) -> None:
        low, high = sides
        if not patch_size <= low <= high:
            raise DrbfrError(
                f"face sides {low}-{high} must be at least the patch size {patch_size}"
            )
        if _face_shape(faces) != (high, high):
            raise DrbfrError(f"faces must be {high} x {high} (load them with load_faces)")
        self.faces, self.patch_size, self.sides, self.seed = faces, patch_size, sides, seed
        self.color_augment = color_augment

    def __len__(self) -> int:
        return VIRTUAL_LENGTH

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index, torch.initial_seed() % 2**63])
        patch = random_patch(self.faces, self.patch_size, self.sides, rng)
        if self.color_augment:
            patch = augment_colors(patch, rng)
        return {"image": _to_tensor(patch)}


GRAY_PROBABILITY = 0.1
"""Share of colour-augmented patches turned gray (old photos are often monochrome)."""


def augment_colors(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`patch` (H x W x 3 in [0, 1]) with its channels permuted at random, sometimes gray.

    A handful of training faces covers few hues; permuting RGB shows the codec every colour
    the faces' chroma can be turned into, so it cannot fit their particular palette.
    """
    if rng.random() < GRAY_PROBABILITY:
        gray = patch @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma
        return np.repeat(gray[..., None], 3, axis=2)
    return np.ascontiguousarray(patch[..., rng.permutation(3)])


def random_patch(
    faces: Sequence[np.ndarray], patch: int, sides: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """A float32 RGB patch x patch crop in [0, 1] of a random face at a random scale."""
    face = faces[int(rng.integers(len(faces)))]
    low, high = np.log(sides[0]), np.log(sides[1])
    side = min(sides[1], max(sides[0], round(float(np.exp(rng.uniform(low, high))))))
    if side != face.shape[0]:
        face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    top, left = (int(v) for v in rng.integers(0, side - patch + 1, size=2))
    crop = face[top : top + patch, left : left + patch]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return crop.astype(np.float32) / 255.0


class RestorationPairDataset(Dataset):
    """Items: hq, lq (3 x P x P in [-1, 1]): a random HQ patch (as `FacePatchDataset`) and its
    Eq. (11) degradation with parameters drawn per item from `ranges` (from `mild` instead for a
    `mild_fraction` of the items), at the patch's own scale.
    """

    def __init__(
        self,
        faces: Sequence[np.ndarray],
        *,
        patch_size: int,
        sides: tuple[int, int],
        ranges: DegradationRanges,
        seed: int = 0,
        color_augment: bool = False,
        mild: DegradationRanges | None = None,
        mild_fraction: float = 0.0,
    ) -> None:
        if not 0.0 <= mild_fraction <= 1.0:
            raise ValueError(f"mild_fraction must lie in [0, 1], got {mild_fraction}")
        self.patches = FacePatchDataset(
            faces, patch_size=patch_size, sides=sides, seed=seed, color_augment=color_augment
        )
        self.ranges = ranges
        self.mild = mild or ranges
        self.mild_fraction = mild_fraction if mild is not None else 0.0

    def __len__(self) -> int:
        return VIRTUAL_LENGTH

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        data = self.patches
        rng = np.random.default_rng([data.seed, index, torch.initial_seed() % 2**63, 1])
        hq = random_patch(data.faces, data.patch_size, data.sides, rng)
        if data.color_augment:
            hq = augment_colors(hq, rng)
        params = sample_mixed_params(rng, self.ranges, self.mild, self.mild_fraction)
        lq = degrade(hq, params, rng)
        return {"hq": _to_tensor(hq), "lq": _to_tensor(lq)}


class DegradedCropDataset(Dataset):
    """Items: hq, lq (3 x h x w in [-1, 1], the size of `box`) and params (sigma, r, delta, q):
    the box (x0, y0, x1, y1) of a face at its own size, moved by up to `jitter` px and flipped
    half the time, cut from the face degraded by Eq. (11) with parameters drawn per item from
    `ranges` (from `mild` for a `mild_fraction` of the items). Only the box and a `margin`
    around it are degraded (the blur's reach), so an item costs a fraction of a whole face
    while its pixels are those of the whole degraded face."""

    def __init__(
        self,
        faces: Sequence[np.ndarray],
        *,
        box: tuple[int, int, int, int],
        ranges: DegradationRanges,
        jitter: int = 0,
        margin: int = 0,
        mild: DegradationRanges | None = None,
        mild_fraction: float = 0.0,
        seed: int = 0,
    ) -> None:
        height, width = _face_shape(faces)
        x0, y0, x1, y1 = box
        if not (jitter <= x0 and x1 + jitter <= width and jitter <= y0 and y1 + jitter <= height):
            raise DrbfrError(f"box {box} (jitter {jitter}) must lie inside the {width} px faces")
        self.faces, self.box, self.jitter, self.margin, self.seed = faces, box, jitter, margin, seed
        self.ranges, self.mild = ranges, mild or ranges
        self.mild_fraction = mild_fraction if mild is not None else 0.0

    def __len__(self) -> int:
        return VIRTUAL_LENGTH

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index, torch.initial_seed() % 2**63, 2])
        face = self.faces[int(rng.integers(len(self.faces)))].astype(np.float32) / 255.0
        if rng.random() < 0.5:
            face = np.ascontiguousarray(face[:, ::-1])
        dx, dy = (int(v) for v in rng.integers(-self.jitter, self.jitter + 1, size=2))
        x0, y0, x1, y1 = self.box[0] + dx, self.box[1] + dy, self.box[2] + dx, self.box[3] + dy
        top, left = max(0, y0 - self.margin), max(0, x0 - self.margin)
        area = face[top : y1 + self.margin, left : x1 + self.margin]
        params = sample_mixed_params(rng, self.ranges, self.mild, self.mild_fraction)
        lq = degrade(area, params, rng)
        cut = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        return {
            "hq": _to_tensor(area[cut]),
            "lq": _to_tensor(lq[cut]),
            "params": torch.tensor(
                [params.sigma, params.r, params.delta, params.q], dtype=torch.float32
            ),
        }
