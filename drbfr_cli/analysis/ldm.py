"""Does a bundle restore faces it never saw? PSNR/SSIM against the HQ face of:

- the LQ input itself (Eq. 11 degradation of the HQ face, at the bundle's face size);
- the VAE round trip of the LQ face (decode(encode(y))): the codec alone, no diffusion;
- the bundle's restoration under each sampling variant (e.g. from pure noise, truncated).

A restoration that beats both shows a gain that comes from the diffusion model, not the codec.
Faces are float32 RGB HxWx3 in [0, 1]; every pair has its own Eq. (11) parameters and seed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from drbfr_cli.bundle import Bundle
from drbfr_cli.degradations import DegradationParams, DegradationRanges, degrade, sample_params
from drbfr_cli.diffusion.sampling import SamplingConfig
from drbfr_cli.imaging import faces_to_tensor, tensor_to_faces
from drbfr_cli.metrics.fidelity import FidelityConfig, psnr, ssim


@dataclass(frozen=True)
class DegradedPair:
    face: int
    """Index of the HQ face."""
    hq: np.ndarray
    lq: np.ndarray
    params: DegradationParams


@dataclass(frozen=True)
class MethodScores:
    psnr: float
    ssim: float
    psnr_per_pair: tuple[float, ...]


def degraded_pairs(
    faces: list[np.ndarray], ranges: DegradationRanges, per_face: int, seed: int
) -> list[DegradedPair]:
    """`per_face` Eq. (11) degradations of every face, from one seeded generator."""
    rng = np.random.default_rng(seed)
    pairs = []
    for index, face in enumerate(faces):
        for _ in range(per_face):
            params = sample_params(rng, ranges)
            pairs.append(DegradedPair(index, face, degrade(face, params, rng), params))
    return pairs


def _batch(images: list[np.ndarray]) -> torch.Tensor:
    """float RGB HxWx3 in [0, 1] -> N x 3 x H x W in [-1, 1]."""
    return faces_to_tensor(images) * 2.0 - 1.0


def _images(batch: torch.Tensor) -> list[np.ndarray]:
    """N x 3 x H x W in [-1, 1] -> float RGB HxWx3 in [0, 1]."""
    return tensor_to_faces((batch.float() + 1.0) / 2.0)


@torch.no_grad()
def vae_round_trip(bundle: Bundle, lq: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    first = bundle.parts.first_stage
    out: list[np.ndarray] = []
    for start in range(0, len(lq), batch_size):
        out += _images(first.decode(first.encode(_batch(lq[start : start + batch_size]))))
    return out


def restore_all(
    bundle: Bundle, lq: list[np.ndarray], sampling: SamplingConfig, batch_size: int
) -> list[np.ndarray]:
    """The bundle's restoration of every LQ face; pair i is seeded i."""
    out: list[np.ndarray] = []
    for start in range(0, len(lq), batch_size):
        seeds = list(range(start, min(start + batch_size, len(lq))))
        out += _images(bundle.restore(_batch(lq[start : start + batch_size]), seeds, sampling))
    return out


def score(images: list[np.ndarray], pairs: list[DegradedPair]) -> MethodScores:
    metric = FidelityConfig()
    psnrs = [psnr(image, pair.hq, metric) for image, pair in zip(images, pairs, strict=True)]
    ssims = [ssim(image, pair.hq, metric) for image, pair in zip(images, pairs, strict=True)]
    finite = [p for p in psnrs if math.isfinite(p)]
    return MethodScores(float(np.mean(finite)), float(np.mean(ssims)), tuple(psnrs))


@dataclass(frozen=True)
class RestorationAnalysis:
    scores: dict[str, MethodScores]
    """'lq', 'vae_round_trip' and one entry per sampling variant."""
    variants: dict[str, SamplingConfig]
    pairs: list[DegradedPair]
    grid: np.ndarray
    """Rows: HQ, LQ, VAE round trip, then each variant; up to 8 pairs (one per face first)."""

    def summary(self) -> dict:
        return {
            "pairs": len(self.pairs),
            "faces": len({p.face for p in self.pairs}),
            "scores": {k: asdict(v) for k, v in self.scores.items()},
            "variants": {k: asdict(v) for k, v in self.variants.items()},
            "params": [p.params.as_dict() for p in self.pairs],
        }


def analyse_restoration(
    bundle: Bundle,
    pairs: list[DegradedPair],
    variants: dict[str, SamplingConfig],
    batch_size: int = 16,
) -> RestorationAnalysis:
    lq = [pair.lq for pair in pairs]
    outputs = {"lq": lq, "vae_round_trip": vae_round_trip(bundle, lq, batch_size)}
    for name, sampling in variants.items():
        outputs[name] = restore_all(bundle, lq, sampling, batch_size)
    scores = {name: score(images, pairs) for name, images in outputs.items()}
    shown = _grid_pairs(pairs)
    rows = [[pairs[i].hq for i in shown]] + [[outputs[name][i] for i in shown] for name in outputs]
    grid = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
    return RestorationAnalysis(scores, variants, pairs, grid)


def _grid_pairs(pairs: list[DegradedPair], limit: int = 8) -> list[int]:
    """Indices of up to `limit` pairs, the first pair of every face first."""
    first = {}
    for i, pair in enumerate(pairs):
        first.setdefault(pair.face, i)
    rest = [i for i in range(len(pairs)) if i not in first.values()]
    return (list(first.values()) + rest)[:limit]
