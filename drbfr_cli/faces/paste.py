"""Paste-back: restored crops through their inverse affines onto the upscaled background.

Each face is blended with a soft mask built in crop space (so the feather scales with the face):
the crop's full square with its border faded out, or, when ParseNet weights are present, the
parsed face region. Only the bounding box of each warped crop is touched; pixels outside it are
returned exactly as the background had them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from drbfr_cli import weights
from drbfr_cli.errors import load_strict

if TYPE_CHECKING:
    import torch

EDGE_FRACTION = 0.03
"""Width of the faded border of the square mask, as a fraction of the crop side."""
FEATHER_FRACTION = 0.02
"""Gaussian sigma of the feather, as a fraction of the crop side."""
PARSE_SIZE = 512
"""ParseNet's input and output side."""
FACE_LABELS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15)
"""ParseNet (CelebAMask-HQ) labels pasted: skin, nose, glasses, eyes, brows, ears, mouth, lips,
hair, earring; not background (0), hat (14), necklace (16), neck (17), cloth (18). This is the
selection facexlib's paste-back makes (its MASK_COLORMAP)."""
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 luma weights, for grayscale output."""


@dataclass(frozen=True, eq=False)
class PasteFace:
    """One restored face and where it goes."""

    restored: np.ndarray
    """float32 RGB r x r x 3 in [0, 1] (r may differ from crop_size)."""
    affine: np.ndarray
    """2x3: input-image pixels -> aligned-crop pixels (as returned by align.estimate_affine)."""
    crop_size: int
    """Side of the aligned crop `affine` maps into."""
    reference: np.ndarray | None = None
    """The aligned input crop (crop_size x crop_size x 3): the colour target of color_fix."""
    gray: bool = False
    """Paste the face gray (BT.601 luma), after any colour fix: its input region is gray."""


def paste_faces(
    background: np.ndarray,
    faces: Sequence[PasteFace],
    *,
    scale: float,
    color_fix: bool = False,
    grayscale: bool = False,
    parser: FaceParser | None = None,
) -> np.ndarray:
    """Blend every restored face into a copy of `background` (float32 RGB HxWx3 in [0, 1]).

    `scale`: background pixels per input-image pixel (the upscale factor). `color_fix` matches
    each face's Lab mean/std to its `reference`. `grayscale`: the result is made gray (BT.601
    luma in all three channels), so a gray input never comes back coloured; a face marked
    `gray` is pasted gray in a colour result.
    """
    output = np.array(background, dtype=np.float32, copy=True)
    bg_from_input = _bg_from_input(scale)
    for face in faces:
        restored = face.restored
        if color_fix:
            if face.reference is None:
                raise ValueError("color_fix needs each PasteFace's reference crop")
            restored = match_color(restored, face.reference)
        if face.gray:
            restored = to_grayscale(restored)
        mask = parser(restored) * square_mask(restored.shape[0]) if parser else None
        _paste_one(output, restored, mask, _restored_from_bg(face, bg_from_input))
    return to_grayscale(output) if grayscale else output


def _paste_one(
    output: np.ndarray, restored: np.ndarray, mask: np.ndarray | None, matrix: np.ndarray
) -> None:
    """Blend `restored` into `output` in place; `matrix` (3x3) maps output -> restored pixels."""
    side = restored.shape[0]
    if mask is None:
        mask = square_mask(side)
    roi = _bounding_box(np.linalg.inv(matrix), side, output.shape[:2])
    if roi is None:
        return
    x0, y0, x1, y1 = roi
    shifted = (matrix @ _translation(x0, y0))[:2]
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(restored, shifted, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, shifted, size, flags=flags, borderValue=0.0)[:, :, None]
    region = output[y0:y1, x0:x1]
    region += alpha * (np.clip(warped, 0.0, 1.0) - region)


# --------------------------------------------------------------------------- geometry


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _homogeneous(affine: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(affine, dtype=np.float64), [0.0, 0.0, 1.0]])


def _resample(factor: float) -> np.ndarray:
    """Pixel-centre-preserving scaling: pixel p of an image maps to (p + 0.5) * factor - 0.5."""
    shift = 0.5 * (factor - 1.0)
    return np.array([[factor, 0.0, shift], [0.0, factor, shift], [0.0, 0.0, 1.0]])


def _bg_from_input(scale: float) -> np.ndarray:
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return _resample(scale)


def _restored_from_bg(face: PasteFace, bg_from_input: np.ndarray) -> np.ndarray:
    """3x3: background pixels -> restored-face pixels."""
    restored_from_crop = _resample(face.restored.shape[0] / face.crop_size)
    crop_from_input = _homogeneous(face.affine)
    return restored_from_crop @ crop_from_input @ np.linalg.inv(bg_from_input)


def _bounding_box(
    bg_from_restored: np.ndarray, side: int, shape: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """Integer box (x0, y0, x1, y1) of the background covered by the restored square."""
    lo, hi = -0.5, side - 0.5
    corners = np.array([[lo, lo, 1.0], [hi, lo, 1.0], [lo, hi, 1.0], [hi, hi, 1.0]])
    mapped = corners @ bg_from_restored.T
    height, width = shape
    x0 = max(int(np.floor(mapped[:, 0].min())), 0)
    y0 = max(int(np.floor(mapped[:, 1].min())), 0)
    x1 = min(int(np.ceil(mapped[:, 0].max())) + 1, width)
    y1 = min(int(np.ceil(mapped[:, 1].max())) + 1, height)
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


# --------------------------------------------------------------------------- masks


@cache
def square_mask(side: int) -> np.ndarray:
    """The feathered square mask for a side x side crop: 1 inside, fading to 0 at the border.

    The border band (EDGE_FRACTION of the side) is cleared, then blurred with a Gaussian of
    sigma FEATHER_FRACTION * side, so the feather is the same on every face size. Read-only.
    """
    mask = np.zeros((side, side), dtype=np.float32)
    edge = max(1, round(EDGE_FRACTION * side))
    sigma = max(0.5, FEATHER_FRACTION * side)
    inner = edge + int(np.ceil(2.0 * sigma))
    mask[inner : side - inner, inner : side - inner] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_CONSTANT)
    mask[:edge, :] = mask[-edge:, :] = mask[:, :edge] = mask[:, -edge:] = 0.0
    mask.setflags(write=False)
    return mask


# --------------------------------------------------------------------------- colour


def match_color(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`image` with its CIE Lab per-channel mean and std moved to those of `reference`.

    Both float32 RGB in [0, 1]; sizes may differ. (Reinhard et al., "Color Transfer between
    Images", 2001, in Lab instead of l-alpha-beta.)
    """
    lab = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_RGB2Lab)
    ref = cv2.cvtColor(np.ascontiguousarray(reference, dtype=np.float32), cv2.COLOR_RGB2Lab)
    mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)
    ref_mean, ref_std = ref.reshape(-1, 3).mean(0), ref.reshape(-1, 3).std(0)
    matched = (lab - mean) * (ref_std / np.maximum(std, 1e-6)) + ref_mean
    rgb = cv2.cvtColor(matched.astype(np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(rgb, 0.0, 1.0)


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of a float32 RGB image, repeated in three channels."""
    luma = image @ LUMA
    return np.repeat(luma[:, :, None], 3, axis=2).astype(np.float32)


# --------------------------------------------------------------------------- parsing


class FaceParser:
    """facexlib's ParseNet (weights loaded here): restored face -> soft face-region mask."""

    def __init__(
        self,
        *,
        state_dict: dict[str, torch.Tensor],
        device: torch.device | str,
        size: int = PARSE_SIZE,
    ) -> None:
        """`size`: the side faces are parsed at (the network is convolutional; the released
        weights were trained at 512, smaller sides trade accuracy for speed)."""
        import torch
        from facexlib.parsing.parsenet import ParseNet

        self.device = torch.device(device)
        self.size = size
        self.net = ParseNet(in_size=PARSE_SIZE, out_size=PARSE_SIZE, parsing_ch=19)
        what, error = "not a ParseNet checkpoint", weights.WeightsCorruptError
        load_strict(self.net, state_dict, what=what, where="parsenet", error=error)
        self.net.eval().to(self.device)

    def labels(self, face: np.ndarray) -> np.ndarray:
        """Per-pixel ParseNet labels (int64 size x size) of a float32 RGB face crop."""
        import torch

        resized = cv2.resize(face, (self.size, self.size), interpolation=cv2.INTER_AREA)
        tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))[None]
        with torch.inference_mode():
            logits = self.net(tensor.to(self.device) * 2.0 - 1.0)[0]
        return logits.argmax(dim=1)[0].cpu().numpy()

    def __call__(self, face: np.ndarray) -> np.ndarray:
        """A soft mask (float32, the face's size, in [0, 1]) of the parsed face region."""
        hard = np.isin(self.labels(face), FACE_LABELS).astype(np.float32)
        sigma = FEATHER_FRACTION * self.size
        soft = cv2.GaussianBlur(hard, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_CONSTANT)
        side = face.shape[0]
        return cv2.resize(soft, (side, side), interpolation=cv2.INTER_LINEAR)


def build_parser(weights_dir: Path | None, device: torch.device | str = "cpu") -> FaceParser | None:
    """A FaceParser when the ParseNet weights are present (sha256-checked), else None."""
    if weights.find("parsenet", weights_dir) is None:
        return None
    return FaceParser(state_dict=weights.load_verified("parsenet", weights_dir), device=device)
