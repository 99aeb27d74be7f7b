"""Bundles with random weights, for benchmarks: their speed and memory do not depend on the
weights, so no training is needed. Not used by restore."""

from __future__ import annotations

from dataclasses import replace

import torch

from drbfr_cli.bundle import Bundle
from drbfr_cli.config import from_dict, to_dict
from drbfr_cli.diffusion.pipeline import FrozenParts
from drbfr_cli.diffusion.sampling import SamplingConfig
from drbfr_cli.diffusion.schedule import NoiseSchedule
from drbfr_cli.nets.autoencoder import FirstStage, LatentStats, VQAutoencoder
from drbfr_cli.nets.drm import DREncoder, DRMConfig
from drbfr_cli.nets.ldrm import LDRM, LDRMConfig
from drbfr_cli.presets import (
    VAEConfig,
    drm_config_from_preset,
    ldm_config_from_preset,
    vae_config_from_preset,
)
from drbfr_cli.train.ldm import check_geometry


def random_bundle(
    preset: str, *, seed: int = 0, use_dr: bool = True, device: torch.device | str = "cpu"
) -> Bundle:
    """A bundle of the networks of `preset` (models/presets, the same name for every part) with
    random weights, in eval mode: no training needed.

    For benchmarks, whose speed and memory do not depend on the weights. The VAE's codebook
    counts as initialised and its latent scaling factor is 1; the sampling defaults are the
    preset's. device="meta" builds shapes without storage (for FLOP counts).
    """
    drm_config, _ = drm_config_from_preset(preset)
    vae_config, _ = vae_config_from_preset(preset)
    ldm_config, _ = ldm_config_from_preset(preset)
    network = ldm_config.network_for(
        latent_channels=vae_config.network.latent_channels,
        dr_tokens=drm_config.tokens,
        dr_width=drm_config.token_dim,
        use_dr=use_dr,
    )
    check_geometry(ldm_config, vae_config, network)
    bundle = _random_bundle(
        drm_config, vae_config, network, ldm_config.schedule, seed=seed, device=device,
        preset=preset, quantize=ldm_config.decode_quantized,
    )  # fmt: skip
    return replace(bundle, sampling=ldm_config.sampling)


def shape_copy(bundle: Bundle) -> Bundle:
    """A bundle of the same networks on the meta device (shapes only, no weights or memory)."""
    drm = from_dict(DRMConfig, bundle.parts.drm_config["model"], source="bundle drm")
    vae = from_dict(VAEConfig, bundle.parts.vae_config["model"], source="bundle vae")
    copy = _random_bundle(
        drm, vae, bundle.ldrm.config, bundle.schedule, seed=0, device="meta",
        quantize=bundle.parts.first_stage.quantize,
    )  # fmt: skip
    return replace(copy, sampling=bundle.sampling)


def _random_bundle(
    drm_config: DRMConfig,
    vae_config: VAEConfig,
    network: LDRMConfig,
    schedule: NoiseSchedule,
    *,
    seed: int,
    device: torch.device | str,
    preset: str | None = None,
    quantize: bool = True,
) -> Bundle:
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        encoder = DREncoder(
            channels=drm_config.encoder_channels,
            tokens=drm_config.tokens,
            token_dim=drm_config.token_dim,
        )
        vae = VQAutoencoder(vae_config.network)
        ldrm = LDRM(network)
    vae.quantizer.initialised.fill_(True)
    for module in (encoder, vae, ldrm):
        module.requires_grad_(False).eval()
    latent = LatentStats(scaling_factor=1.0, mean=0.0, std=1.0, samples=0)
    parts = FrozenParts(
        first_stage=FirstStage(vae, latent.scaling_factor, quantize),
        encoder=encoder,
        vae_config={"model": to_dict(vae_config), "latent": to_dict(latent), "preset": preset},
        drm_config={"model": to_dict(drm_config), "preset": preset},
    )
    return Bundle(parts, ldrm, schedule, SamplingConfig(), vae_config.image_size)
