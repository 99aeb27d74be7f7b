"""Tensors: networks see float32 RGB NCHW in [-1, 1]; restorers take batches of face crops in
[0, 1] (`drbfr_cli.restore.restorer`). Images are float32 RGB HxWx3 in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """float32 RGB HxWx3 in [0, 1] -> float32 tensor 1x3xHxW in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None] * 2.0 - 1.0


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """Tensor 1x3xHxW or 3xHxW in [-1, 1] -> float32 RGB HxWx3 in [0, 1] (clipped)."""
    image = tensor.detach().float().cpu()
    image = image[0] if image.ndim == 4 else image
    return ((image.clamp(-1.0, 1.0) + 1.0) / 2.0).permute(1, 2, 0).numpy()


def faces_to_tensor(faces: Sequence[np.ndarray]) -> torch.Tensor:
    """Equal-sized float32 RGB SxSx3 faces in [0, 1] -> float32 tensor Nx3xSxS in [0, 1]."""
    import torch

    stacked = np.stack([np.asarray(face, dtype=np.float32) for face in faces])
    return torch.from_numpy(np.ascontiguousarray(stacked.transpose(0, 3, 1, 2)))


def tensor_to_faces(tensor: torch.Tensor) -> list[np.ndarray]:
    """Tensor Nx3xSxS in [0, 1] -> N float32 RGB SxSx3 faces in [0, 1] (clipped)."""
    values = tensor.detach().float().cpu().clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()
    return [np.ascontiguousarray(face) for face in values]
