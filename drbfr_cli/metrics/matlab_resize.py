"""MATLAB-compatible `imresize(img, scale)` (bicubic, antialiased) for 2-D float arrays.

NIQE's second scale is MATLAB's `imresize(im, 0.5)`; OpenCV's resizers give a slightly different
result. This follows MATLAB's documented algorithm: Keys' cubic kernel (a = -0.5), widened by
1/scale when shrinking (antialiasing), weights normalised per output pixel, and symmetric
(mirror) indexing at the borders.
"""

from __future__ import annotations

import math

import numpy as np


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    inner = 1.5 * ax3 - 2.5 * ax2 + 1.0
    outer = -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    return np.where(ax <= 1, inner, np.where(ax <= 2, outer, 0.0))


def resize_matrix(in_length: int, scale: float) -> np.ndarray:
    """The (out_length x in_length) matrix that resizes one axis like MATLAB's imresize."""
    out_length = math.ceil(in_length * scale)
    antialias = scale < 1
    width = 4.0 / scale if antialias else 4.0
    centres = np.arange(1, out_length + 1) / scale + 0.5 * (1 - 1 / scale)  # 1-based positions
    left = np.floor(centres - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based input indices
    distance = centres[:, None] - indices
    weights = scale * cubic(scale * distance) if antialias else cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    mirrored = _mirror(indices.astype(np.int64) - 1, in_length)
    matrix = np.zeros((out_length, in_length))
    rows = np.repeat(np.arange(out_length)[:, None], taps, axis=1)
    np.add.at(matrix, (rows, mirrored), weights)
    return matrix


def _mirror(indices: np.ndarray, length: int) -> np.ndarray:
    """0-based indices folded back into [0, length) by symmetric reflection (edge repeated)."""
    period = 2 * length
    folded = np.mod(indices, period)
    return np.where(folded < length, folded, period - 1 - folded)


def imresize(image: np.ndarray, scale: float, *, dtype: type = np.float64) -> np.ndarray:
    """Resize a 2-D float array by `scale` on both axes (rows first), as MATLAB imresize does.

    The arithmetic (and the result) is in `dtype`.
    """
    if image.ndim != 2:
        raise ValueError("imresize expects a 2-D array")
    rows = resize_matrix(image.shape[0], scale).astype(dtype)
    cols = resize_matrix(image.shape[1], scale).astype(dtype)
    return (rows @ image.astype(dtype)) @ cols.T
