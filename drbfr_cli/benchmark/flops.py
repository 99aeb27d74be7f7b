"""`drbfr bench flops`: FLOPs of one training item of each stage, and the wall time they
project for a full run (the preset's steps x batch items) on N GPUs at a stated utilisation.

Counted by torch.utils.flop_counter on the meta device (shapes only, nothing computed), at the
preset's real sizes: one item's forward and backward through the trained networks, forwards
through the frozen ones, and (VQ stage) the nearest-code search and the adaptive weight's two
extra gradients. A multiply-add counts two FLOPs. Data preparation, the optimizer update and
communication are not counted: the projection is a lower bound at the stated utilisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from drbfr_cli.benchmark.train import ITEMS, STAGES
from drbfr_cli.config import preset_names

H100_BF16_DENSE = 989e12
"""NVIDIA H100 SXM dense bf16 tensor throughput, FLOP/s (the data sheet's figure)."""
DEFAULT_UTILISATION = 0.4
"""Sustained fraction of the peak assumed for training (model FLOPs utilisation)."""
META = torch.device("meta")


@dataclass(frozen=True)
class StageFlops:
    """One stage of a preset: FLOPs per training item and the preset's default run length."""

    stage: str
    preset: str
    item: str
    flops_per_item: float
    steps: int
    batch_per_gpu: int

    def run_flops(self, gpus: int) -> float:
        """FLOPs of the whole run: steps x (batch per GPU x gpus) items."""
        return self.flops_per_item * self.steps * self.batch_per_gpu * gpus


def count_training_flops(step: Callable[[], None]) -> float:
    """FLOPs of everything `step` runs, backward included."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def _square(side: int) -> torch.Tensor:
    return torch.zeros(1, 3, side, side, device=META)


def _drm_step(preset: str) -> tuple[Callable[[], None], dict[str, Any]]:
    from drbfr_cli.nets.drm import build_drm
    from drbfr_cli.presets import drm_config_from_preset

    model, train = drm_config_from_preset(preset)
    with META:
        nets = build_drm(model)
    lq1, lq2, hq2 = (_square(model.patch_size) for _ in range(3))

    def step() -> None:
        dr1, dr2 = nets["encoder"](lq1), nets["encoder"](lq2)
        rebuilt = nets["generator"](hq2, dr1)
        z1, z2 = nets["head"](dr1), nets["head"](dr2)
        (rebuilt.mean() + z1.sum() + z2.sum() + dr2.sum()).backward()

    return step, train


def _vae_step(preset: str) -> tuple[Callable[[], None], dict[str, Any]]:
    from drbfr_cli.nets.autoencoder import VQAutoencoder
    from drbfr_cli.nets.discriminator import PatchDiscriminator
    from drbfr_cli.presets import vae_config_from_preset
    from drbfr_cli.train.losses import adaptive_adversarial_weight

    model, train = vae_config_from_preset(preset)
    loss = model.loss
    with META:
        vae = VQAutoencoder(model.network)
        disc = PatchDiscriminator(channels=loss.disc_channels, layers=loss.disc_layers)
        lpips = _lpips_vgg() if loss.perceptual_weight > 0 else None
    image = _square(model.data.patch_size)
    net = model.network
    side = model.data.patch_size // net.downsampling
    search = 2.0 * side * side * net.num_codes * net.latent_channels  # nearest codes, by hand

    def step() -> None:
        latent = vae.encode(image)
        rebuilt = vae.decode_quantized(latent)
        rec = (rebuilt - image).abs().mean()
        if lpips is not None:
            rec = rec + lpips(rebuilt, image).mean()
        total = rec
        if loss.disc_weight > 0:
            logits = disc(image, rebuilt)
            adversarial = -logits.fake_for_generator.mean()
            weight = adaptive_adversarial_weight(rec, adversarial, vae.last_layer)
            total = total + weight * adversarial + logits.real.mean() + logits.fake.mean()
        total.backward()

    def step_with_search() -> None:
        step()
        _ADDED.append(search)

    return step_with_search, train


_ADDED: list[float] = []
"""FLOPs a step adds by hand (operators the counter cannot see), drained by `stage_flops`."""


def _lpips_vgg() -> torch.nn.Module:
    """LPIPS-VGG's shape on the meta device (its scaling constants are made on the CPU)."""
    from drbfr_cli.choices import LpipsNet
    from drbfr_cli.metrics.lpips_net import LpipsNetwork

    return LpipsNetwork(LpipsNet.VGG, heads=False).to(META)


def _ldm_step(preset: str) -> tuple[Callable[[], None], dict[str, Any]]:
    from drbfr_cli.benchmark.random_bundle import random_bundle
    from drbfr_cli.diffusion.pipeline import condition
    from drbfr_cli.presets import ldm_config_from_preset

    _, train = ldm_config_from_preset(preset)
    bundle = random_bundle(preset, device="meta")
    ldrm = bundle.ldrm.train().requires_grad_(True)
    hq = lq = _square(bundle.face_size)

    def step() -> None:
        cond = condition(bundle.parts, lq, use_dr=True)
        with torch.no_grad():
            z0 = bundle.parts.first_stage.encode(hq)
        t = torch.zeros(1, dtype=torch.int64, device=META)
        keep = torch.ones(1, dtype=torch.bool, device=META)
        abar = torch.ones(1, device=META)
        eps = ldrm(z0, t, cond.f_lq, cond.f_dr, keep, abar)
        (eps.float() - z0).pow(2).mean().backward()

    return step, train


BUILDERS = {"drm": _drm_step, "vae": _vae_step, "ldm": _ldm_step}


def stage_flops(stage: str, preset: str) -> StageFlops:
    """FLOPs of one training item of `stage` at `preset`'s sizes, with its default run."""
    step, train = BUILDERS[stage](preset)
    _ADDED.clear()
    flops = count_training_flops(step) + sum(_ADDED)
    _ADDED.clear()
    return StageFlops(
        stage=stage,
        preset=preset,
        item=ITEMS[stage],
        flops_per_item=flops,
        steps=int(train["steps"]),
        batch_per_gpu=int(train["batch_size"]),
    )


def projected_seconds(
    flops: StageFlops,
    *,
    gpus: int = 8,
    peak: float = H100_BF16_DENSE,
    utilisation: float = DEFAULT_UTILISATION,
) -> float:
    """Wall time of the stage's full run on `gpus` GPUs, each sustaining utilisation x peak."""
    return flops.run_flops(gpus) / (gpus * peak * utilisation)


def flops_rows(
    presets: tuple[str, ...],
    *,
    gpus: int = 8,
    peak: float = H100_BF16_DENSE,
    utilisation: float = DEFAULT_UTILISATION,
) -> list[dict[str, Any]]:
    """One JSON-ready row per (preset, stage): FLOPs per item, run FLOPs, projected hours."""
    rows = []
    for preset in presets:
        for stage in STAGES:
            if preset not in preset_names(stage):  # e.g. small: a pretrained first stage
                continue
            counted = stage_flops(stage, preset)
            seconds = projected_seconds(counted, gpus=gpus, peak=peak, utilisation=utilisation)
            rows.append(
                {
                    **asdict(counted),
                    "gpus": gpus,
                    "run_flops": counted.run_flops(gpus),
                    "peak_flops_per_gpu": peak,
                    "utilisation": utilisation,
                    "projected_hours": seconds / 3600,
                }
            )
    return rows


def flops_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table with the arithmetic spelled out."""
    lines = [
        "| preset | stage | GFLOP / item | steps x batch x GPUs | run PFLOP | hours |",
        "|---|---|---:|---|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['preset']} | {row['stage']} | {row['flops_per_item'] / 1e9:,.1f} | "
            f"{row['steps']:,} x {row['batch_per_gpu']} x {row['gpus']} | "
            f"{row['run_flops'] / 1e15:,.0f} | {row['projected_hours']:,.1f} |"
        )
    return "\n".join(lines) + "\n"
