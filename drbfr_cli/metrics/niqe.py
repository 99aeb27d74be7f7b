"""NIQE, the Natural Image Quality Evaluator (no-reference; lower is better).

Mittal, Soundararajan, Bovik, "Making a 'Completely Blind' Image Quality Analyzer", IEEE Signal
Processing Letters 20(3), 2013, with the pristine model of their 2012 software release
(`niqe_pristine.json`, see its "source"). The steps and equation numbers follow the paper:

1. MSCN coefficients (Eq. 1): (I - mu) / (sigma + 1), with mu and sigma from a 7x7 Gaussian
   window (sigma 7/6), replicate borders.
2. Per 96x96 block (Sec. III-B/C): an asymmetric generalised Gaussian (AGGD, Eq. 7) fitted by
   moment matching to the MSCN values, and to the products of horizontally, vertically and
   diagonally adjacent values (with the mean of Eq. 8): 18 features.
3. The same at half resolution (MATLAB bicubic, antialiased): 36 features per block.
4. A multivariate Gaussian fitted to the blocks' features; the quality is the distance of Eq. 10
   between it and the pristine model.

Blocks do not overlap and all blocks are used, as in the release's `computequality`. Pixels are
processed in float32, as in the peer implementations (basicsr, pyiqa) whose scores match the
MATLAB release: the AGGD shape is a grid search, so float64 arithmetic shifts scores by a few
hundredths. RGB input is reduced to BT.601 luma rounded to integers, as MATLAB's `rgb2ycbcr` of a
uint8 image gives it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from scipy.ndimage import correlate
from scipy.special import gamma

from drbfr_cli.errors import DrbfrError
from drbfr_cli.metrics.color import rgb_to_y
from drbfr_cli.metrics.matlab_resize import imresize

PRISTINE_FILE = Path(__file__).with_name("niqe_pristine.json")
BLOCK_SIZE = 96
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # horizontal, vertical, main and anti-diagonal
_DTYPE = np.float32  # pixel arithmetic precision (see the module docstring)
_ALPHA_GRID = np.arange(0.2, 10.001, 0.001)  # the release's search grid for the AGGD shape


@dataclass(frozen=True)
class PristineModel:
    """The pristine multivariate Gaussian: mean (36,) and covariance (36, 36)."""

    mean: np.ndarray
    cov: np.ndarray


@cache
def pristine_model() -> PristineModel:
    """The published pristine model shipped with drbfr."""
    data = json.loads(PRISTINE_FILE.read_text())
    return PristineModel(
        mean=np.asarray(data["mu_prisparam"], dtype=np.float64),
        cov=np.asarray(data["cov_prisparam"], dtype=np.float64),
    )


@cache
def gaussian_window(size: int = 7, sigma: float = 7.0 / 6.0) -> np.ndarray:
    """Normalised 2-D Gaussian window (MATLAB fspecial('gaussian', size, sigma))."""
    half = (size - 1) / 2
    axis = np.arange(size) - half
    window = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * sigma**2))
    return window / window.sum()


@cache
def _aggd_ratio_table() -> np.ndarray:
    """r(alpha) = Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) on the alpha search grid."""
    a = _ALPHA_GRID
    return gamma(2 / a) ** 2 / (gamma(1 / a) * gamma(3 / a))


def mscn(image: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (Eq. 1) of a 2-D array in [0, 255].

    Computed in the dtype of `image` (float32 in `niqe`).
    """
    window = gaussian_window()
    mu = correlate(image, window, mode="nearest")
    var = correlate(image * image, window, mode="nearest") - mu * mu
    return (image - mu) / (np.sqrt(np.abs(var)) + 1.0)


def fit_aggd(values: np.ndarray) -> tuple[float, float, float]:
    """Moment-matching AGGD fit (Eq. 7): (shape alpha, left scale beta_l, right scale beta_r)."""
    x = values.ravel()
    left = np.sqrt(np.mean(x[x < 0] ** 2))
    right = np.sqrt(np.mean(x[x > 0] ** 2))
    gamma_hat = left / right
    r_hat = np.mean(np.abs(x)) ** 2 / np.mean(x * x)
    r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    alpha = float(_ALPHA_GRID[np.argmin((_aggd_ratio_table() - r_norm) ** 2)])
    factor = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, float(left * factor), float(right * factor)


def block_features(block: np.ndarray) -> list[float]:
    """The 18 features of one block of MSCN coefficients (Sec. III-B)."""
    alpha, beta_l, beta_r = fit_aggd(block)
    features = [alpha, (beta_l + beta_r) / 2]
    for shift in _SHIFTS:
        products = block * np.roll(block, shift, axis=(0, 1))
        alpha, beta_l, beta_r = fit_aggd(products)
        mean = (beta_r - beta_l) * gamma(2 / alpha) / gamma(1 / alpha)  # Eq. 8
        features += [alpha, mean, beta_l, beta_r]
    return features


def _scale_features(image: np.ndarray, block: int, rows: int, cols: int) -> np.ndarray:
    """(rows*cols, 18) features of the non-overlapping `block`-sized blocks of `image`."""
    coefficients = mscn(image)
    return np.array(
        [
            block_features(coefficients[r * block : (r + 1) * block, c * block : (c + 1) * block])
            for c in range(cols)
            for r in range(rows)
        ]
    )


def niqe_features(gray: np.ndarray, block_size: int = BLOCK_SIZE) -> np.ndarray:
    """(blocks, 36) NIQE features of a 2-D float image in [0, 255] (cropped to whole blocks)."""
    rows, cols = gray.shape[0] // block_size, gray.shape[1] // block_size
    if rows == 0 or cols == 0:
        raise DrbfrError(
            f"NIQE needs at least {block_size}x{block_size} pixels, got "
            f"{gray.shape[1]}x{gray.shape[0]}"
        )
    image = gray[: rows * block_size, : cols * block_size].astype(_DTYPE)
    fine = _scale_features(image, block_size, rows, cols)
    half = imresize(image / _DTYPE(255.0), 0.5, dtype=_DTYPE) * _DTYPE(255.0)
    coarse = _scale_features(half, block_size // 2, rows, cols)
    return np.concatenate([fine, coarse], axis=1)


def niqe(gray: np.ndarray, model: PristineModel | None = None) -> float:
    """NIQE of a 2-D float image (gray or luma) in [0, 255]; lower is more natural (Eq. 10).

    The image is cropped to whole 96x96 blocks from the top-left; it must hold at least one.
    """
    model = model or pristine_model()
    features = niqe_features(gray)
    mean = np.nanmean(features, axis=0)
    complete = features[~np.isnan(features).any(axis=1)]
    cov = np.cov(complete, rowvar=False)
    diff = model.mean - mean
    return float(np.sqrt(diff @ np.linalg.pinv((model.cov + cov) / 2) @ diff))


def niqe_rgb(rgb: np.ndarray, crop_border: int = 0) -> float:
    """NIQE of float RGB HxWx3 in [0, 1] on its BT.601 luma in [16, 235], rounded to integers
    (MATLAB's rgb2ycbcr on uint8; basicsr does the same).

    `crop_border` pixels are dropped on every edge before the block grid is laid.
    """
    luma = np.round(rgb_to_y(rgb) * 255.0)
    if crop_border:
        luma = luma[crop_border:-crop_border, crop_border:-crop_border]
    return niqe(luma)
