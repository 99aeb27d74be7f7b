"""FID (Heusel et al. 2017): Frechet distance between Gaussians fitted to image features.

The math takes any `FeatureExtractor` (a batch of float32 RGB NCHW images in [0, 1] -> N x D
features). The standard one is torch-fidelity's InceptionV3 pool3 (2048-D) as torchmetrics wraps
it, read from the local weight file `fid-inception` of the registry (never downloaded).
Reference statistics are stored as .npz with `mu` (D,) and `sigma` (D, D), the convention of
pytorch-fid and torch-fidelity, plus `count`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from scipy import linalg

from drbfr_cli import weights
from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import write_bytes_atomic

FID_FEATURES = 2048


class FeatureExtractor(Protocol):
    """Float32 RGB NCHW images in [0, 1] -> N x D float features."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class FeatureStats:
    """Mean (D,) and covariance (D, D) of a feature set, and how many images made them."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int


def stats_from_features(features: np.ndarray) -> FeatureStats:
    """Fit the Gaussian (sample mean, unbiased covariance) to N x D features; N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise DrbfrError("FID needs features of at least 2 images")
    return FeatureStats(features.mean(axis=0), np.cov(features, rowvar=False), features.shape[0])


def frechet_distance(a: FeatureStats, b: FeatureStats, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    When the product is singular (fewer images than dimensions) eps * I is added to both
    covariances, as pytorch-fid does.
    """
    if a.mu.shape != b.mu.shape:
        raise DrbfrError(f"FID statistics of different widths: {a.mu.shape} vs {b.mu.shape}")
    diff = a.mu - b.mu
    covmean = linalg.sqrtm(a.sigma @ b.sigma)
    if not np.isfinite(covmean).all():
        offset = np.eye(a.sigma.shape[0]) * eps
        covmean = linalg.sqrtm((a.sigma + offset) @ (b.sigma + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean))


def extract_features(
    extractor: FeatureExtractor, images: Iterable[np.ndarray], device: torch.device
) -> np.ndarray:
    """Features (N x D) of float32 RGB HxWx3 images in [0, 1], one image at a time."""
    rows = []
    with torch.inference_mode():
        for image in images:
            batch = torch.from_numpy(image.transpose(2, 0, 1).copy())[None].to(device)
            rows.append(extractor(batch).double().cpu().numpy().reshape(1, -1))
    if not rows:
        raise DrbfrError("no images to compute FID features from")
    return np.concatenate(rows)


def save_stats(stats: FeatureStats, path: Path) -> None:
    """Write `mu`, `sigma`, `count` to an .npz file (atomically)."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, mu=stats.mu, sigma=stats.sigma, count=np.int64(stats.count))
    write_bytes_atomic(Path(path), buffer.getvalue())


def load_stats(path: Path) -> FeatureStats:
    """Read an .npz with `mu` and `sigma` (pytorch-fid / torch-fidelity layout)."""
    try:
        with np.load(path) as data:
            mu, sigma = data["mu"], data["sigma"]
            count = int(data["count"]) if "count" in data else 0
    except FileNotFoundError:
        raise DrbfrError(f"{path}: FID statistics file not found") from None
    except (OSError, ValueError, KeyError) as exc:
        raise DrbfrError(f"{path}: not FID statistics (.npz with mu and sigma): {exc}") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise DrbfrError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit together")
    return FeatureStats(mu.astype(np.float64), sigma.astype(np.float64), count)


class InceptionExtractor:
    """torch-fidelity InceptionV3 pool3 features (2048-D) from the local weight file."""

    def __init__(self, *, weights_dir: Path | None, device: torch.device) -> None:
        from torchmetrics.image.fid import NoTrainInceptionV3

        path = weights.require("fid-inception", weights_dir)
        try:
            torch.load(path, map_location="cpu", weights_only=True)  # refuse pickled code
            net = NoTrainInceptionV3(
                name="inception-v3-compat",
                features_list=[str(FID_FEATURES)],
                feature_extractor_weights_path=str(path),
            )
        except Exception as exc:
            raise DrbfrError(f"{path}: not a usable Inception weight file ({exc})") from None
        self._net = net.eval().to(device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> uint8 (the network's input) -> N x 2048 pool3 features."""
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        return self._net(pixels).reshape(images.shape[0], -1)
