"""Evidence that a trained DRM represents degradations (paper section 4.1, Figs. 6-7).

On faces the DRM never saw, with leave-one-face-out cross-validation (each face is scored by
probes fitted on the other faces, so no probe ever sees the face it scores):
(a) degradation-type probe: DRs of faces degraded by blur only / downsampling only / noise only
    / JPEG only (strong settings, as Fig. 7b), classified by a linear (softmax) probe and a k-NN
    probe (cosine on the raw DR, which Eq. 6 keeps near N(0, I)); the same for an untrained
    encoder;
(b) linear-probe R^2 of sigma, r, delta, q under random Eq. (11) degradations;
(c) content independence: DR cosine similarity for one degradation on different faces versus
    different degradations on one face;
(d) Fig. 6: PSNR/SSIM of the LQ face rebuilt by G_LQ from the HQ face and the DR of the real LQ.

DRs are computed on the central `crop` x `crop` region of each face at the DRM's face size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from drbfr_cli.degradations import (
    DegradationRanges,
    add_gaussian_noise,
    degrade,
    downsample,
    gaussian_blur,
    jpeg_compress,
    resize_to,
    sample_params,
)
from drbfr_cli.metrics.fidelity import FidelityConfig, psnr, ssim


class DegradationType(StrEnum):
    BLUR = "blur"
    DOWNSAMPLE = "downsample"
    NOISE = "noise"
    JPEG = "jpeg"


@dataclass(frozen=True)
class AnalysisConfig:
    crop: int = 192
    draws_per_type: int = 16
    """Single-type degradations per face and type, for probe (a)."""
    regression_draws: int = 24
    """Random Eq. (11) degradations per face, for (b) and (d)."""
    shared_draws: int = 8
    """Degradations applied to every face, for (c)."""
    strong_blur: tuple[float, float] = (3.0, 10.0)
    strong_scale: tuple[float, float] = (3.0, 8.0)
    strong_noise: tuple[float, float] = (12.0, 20.0)
    strong_jpeg: tuple[int, int] = (10, 40)
    knn_k: int = 5
    batch_size: int = 16
    seed: int = 0


@dataclass(frozen=True)
class ProbeScores:
    linear: float
    knn: float


@dataclass(frozen=True)
class DRMAnalysis:
    type_probe: ProbeScores
    type_probe_untrained: ProbeScores
    r2: dict[str, float]
    cosine_same_degradation: float
    cosine_same_face: float
    reconstruction_psnr: float | None
    reconstruction_ssim: float | None
    hq_vs_lq_psnr: float
    reconstruction_shuffled_psnr: float | None
    faces: int
    scatter: np.ndarray = field(repr=False)
    """PCA 2-D coordinates of the score-set DRs (n x 2) and their type labels in column 2."""


# ---------------------------------------------------------------------------------------------
# Degradations used by the analysis


def single_degradation(
    kind: DegradationType, rng: np.random.Generator, config: AnalysisConfig
) -> Callable[[np.ndarray], np.ndarray]:
    """One strong single-type degradation (Fig. 7b) as a function of an HQ image in [0, 1]."""
    if kind is DegradationType.BLUR:
        sigma = rng.uniform(*config.strong_blur)
        return lambda x: gaussian_blur(x, sigma)
    if kind is DegradationType.DOWNSAMPLE:
        r = rng.uniform(*config.strong_scale)
        return lambda x: resize_to(downsample(x, r), (x.shape[1], x.shape[0]))
    if kind is DegradationType.NOISE:
        delta, seed = rng.uniform(*config.strong_noise), int(rng.integers(2**31))
        return lambda x: add_gaussian_noise(x, delta, np.random.default_rng(seed))
    q = int(rng.integers(config.strong_jpeg[0], config.strong_jpeg[1], endpoint=True))
    return lambda x: jpeg_compress(x, q)


def center_crop(face: np.ndarray, size: int) -> np.ndarray:
    """Central size x size region of a face (uint8 or float), as float32 in [0, 1]."""
    height, width = face.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    region = face[top : top + size, left : left + size]
    return region.astype(np.float32) / 255.0 if region.dtype == np.uint8 else region


# ---------------------------------------------------------------------------------------------
# Encoding and probes (pure numpy / torch)


def _to_batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy()) * 2.0 - 1.0


@torch.no_grad()
def encode(encoder: nn.Module, images: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Flattened f_DR (n x l*d) of float RGB images in [0, 1]."""
    parts = [
        encoder(_to_batch(images[i : i + batch_size])).flatten(1)
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(parts).numpy()


def standardise(fit: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = fit.mean(0), fit.std(0) + 1e-6
    return (fit - mean) / std, (score - mean) / std


def linear_probe_accuracy(
    fit_x: np.ndarray, fit_y: np.ndarray, score_x: np.ndarray, score_y: np.ndarray, classes: int
) -> float:
    """Softmax regression (L2 1e-3, L-BFGS) fitted on (fit_x, fit_y), accuracy on the score set."""
    fx, sx = (torch.from_numpy(a).double() for a in standardise(fit_x, score_x))
    labels = torch.from_numpy(fit_y).long()
    weight = torch.zeros(fx.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(fx @ weight + bias, labels) + 1e-3 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    predicted = (sx @ weight + bias).argmax(1).numpy()
    return float((predicted == score_y).mean())


def knn_accuracy(
    fit_x: np.ndarray, fit_y: np.ndarray, score_x: np.ndarray, score_y: np.ndarray, k: int
) -> float:
    """k-nearest-neighbour vote under cosine similarity of the raw features."""
    fx = fit_x / (np.linalg.norm(fit_x, axis=1, keepdims=True) + 1e-12)
    sx = score_x / (np.linalg.norm(score_x, axis=1, keepdims=True) + 1e-12)
    nearest = np.argsort(-(sx @ fx.T), axis=1)[:, :k]
    votes = fit_y[nearest]
    predicted = np.array([np.bincount(v, minlength=fit_y.max() + 1).argmax() for v in votes])
    return float((predicted == score_y).mean())


def ridge_predict(
    fit_x: np.ndarray, fit_t: np.ndarray, score_x: np.ndarray, alpha: float = 1.0
) -> np.ndarray:
    """Ridge regression (standardised features) fitted on (fit_x, fit_t), predicted for score_x."""
    fx, sx = standardise(fit_x, score_x)
    t_mean = fit_t.mean(0)
    gram = fx.T @ fx + alpha * np.eye(fx.shape[1])
    return sx @ np.linalg.solve(gram, fx.T @ (fit_t - t_mean)) + t_mean


def r2_leave_one_face_out(
    features: np.ndarray, targets: np.ndarray, owners: np.ndarray
) -> np.ndarray:
    """R^2 (1 - SSE / SST) per target column of ridge predictions made for each held-out face."""
    predicted = np.empty_like(targets)
    for face in np.unique(owners):
        held = owners == face
        predicted[held] = ridge_predict(features[~held], targets[~held], features[held])
    sse = ((targets - predicted) ** 2).sum(0)
    sst = ((targets - targets.mean(0)) ** 2).sum(0)
    return 1.0 - sse / sst


def mean_cosine(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return float(
        np.mean([a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12) for a, b in pairs])
    )


def pca_2d(features: np.ndarray) -> np.ndarray:
    centred = features - features.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


# ---------------------------------------------------------------------------------------------
# The four analyses


def _type_probe_data(
    faces: list[np.ndarray], config: AnalysisConfig, rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Single-type degraded faces, their type labels and their face indices."""
    images, labels, owners = [], [], []
    for face_index, face in enumerate(faces):
        for label, kind in enumerate(DegradationType):
            for _ in range(config.draws_per_type):
                images.append(np.clip(single_degradation(kind, rng, config)(face), 0.0, 1.0))
                labels.append(label)
                owners.append(face_index)
    return images, np.array(labels), np.array(owners)


def type_probe(
    encoder: nn.Module,
    images: list[np.ndarray],
    labels: np.ndarray,
    owners: np.ndarray,
    config: AnalysisConfig,
) -> tuple[ProbeScores, np.ndarray]:
    """Leave-one-face-out accuracy of both probes (each face weighted by its sample count)."""
    features = encode(encoder, images, config.batch_size)
    classes = len(DegradationType)
    linear, knn = 0.0, 0.0
    for face in np.unique(owners):
        held = owners == face
        args = (features[~held], labels[~held], features[held], labels[held])
        linear += linear_probe_accuracy(*args, classes) * held.sum()
        knn += knn_accuracy(*args, config.knn_k) * held.sum()
    return ProbeScores(linear=linear / len(labels), knn=knn / len(labels)), features


def _random_degradations(
    faces: list[np.ndarray], draws: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    images, targets, owners = [], [], []
    ranges = DegradationRanges()
    for face_index, face in enumerate(faces):
        for _ in range(draws):
            params = sample_params(rng, ranges)
            images.append(degrade(face, params, rng))
            targets.append([params.sigma, params.r, params.delta, params.q])
            owners.append(face_index)
    return images, np.array(targets), np.array(owners)


def content_independence(
    encoder: nn.Module, faces: list[np.ndarray], config: AnalysisConfig, rng: np.random.Generator
) -> tuple[float, float]:
    """Mean DR cosine: (same degradation, different faces), (same face, other degradations)."""
    ranges = DegradationRanges()
    grid = [[None] * config.shared_draws for _ in faces]
    for d in range(config.shared_draws):
        params, seed = sample_params(rng, ranges), int(rng.integers(2**31))
        for f, face in enumerate(faces):
            grid[f][d] = degrade(face, params, np.random.default_rng(seed))
    flat = encode(encoder, [img for row in grid for img in row], config.batch_size)
    dr = flat.reshape(len(faces), config.shared_draws, -1)
    n_faces, n_draws = dr.shape[:2]
    same_degradation = [
        (dr[a, d], dr[b, d])
        for d in range(n_draws)
        for a in range(n_faces)
        for b in range(a + 1, n_faces)
    ]
    same_face = [
        (dr[f, a], dr[f, b])
        for f in range(n_faces)
        for a in range(n_draws)
        for b in range(a + 1, n_draws)
    ]
    return mean_cosine(same_degradation), mean_cosine(same_face)


@torch.no_grad()
def reconstruction_scores(
    modules: dict[str, nn.Module],
    faces: list[np.ndarray],
    lq: list[np.ndarray],
    owners: np.ndarray,
    config: AnalysisConfig,
) -> tuple[float, float, float]:
    """Fig. 6: mean PSNR and SSIM of G_LQ(HQ, DR(LQ)) vs LQ, and PSNR with the DRs shuffled."""
    metric = FidelityConfig()
    hq = [faces[i] for i in owners]
    dr = torch.from_numpy(encode(modules["encoder"], lq, config.batch_size))
    shuffled = dr.roll(1, dims=0)
    rebuilt, rebuilt_shuffled = [], []
    for i in range(0, len(hq), config.batch_size):
        batch = _to_batch(hq[i : i + config.batch_size])
        for target, tokens in ((rebuilt, dr), (rebuilt_shuffled, shuffled)):
            out = modules["generator"](
                batch, tokens[i : i + config.batch_size].view(batch.shape[0], -1)
            )
            target += [((o.permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1) for o in out]
    return (
        float(np.mean([psnr(r, t, metric) for r, t in zip(rebuilt, lq, strict=True)])),
        float(np.mean([ssim(r, t, metric) for r, t in zip(rebuilt, lq, strict=True)])),
        float(np.mean([psnr(r, t, metric) for r, t in zip(rebuilt_shuffled, lq, strict=True)])),
    )


def analyse_drm(
    modules: dict[str, nn.Module],
    untrained_encoder: nn.Module,
    faces_uint8: list[np.ndarray],
    config: AnalysisConfig,
) -> DRMAnalysis:
    """Run (a)-(d) on `faces_uint8`, leave-one-face-out (at least two faces)."""
    if len(faces_uint8) < 2:
        raise ValueError("the analysis needs at least two faces (one held out, one to fit)")
    faces = [center_crop(face, config.crop) for face in faces_uint8]
    rng = np.random.default_rng(config.seed)

    images, labels, owners = _type_probe_data(faces, config, rng)
    probe, features = type_probe(modules["encoder"], images, labels, owners, config)
    probe_untrained, _ = type_probe(untrained_encoder, images, labels, owners, config)
    scatter = np.column_stack([pca_2d(features), labels])

    lq, targets, owners_r = _random_degradations(faces, config.regression_draws, rng)
    features_r = encode(modules["encoder"], lq, config.batch_size)
    r2 = r2_leave_one_face_out(features_r, targets, owners_r)

    same_degradation, same_face = content_independence(modules["encoder"], faces, config, rng)
    metric = FidelityConfig()
    hq_vs_lq = float(
        np.mean([psnr(faces[o], x, metric) for o, x in zip(owners_r, lq, strict=True)])
    )
    recon: tuple[float | None, ...] = (None, None, None)
    if "generator" in modules:
        recon = reconstruction_scores(modules, faces, lq, owners_r, config)
    return DRMAnalysis(
        type_probe=probe,
        type_probe_untrained=probe_untrained,
        r2=dict(zip(("sigma", "r", "delta", "q"), map(float, r2), strict=True)),
        cosine_same_degradation=same_degradation,
        cosine_same_face=same_face,
        reconstruction_psnr=recon[0],
        reconstruction_ssim=recon[1],
        hq_vs_lq_psnr=hq_vs_lq,
        reconstruction_shuffled_psnr=recon[2],
        faces=len(faces),
        scatter=scatter,
    )
