"""How well a trained VQ autoencoder reconstructs faces it never saw, against a naive codec.

Two sets of unseen images: whole faces resized to the preset's image_size, and random patches
of them at random scales (the training distribution of patches, on other faces). Each image is
reconstructed by the autoencoder through its codebook (the codec the diffusion model's latents
are decoded by), by the autoencoder without quantization (the continuous latent), and by the
naive codec with as many stored values: bicubic downsampling to S x S x 3 values with S the
smallest side for which 3 S^2 >= the latent's C h w values (S = h when C = 3), then bicubic
upsampling back. PSNR and SSIM (RGB, [0, 1], metrics.fidelity) per image, LPIPS when given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from drbfr_cli.metrics.fidelity import FidelityConfig, psnr, ssim
from drbfr_cli.metrics.lpips import lpips_distance
from drbfr_cli.nets.autoencoder import VQAutoencoder
from drbfr_cli.train.datasets import random_patch

Codec = Callable[[torch.Tensor], torch.Tensor]
"""Images B x 3 x H x W in [0, 1] -> their reconstructions, same shape, in [0, 1]."""


@dataclass(frozen=True)
class AnalysisConfig:
    patches: int = 64
    """Random patches of the unseen faces (0: whole faces only)."""
    batch_size: int = 16
    seed: int = 0


@dataclass(frozen=True)
class CodecScores:
    """Mean (and per-image) fidelity of one codec on one image set."""

    psnr: float
    ssim: float
    lpips: float | None
    psnr_per_image: tuple[float, ...]


@dataclass(frozen=True)
class SetScores:
    """Every codec on one image set of `count` images of side `size`."""

    count: int
    size: int
    latent_values: int
    bicubic_side: int
    bicubic_values: int
    vae: CodecScores
    vae_unquantized: CodecScores
    bicubic: CodecScores


@dataclass(frozen=True)
class VAEAnalysis:
    faces: SetScores
    patches: SetScores | None
    grid: np.ndarray
    """Float RGB HxWx3 in [0, 1]: rows of faces, VAE reconstructions, bicubic reconstructions."""


# ---------------------------------------------------------------------------------------------
# Codecs


def bicubic_side(latent_values: int) -> int:
    """Smallest S with 3 * S^2 >= latent_values: the naive codec stores at least as many values."""
    side = math.isqrt(latent_values // 3)
    return side if 3 * side * side >= latent_values else side + 1


def bicubic_codec(side: int) -> Codec:
    """Bicubic (Keys a = -0.5) downsampling to side x side, antialiased, and back."""

    def codec(images: torch.Tensor) -> torch.Tensor:
        small = F.interpolate(
            images, size=(side, side), mode="bicubic", antialias=True, align_corners=False
        )
        return F.interpolate(
            small, size=images.shape[-2:], mode="bicubic", align_corners=False
        ).clamp(0, 1)

    return codec


def vae_codec(model: VQAutoencoder, *, quantize: bool) -> Codec:
    """The autoencoder as a codec on [0, 1] images (it works in [-1, 1])."""

    @torch.no_grad()
    def codec(images: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        latent = model.encode(images.to(device) * 2 - 1)
        return ((model.decode(latent, quantize=quantize) + 1) / 2).clamp(0, 1).cpu()

    return codec


# ---------------------------------------------------------------------------------------------
# Scoring


def _to_batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy())


def reconstruct(codec: Codec, images: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Run a codec over float RGB HxWx3 images in [0, 1], in batches."""
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        batch = codec(_to_batch(images[start : start + batch_size]).float())
        out += [image.permute(1, 2, 0).numpy().astype(np.float32) for image in batch]
    return out


def score(
    rebuilt: list[np.ndarray], originals: list[np.ndarray], lpips_model: nn.Module | None
) -> CodecScores:
    metric = FidelityConfig()
    psnrs = [psnr(r, o, metric) for r, o in zip(rebuilt, originals, strict=True)]
    ssims = [ssim(r, o, metric) for r, o in zip(rebuilt, originals, strict=True)]
    lpips = None
    if lpips_model is not None:
        lpips = float(
            np.mean(
                [lpips_distance(lpips_model, r, o) for r, o in zip(rebuilt, originals, strict=True)]
            )
        )
    return CodecScores(
        psnr=float(np.mean(psnrs)),
        ssim=float(np.mean(ssims)),
        lpips=lpips,
        psnr_per_image=tuple(psnrs),
    )


def score_set(
    model: VQAutoencoder, images: list[np.ndarray], lpips_model: nn.Module | None, batch_size: int
) -> tuple[SetScores, dict[str, list[np.ndarray]]]:
    """Scores of every codec on one set of equally sized square images, and the reconstructions."""
    size = images[0].shape[0]
    f, channels = model.config.downsampling, model.config.latent_channels
    latent_values = channels * (size // f) ** 2
    side = bicubic_side(latent_values)
    codecs = {
        "vae": vae_codec(model, quantize=True),
        "vae_unquantized": vae_codec(model, quantize=False),
        "bicubic": bicubic_codec(side),
    }
    rebuilt = {name: reconstruct(codec, images, batch_size) for name, codec in codecs.items()}
    scores = {name: score(out, images, lpips_model) for name, out in rebuilt.items()}
    result = SetScores(
        count=len(images), size=size, latent_values=latent_values, bicubic_side=side,
        bicubic_values=3 * side * side, **scores,
    )  # fmt: skip
    return result, rebuilt


def comparison_grid(
    originals: list[np.ndarray], rebuilt: dict[str, list[np.ndarray]], limit: int = 8
) -> np.ndarray:
    """Rows: originals, VAE reconstructions, bicubic codec (up to `limit` columns)."""
    rows = [originals[:limit], rebuilt["vae"][:limit], rebuilt["bicubic"][:limit]]
    return np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)


def unseen_patches(
    faces: list[np.ndarray], model_sides: tuple[int, int], patch: int, count: int, seed: int
) -> list[np.ndarray]:
    """`count` random patches of uint8 faces of side model_sides[1], as training draws them."""
    rng = np.random.default_rng(seed)
    return [random_patch(faces, patch, model_sides, rng) for _ in range(count)]


def analyse_vae(
    model: VQAutoencoder,
    faces: list[np.ndarray],
    patches: list[np.ndarray],
    lpips_model: nn.Module | None,
    config: AnalysisConfig,
) -> VAEAnalysis:
    """Score the autoencoder and the naive codec on whole faces and patches (RGB in [0, 1])."""
    face_scores, rebuilt = score_set(model, faces, lpips_model, config.batch_size)
    patch_scores = score_set(model, patches, lpips_model, config.batch_size)[0] if patches else None
    return VAEAnalysis(
        faces=face_scores, patches=patch_scores, grid=comparison_grid(faces, rebuilt)
    )
