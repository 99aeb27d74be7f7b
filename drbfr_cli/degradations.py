"""The synthetic degradation model of DR-BFR, Eq. (11):

    x = [(y * k_sigma) downsample_r + n_delta]_JPEG_q,   then resized back to the size of y,

with sigma in [0.1, 10], r in [0.8, 8], delta in [0, 20] (0-255 scale), q in [60, 100] (the
ranges of the paper, section 4; the same model as GFPGAN/DiffBFR's CelebA-Test).

One pure function per step on float32 RGB HxWx3 images in [0, 1], and a parameter sampler that
takes an explicit `np.random.Generator`. The only randomness besides the parameters is the
noise, drawn from the generator passed in, so (params, seed) rebuilds an image exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

Range = tuple[float, float]


@dataclass(frozen=True)
class DegradationRanges:
    """Sampling ranges of Eq. (11); each a closed interval (lo, hi)."""

    blur: Range = (0.1, 10.0)
    """Gaussian blur sigma, pixels."""
    scale: Range = (0.8, 8.0)
    """Downsampling factor r (r < 1 upsamples)."""
    noise: Range = (0.0, 20.0)
    """Gaussian noise standard deviation delta on the 0-255 scale."""
    jpeg: Range = (60.0, 100.0)
    """JPEG quality q (integers)."""

    def __post_init__(self) -> None:
        for field in fields(self):
            lo, hi = getattr(self, field.name)
            if lo > hi:
                raise ValueError(f"{field.name} range must have lo <= hi, got ({lo}, {hi})")
        if self.blur[0] < 0 or self.noise[0] < 0:
            raise ValueError("blur sigma and noise delta must be >= 0")
        if self.scale[0] <= 0:
            raise ValueError("scale r must be > 0")
        if not (self.jpeg[0] >= 1 and self.jpeg[1] <= 100):
            raise ValueError("JPEG quality must lie in [1, 100]")


@dataclass(frozen=True)
class DegradationParams:
    """One draw of Eq. (11)'s parameters."""

    sigma: float
    r: float
    delta: float
    q: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def sample_params(rng: np.random.Generator, ranges: DegradationRanges) -> DegradationParams:
    """Draw sigma, r, delta uniformly from their ranges and q uniformly from the integers."""
    return DegradationParams(
        sigma=float(rng.uniform(*ranges.blur)),
        r=float(rng.uniform(*ranges.scale)),
        delta=float(rng.uniform(*ranges.noise)),
        q=int(rng.integers(int(ranges.jpeg[0]), int(ranges.jpeg[1]), endpoint=True)),
    )


def sample_mixed_params(
    rng: np.random.Generator,
    ranges: DegradationRanges,
    mild: DegradationRanges,
    mild_fraction: float,
) -> DegradationParams:
    """Draw from `mild` with probability `mild_fraction`, else from `ranges`. With a fraction
    of 0 no extra number is drawn, so the stream equals `sample_params(rng, ranges)`."""
    if mild_fraction > 0 and rng.random() < mild_fraction:
        return sample_params(rng, mild)
    return sample_params(rng, ranges)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """y * k_sigma: isotropic Gaussian kernel of radius ceil(3 sigma), reflected borders."""
    if sigma <= 0:
        return image
    radius = max(1, math.ceil(3.0 * sigma))
    size = 2 * radius + 1
    return cv2.GaussianBlur(
        image, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101
    )


def downsample(image: np.ndarray, r: float) -> np.ndarray:
    """(.) downsample_r: bilinear resize by 1/r (at least 1 pixel per side)."""
    height, width = image.shape[:2]
    size = (max(1, round(width / r)), max(1, round(height / r)))
    if size == (width, height):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def add_gaussian_noise(image: np.ndarray, delta: float, rng: np.random.Generator) -> np.ndarray:
    """+ n_delta: i.i.d. Gaussian noise with std delta/255, clipped to [0, 1]."""
    if delta <= 0:
        return image
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(delta / 255.0)
    return np.clip(image + noise, 0.0, 1.0)


def jpeg_compress(image: np.ndarray, q: int) -> np.ndarray:
    """[.]_JPEG_q: round to 8 bits, encode as baseline JPEG (4:2:0) at quality q, decode."""
    pixels = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(q)]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to (width, height): brings the LQ image back to the HQ size."""
    if image.shape[1] == size[0] and image.shape[0] == size[1]:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def degrade(image: np.ndarray, params: DegradationParams, rng: np.random.Generator) -> np.ndarray:
    """Eq. (11) on float32 RGB HxWx3 in [0, 1]; returns the LQ image at the input size."""
    height, width = image.shape[:2]
    lq = gaussian_blur(image.astype(np.float32, copy=False), params.sigma)
    lq = downsample(lq, params.r)
    lq = add_gaussian_noise(lq, params.delta, rng)
    lq = jpeg_compress(lq, params.q)
    return resize_to(lq, (width, height))
