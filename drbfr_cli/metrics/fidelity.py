"""Full-reference fidelity metrics, PSNR and SSIM (torchmetrics), as BFR papers report them.

Inputs are float32 RGB HxWx3 arrays in [0, 1]. By default both metrics see all three RGB
channels; `y_channel` switches to the luma of ITU-R BT.601 YCbCr (the "Y channel" of basicsr and
MATLAB's rgb2ycbcr), and `crop_border` drops that many pixels on every edge first (the usual
protocol for super-resolution scales).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from drbfr_cli.errors import DrbfrError
from drbfr_cli.metrics.color import rgb_to_y

_SSIM_WINDOW = 11  # Gaussian window side for sigma 1.5 (Wang et al. 2004)


@dataclass(frozen=True)
class FidelityConfig:
    """How PSNR/SSIM see the images: RGB or Y channel, and the border cropped on every edge."""

    y_channel: bool = False
    crop_border: int = 0

    def describe(self) -> str:
        """A short human-readable statement of the protocol, for reports."""
        space = "Y channel (BT.601)" if self.y_channel else "RGB"
        return f"{space}, range [0, 1], crop {self.crop_border} px"


def prepare(rgb: np.ndarray, config: FidelityConfig) -> np.ndarray:
    """Apply the Y conversion and border crop of `config`: HxWx3 (or HxW for Y) float64."""
    image = rgb_to_y(rgb) if config.y_channel else rgb.astype(np.float64)
    border = config.crop_border
    if border:
        if 2 * border >= min(image.shape[:2]):
            raise DrbfrError(
                f"--crop-border {border} leaves nothing of a {image.shape[1]}x"
                f"{image.shape[0]} image"
            )
        image = image[border:-border, border:-border]
    return image


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxW or HxWxC float64 -> 1xCxHxW float64 tensor."""
    array = image[:, :, None] if image.ndim == 2 else image
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def _check_pair(restored: np.ndarray, reference: np.ndarray) -> None:
    if restored.shape != reference.shape:
        raise DrbfrError(
            f"size mismatch: restored {restored.shape[1]}x{restored.shape[0]}, "
            f"reference {reference.shape[1]}x{reference.shape[0]}"
        )


def psnr(restored: np.ndarray, reference: np.ndarray, config: FidelityConfig) -> float:
    """PSNR in dB of `restored` against `reference` (RGB HxWx3 in [0, 1], data range 1).

    The MSE is taken over every pixel and channel left after `config` (Y/RGB, crop); identical
    images give +inf.
    """
    _check_pair(restored, reference)
    a, b = _to_tensor(prepare(restored, config)), _to_tensor(prepare(reference, config))
    return float(peak_signal_noise_ratio(a, b, data_range=1.0))


def ssim(restored: np.ndarray, reference: np.ndarray, config: FidelityConfig) -> float:
    """SSIM (Wang et al. 2004) of RGB HxWx3 in [0, 1], data range 1, after `config`.

    Gaussian window 11x11, sigma 1.5, K1=0.01, K2=0.03; the map is averaged over the valid
    interior (5 px from each edge) and over channels.
    """
    _check_pair(restored, reference)
    a, b = _to_tensor(prepare(restored, config)), _to_tensor(prepare(reference, config))
    _, ssim_map = structural_similarity_index_measure(
        a,
        b,
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=11,
        data_range=1.0,
        return_full_image=True,
    )
    margin = _SSIM_WINDOW // 2
    return float(ssim_map[..., margin:-margin, margin:-margin].mean())
