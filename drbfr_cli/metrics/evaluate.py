"""Evaluate a folder of restored faces: pairing with ground truth, per-image metrics, FID.

Images are read through `imaging.read_image` (float32 RGB HxWx3 in [0, 1]). Restored and
ground-truth files pair by relative path without extension (`a/b.png` pairs with `a/b.jpg`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from drbfr_cli.choices import Metric
from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import DEFAULT_MAX_PIXELS, ImageSource, collect_images, read_image, to_uint8
from drbfr_cli.metrics import fid as fid_mod
from drbfr_cli.metrics import identity
from drbfr_cli.metrics import lpips as lpips_mod
from drbfr_cli.metrics.fidelity import FidelityConfig, psnr, ssim
from drbfr_cli.metrics.niqe import niqe_rgb
from drbfr_cli.weights import WeightsMissingError

PAIRED_METRICS = frozenset({Metric.PSNR, Metric.SSIM, Metric.LPIPS})
REFERENCE_METRICS = frozenset({Metric.IDS})
"""Metrics against the ground truth, or against the LQ input where there is none."""
HIGHER_IS_BETTER = frozenset({Metric.PSNR, Metric.SSIM})


@dataclass(frozen=True)
class EvalConfig:
    """What to compute and how."""

    metrics: tuple[Metric, ...]
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)
    lpips_net: lpips_mod.LpipsNet = lpips_mod.LpipsNet.VGG
    lpips_backbone: lpips_mod.Backbone | None = None
    """A user-named LPIPS backbone file (None: the registry's)."""
    fid_stats: Path | None = None
    weights_dir: Path | None = None
    device: str = "cpu"
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Pair:
    """A restored image and its ground truth (None in no-reference mode), and its LQ input
    (only looked up for identity without ground truth)."""

    restored: ImageSource
    gt: ImageSource | None
    lq: ImageSource | None = None

    @property
    def name(self) -> str:
        return self.restored.relative.as_posix()


@dataclass(frozen=True)
class Pairing:
    """Pairs, plus the files of either side that found no partner (relative paths)."""

    pairs: list[Pair]
    unmatched_restored: list[str]
    unmatched_gt: list[str]


@dataclass(frozen=True)
class ImageResult:
    """Per-image metric values, or the one-line reason the image failed."""

    name: str
    values: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class EvalResult:
    """Everything a report needs."""

    images: list[ImageResult]
    means: dict[str, float]
    fid: float | None
    skipped: dict[str, str]
    pairing: Pairing
    protocol: dict[str, str]
    unscored: dict[str, list[str]] = field(default_factory=dict)
    """Per metric, the images it could not score (faces identity could not embed)."""


def pair_folders(restored: Path, gt: Path | None) -> Pairing:
    """Match files of `restored` and `gt` by relative path without extension."""
    found = collect_images([restored])
    if not found:
        raise DrbfrError(f"{restored}: no images found")
    if gt is None:
        return Pairing([Pair(s, None) for s in found], [], [])
    truth = {s.relative.with_suffix(""): s for s in collect_images([gt])}
    pairs = [
        Pair(s, truth[s.relative.with_suffix("")])
        for s in found
        if s.relative.with_suffix("") in truth
    ]
    used = {p.restored.relative.with_suffix("") for p in pairs}
    if not pairs:
        raise DrbfrError(f"no file of {restored} has a ground truth of the same name in {gt}")
    return Pairing(
        pairs,
        [s.relative.as_posix() for s in found if s.relative.with_suffix("") not in used],
        [s.relative.as_posix() for k, s in truth.items() if k not in used],
    )


def with_lq(pairing: Pairing, lq: Path) -> Pairing:
    """The pairs with their LQ inputs (same relative path without extension) where found."""
    inputs = {s.relative.with_suffix(""): s for s in collect_images([lq])}
    pairs = [
        Pair(p.restored, p.gt, inputs.get(p.restored.relative.with_suffix("")))
        for p in pairing.pairs
    ]
    return Pairing(pairs, pairing.unmatched_restored, pairing.unmatched_gt)


def check_metrics(metrics: tuple[Metric, ...], paired: bool, has_lq: bool = False) -> None:
    """Paired metrics need ground truth, identity needs ground truth or LQ inputs: a DrbfrError
    naming them otherwise."""
    needing = [m.value for m in metrics if m in PAIRED_METRICS]
    if needing and not paired:
        raise DrbfrError(f"{', '.join(needing)} need ground truth: give --gt DIR (or a --dataset)")
    referenced = [m.value for m in metrics if m in REFERENCE_METRICS]
    if referenced and not (paired or has_lq):
        raise DrbfrError(
            f"{', '.join(referenced)} compare with a reference: give --gt DIR or --lq DIR"
        )


def describe_protocol(config: EvalConfig, paired: bool = True) -> dict[str, str]:
    """One line per metric saying range, colour space, crop and network."""
    reference = "ground truth" if paired else "LQ input"
    text = {
        Metric.PSNR: f"dB, {config.fidelity.describe()}",
        Metric.SSIM: f"Gaussian 11x11 sigma 1.5, {config.fidelity.describe()}",
        Metric.LPIPS: lpips_mod.describe(config.lpips_net, config.lpips_backbone),
        Metric.IDS: f"{identity.DESCRIPTION}; restored vs {reference}",
        Metric.NIQE: f"BT.601 luma [0, 255], 96 px blocks, crop {config.fidelity.crop_border} px",
        Metric.FID: "InceptionV3 pool3 (torch-fidelity), "
        + (f"reference statistics {config.fid_stats}" if config.fid_stats else "vs ground truth"),
    }
    return {m.value: text[m] for m in config.metrics}


@dataclass
class _Models:
    lpips: torch.nn.Module | None
    extractor: fid_mod.FeatureExtractor | None
    skipped: dict[str, str]
    embedder: identity.FaceEmbedder | None = None


def _load_models(
    config: EvalConfig, paired: bool, extractor: fid_mod.FeatureExtractor | None
) -> _Models:
    device = torch.device(config.device)
    models = _Models(None, extractor, {})
    if Metric.LPIPS in config.metrics:
        try:
            backbone = config.lpips_backbone.path if config.lpips_backbone else None
            models.lpips = lpips_mod.load_lpips(
                config.lpips_net, config.weights_dir, device, backbone=backbone
            )
        except WeightsMissingError as exc:
            models.skipped[Metric.LPIPS.value] = str(exc)
    if Metric.IDS in config.metrics:
        try:
            models.embedder = identity.load_embedder()
        except identity.IdentityUnavailableError as exc:
            models.skipped[Metric.IDS.value] = str(exc)
    if Metric.FID in config.metrics:
        if config.fid_stats is None and not paired:
            models.skipped[Metric.FID.value] = "no reference: give --fid-stats FILE or --gt DIR"
        elif extractor is None:
            try:
                models.extractor = fid_mod.InceptionExtractor(
                    weights_dir=config.weights_dir, device=device
                )
            except WeightsMissingError as exc:
                models.skipped[Metric.FID.value] = str(exc)
    return models


def _image_values(
    pair: Pair, config: EvalConfig, models: _Models
) -> tuple[dict[str, float], np.ndarray, np.ndarray | None]:
    restored = read_image(pair.restored.path, max_pixels=config.max_pixels).rgb
    gt = read_image(pair.gt.path, max_pixels=config.max_pixels).rgb if pair.gt else None
    values: dict[str, float] = {}
    for metric in config.metrics:
        if metric is Metric.PSNR and gt is not None:
            values[metric.value] = psnr(restored, gt, config.fidelity)
        elif metric is Metric.SSIM and gt is not None:
            values[metric.value] = ssim(restored, gt, config.fidelity)
        elif metric is Metric.LPIPS and gt is not None and models.lpips is not None:
            values[metric.value] = lpips_mod.lpips_distance(models.lpips, restored, gt)
        elif metric is Metric.NIQE:
            values[metric.value] = niqe_rgb(restored, config.fidelity.crop_border)
        elif metric is Metric.IDS and models.embedder is not None:
            distance = _identity(models.embedder, restored, gt, pair.lq, config.max_pixels)
            if distance is not None:
                values[metric.value] = distance
    return values, restored, gt


def _identity(
    embedder: identity.FaceEmbedder,
    restored: np.ndarray,
    gt: np.ndarray | None,
    lq: ImageSource | None,
    max_pixels: int,
) -> float | None:
    """Identity distance to the ground truth, else to the LQ input; None when a face could not
    be embedded (counted by the caller) or there is no reference."""
    reference = gt
    if reference is None and lq is not None:
        reference = read_image(lq.path, max_pixels=max_pixels).rgb
    if reference is None:
        return None
    return identity.embedding_distance(embedder(to_uint8(restored)), embedder(to_uint8(reference)))


def evaluate(
    restored: Path,
    gt: Path | None,
    config: EvalConfig,
    *,
    extractor: fid_mod.FeatureExtractor | None = None,
    on_image: Callable[[ImageResult], None] | None = None,
    lq: Path | None = None,
) -> EvalResult:
    """Compute `config.metrics` over `restored` (paired with `gt` when given; identity compares
    with the LQ inputs in `lq` when there is no ground truth).

    Metrics whose weights are missing are skipped (reason in `skipped`); a file that cannot be
    read or compared fails alone (its `error`), the others go on; an image a metric could not
    score (identity: a face not embedded) is listed in `unscored`.
    """
    check_metrics(config.metrics, gt is not None, lq is not None)
    pairing = pair_folders(restored, gt)
    if Metric.IDS in config.metrics and gt is None and lq is not None:
        pairing = with_lq(pairing, lq)
    models = _load_models(config, gt is not None, extractor)
    want_fid = Metric.FID in config.metrics and Metric.FID.value not in models.skipped
    reference_stats = (
        fid_mod.load_stats(config.fid_stats) if want_fid and config.fid_stats else None
    )
    feats_restored, feats_gt, results = [], [], []
    for pair in pairing.pairs:
        try:
            values, image, truth = _image_values(pair, config, models)
            if want_fid:
                feats_restored.append(_features(models.extractor, image, config.device))
                if reference_stats is None and truth is not None:
                    feats_gt.append(_features(models.extractor, truth, config.device))
            result = ImageResult(pair.name, values)
        except DrbfrError as exc:
            result = ImageResult(pair.name, error=str(exc))
        results.append(result)
        if on_image:
            on_image(result)
    fid_value = _fid(feats_restored, feats_gt, reference_stats) if want_fid else None
    return EvalResult(
        images=results,
        means=_means(results, config.metrics),
        fid=fid_value,
        skipped=models.skipped,
        pairing=pairing,
        protocol=describe_protocol(config, gt is not None),
        unscored=_unscored(results, config.metrics, models.skipped),
    )


def _unscored(
    results: list[ImageResult], metrics: tuple[Metric, ...], skipped: dict[str, str]
) -> dict[str, list[str]]:
    """Images that were read but lack a value of a per-image reference metric that ran."""
    unscored = {}
    for metric in metrics:
        if metric in REFERENCE_METRICS and metric.value not in skipped:
            names = [r.name for r in results if not r.error and metric.value not in r.values]
            if names:
                unscored[metric.value] = names
    return unscored


def _features(extractor, image: np.ndarray, device: str) -> np.ndarray:
    return fid_mod.extract_features(extractor, [image], torch.device(device))


def _fid(
    restored: list[np.ndarray], gt: list[np.ndarray], reference: fid_mod.FeatureStats | None
) -> float:
    mine = fid_mod.stats_from_features(np.concatenate(restored))
    other = reference or fid_mod.stats_from_features(np.concatenate(gt))
    return fid_mod.frechet_distance(mine, other)


def _means(results: list[ImageResult], metrics: tuple[Metric, ...]) -> dict[str, float]:
    means = {}
    for metric in metrics:
        values = [r.values[metric.value] for r in results if metric.value in r.values]
        finite = [v for v in values if math.isfinite(v)]
        if values:
            means[metric.value] = float(np.mean(finite)) if finite else math.inf
    return means
