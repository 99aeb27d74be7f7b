"""Bundles with random weights, for benchmarks: their speed and memory do not depend on the
weights, so no training is needed. Not used by restore."""

from __future__ import annotations

from dataclasses import replace

import torch

from drbfr_cli.bundle import Bundle
from drbfr_cli.choices import FirstStageKind
from drbfr_cli.config import from_dict, to_dict
from drbfr_cli.diffusion.pipeline import FrozenParts
from drbfr_cli.diffusion.sampling import SamplingConfig
from drbfr_cli.diffusion.schedule import NoiseSchedule
from drbfr_cli.nets.autoencoder import FirstStage, LatentStats, VQAutoencoder
from drbfr_cli.nets.drm import DREncoder, DRMConfig
from drbfr_cli.nets.ldrm import LDRM, LDRMConfig
from drbfr_cli.nets.taef2 import TAEF2, TAEF2FirstStage
from drbfr_cli.presets import (
    VAEConfig,
    drm_config_from_preset,
    first_stage_geometry,
    ldm_config_from_preset,
    vae_config_from_preset,
)
from drbfr_cli.train.ldm import check_geometry


def random_bundle(
    preset: str, *, seed: int = 0, use_dr: bool = True, device: torch.device | str = "cpu"
) -> Bundle:
    """A bundle of the networks of `preset` (models/presets, the same name for every part) with
    random weights, in eval mode: no training needed.

    For benchmarks, whose speed and memory do not depend on the weights. A VQ first stage's
    codebook counts as initialised and its latent scaling factor is 1; TAEF2 has random weights
    and no latent statistics; the sampling defaults are the preset's. device="meta" builds
    shapes without storage (for FLOP counts). An LDM preset named BASE-VARIANT (small-face)
    takes the DRM and VAE presets of BASE, whose frozen parts it trains on.
    """
    parts = preset.split("-")[0]
    drm_config, _ = drm_config_from_preset(parts)
    ldm_config, _ = ldm_config_from_preset(preset)
    vae_config = None
    if ldm_config.first_stage is FirstStageKind.VQ:
        vae_config = vae_config_from_preset(parts)[0]
    geometry = first_stage_geometry(_record(vae_config, preset))
    network = ldm_config.network_for(
        latent_channels=geometry.latent_channels,
        dr_tokens=drm_config.tokens,
        dr_width=drm_config.token_dim,
        use_dr=use_dr,
    )
    check_geometry(ldm_config, geometry, network)
    bundle = _random_bundle(
        drm_config, vae_config, network, ldm_config.schedule, seed=seed, device=device,
        preset=preset, quantize=ldm_config.decode_quantized,
    )  # fmt: skip
    return replace(bundle, sampling=ldm_config.sampling)


def shape_copy(bundle: Bundle) -> Bundle:
    """A bundle of the same networks on the meta device (shapes only, no weights or memory)."""
    drm = from_dict(DRMConfig, bundle.parts.drm_config["model"], source="bundle drm")
    record = bundle.parts.vae_config
    vae = None
    if record.get("kind", FirstStageKind.VQ) == FirstStageKind.VQ:
        vae = from_dict(VAEConfig, record["model"], source="bundle vae")
    copy = _random_bundle(
        drm, vae, bundle.ldrm.config, bundle.schedule, seed=0, device="meta",
        quantize=getattr(bundle.parts.first_stage, "quantize", False),
    )  # fmt: skip
    return replace(copy, sampling=bundle.sampling)


def _record(vae_config: VAEConfig | None, preset: str | None) -> dict:
    """The first-stage record of a random bundle (TAEF2 when `vae_config` is None)."""
    if vae_config is None:
        return {"kind": FirstStageKind.TAEF2.value, "preset": preset}
    latent = LatentStats(scaling_factor=1.0, mean=0.0, std=1.0, samples=0)
    return {"model": to_dict(vae_config), "latent": to_dict(latent), "preset": preset}


def _random_bundle(
    drm_config: DRMConfig,
    vae_config: VAEConfig | None,
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
        codec = TAEF2() if vae_config is None else VQAutoencoder(vae_config.network)
        ldrm = LDRM(network)
    for module in (encoder, codec, ldrm):
        module.requires_grad_(False).eval()
    record = _record(vae_config, preset)
    if isinstance(codec, VQAutoencoder):
        codec.quantizer.initialised.fill_(True)
        first_stage = FirstStage(codec, 1.0, quantize)
    else:
        first_stage = TAEF2FirstStage(codec, None)
    parts = FrozenParts(
        first_stage=first_stage,
        encoder=encoder,
        vae_config=record,
        drm_config={"model": to_dict(drm_config), "preset": preset},
    )
    face_size = first_stage_geometry(record).face_size
    return Bundle(parts, ldrm, schedule, SamplingConfig(), face_size)
