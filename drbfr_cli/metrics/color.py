"""Colour conversions used by the metrics (no torch import, so NIQE stays light)."""

from __future__ import annotations

import numpy as np

# ITU-R BT.601 luma for RGB in [0, 1] giving Y in [16, 235] / 255 (MATLAB rgb2ycbcr).
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)
_Y_OFFSET = 16.0


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """float RGB HxWx3 in [0, 1] -> float64 HxW luma in [16/255, 235/255] (BT.601, MATLAB)."""
    return (rgb.astype(np.float64) @ _Y_WEIGHTS + _Y_OFFSET) / 255.0
