"""The first-stage training: a VQ autoencoder on patches of HQ faces (paper section 2).

Loss per step, as VQGAN trains it (Esser et al. 2021; taming-transformers'
VQLPIPSWithDiscriminator):
L_rec = l1 |x - x_hat| + l2 (x - x_hat)^2 + p LPIPS(x, x_hat), plus the commitment
beta ||z - sg(e)||^2 (the codebook itself follows EMAs), plus, after `disc_start` steps, a hinge
PatchGAN: lambda L_G for the autoencoder with the adaptive weight
lambda = disc_weight * |grad_w L_rec| / (|grad_w L_G| + 1e-4) (w: the decoder's last layer,
clamped to [0, 1e4], no gradient through it), and the discriminator's own hinge loss, stepped
with its own AdamW betas and gradient clip. LPIPS needs its VGG16 backbone: a run without it
fails with the missing file named, unless it opts out (`perceptual=False`, `--no-perceptual`),
which its config records. For the first `quantize_after` steps the decoder sees
the continuous latent (a warm-up without quantization); the codebook then starts from k-means
of the encoder outputs. After training, the latent scaling factor 1 / std(E(x)) is measured on
training patches and stored in final/config.json (task_config.latent), so that scaled latents
reach the diffusion model with unit variance (LDM section 4.3.2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import PartialState
from torch import nn

from drbfr_cli.config import from_dict, to_dict
from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import write_bytes_atomic
from drbfr_cli.metrics.lpips import LpipsNet, load_lpips
from drbfr_cli.nets.autoencoder import LatentStats, Quantized, VQAutoencoder, latent_std_scale
from drbfr_cli.nets.discriminator import PatchDiscriminator
from drbfr_cli.presets import VAEConfig
from drbfr_cli.train import checkpoint as ckpt
from drbfr_cli.train.batches import SeededItems
from drbfr_cli.train.datasets import FacePatchDataset, load_faces
from drbfr_cli.train.loop import LoopConfig, LossOutput, ParamGroup, TrainResult, train
from drbfr_cli.train.losses import (
    adaptive_adversarial_weight,
    generator_adversarial_loss,
    hinge_discriminator_loss,
)
from drbfr_cli.train.samples import image_rows
from drbfr_cli.weights import WeightsMissingError

STAGE = "vae"
RUN = ckpt.RunStage(STAGE, module="vae", label="a VAE run")
SCALE_EPOCH = -2
"""Epoch key of the patches the scaling factor is measured on (never a training epoch)."""


@dataclass(frozen=True)
class VAETaskConfig:
    model: VAEConfig
    data: str
    preset: str
    seed: int = 0
    weights_dir: str | None = None
    """Where the LPIPS backbone is looked up (None: the usual weights folders)."""
    perceptual: bool = True
    """False: train without the LPIPS term even when the preset weighs it (recorded)."""


def model_config_from_saved(saved: dict[str, Any]) -> VAEConfig:
    """The VAEConfig stored with a VAE checkpoint."""
    return from_dict(VAEConfig, saved["model"], source="VAE checkpoint config")


def codebook_terms(quantized: Quantized) -> dict[str, float]:
    """What the log says about the codebook: commitment, perplexity, usage and restarts."""
    return {
        "commitment": float(quantized.commitment.detach()),
        "perplexity": float(quantized.perplexity),
        "codes_used": float(quantized.usage),
        "codes_restarted": float(quantized.restarted),
    }


def load_perceptual(config: VAETaskConfig) -> nn.Module | None:
    """The LPIPS-VGG module, or None when the preset weighs it 0 or the run opted out;
    a one-line DrbfrError naming the missing VGG16 file otherwise."""
    if config.model.loss.perceptual_weight == 0 or not config.perceptual:
        return None
    weights_dir = Path(config.weights_dir) if config.weights_dir else None
    try:
        return load_lpips(LpipsNet.VGG, weights_dir, torch.device("cpu"))
    except WeightsMissingError as exc:
        raise DrbfrError(
            f"the LPIPS perceptual loss needs its VGG16 backbone: {exc}; fetch it (drbfr weights "
            "fetch), pass --weights-dir, or train without it with --no-perceptual"
        ) from None


class VAETask:
    """TrainTask for the VQ autoencoder (and its discriminator when disc_weight > 0)."""

    name = STAGE
    resume_may_change = frozenset({"data", "weights_dir"})

    def __init__(self, config: VAETaskConfig, faces: list | None = None) -> None:
        self.settings, self.model_config = config, config.model
        sides = config.model.data.face_sides
        self.faces = faces if faces is not None else load_faces(config.data, sides[1])
        with torch.random.fork_rng():  # weights depend on the seed only, not on global state
            torch.manual_seed(config.seed)
            self._modules: dict[str, nn.Module] = {"vae": VQAutoencoder(config.model.network)}
            if config.model.loss.disc_weight > 0:
                self._modules["discriminator"] = PatchDiscriminator(
                    channels=config.model.loss.disc_channels, layers=config.model.loss.disc_layers
                )
        self.lpips = load_perceptual(config)

    def modules(self) -> dict[str, nn.Module]:
        return self._modules

    def param_groups(self) -> list[ParamGroup]:
        """The autoencoder with the loop's clipping; the discriminator with its own."""
        loss = self.model_config.loss
        groups = [ParamGroup("autoencoder", ("vae",), betas=loss.betas)]
        if "discriminator" in self._modules:
            groups.append(
                ParamGroup(
                    "discriminator", ("discriminator",), loss.disc_betas, loss.disc_grad_clip
                )
            )
        return groups

    def dataset(self, *, augment: bool = True) -> FacePatchDataset:
        """Training patches; augment=False gives them in their own colours (latent scaling)."""
        cfg = self.model_config.data
        return FacePatchDataset(
            self.faces,
            patch_size=cfg.patch_size,
            sides=cfg.face_sides,
            seed=self.settings.seed,
            color_augment=augment and cfg.color_augment,
        )

    def _perceptual(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        assert self.lpips is not None
        self.lpips.to(image.device)
        return self.lpips(image.float(), target.float()).mean()

    def compute_loss(
        self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor], step: int
    ) -> LossOutput:
        cfg, target = self.model_config.loss, batch["image"]
        quantize = step > cfg.quantize_after
        out = modules["vae"](target, quantize=quantize)
        terms = {"l1": F.l1_loss(out.image, target), "l2": F.mse_loss(out.image, target)}
        rec = cfg.l1_weight * terms["l1"] + cfg.l2_weight * terms["l2"]
        if self.lpips is not None:
            terms["lpips"] = self._perceptual(out.image, target)
            rec = rec + cfg.perceptual_weight * terms["lpips"]
        total = rec
        if "discriminator" in modules and step > cfg.disc_start:
            logits = modules["discriminator"](target, out.image)
            terms["disc"] = hinge_discriminator_loss(logits.real, logits.fake)
            terms["adversarial"] = generator_adversarial_loss(logits.fake_for_generator)
            last_layer = self._modules["vae"].last_layer  # the same tensor inside DDP
            weight = cfg.disc_weight * adaptive_adversarial_weight(
                rec, terms["adversarial"], last_layer
            )
            terms["adversarial_weight"] = weight
            total = total + terms["disc"] + weight * terms["adversarial"]
        logged = {k: float(v.detach()) for k, v in terms.items()}
        if out.quantized is not None:
            q = out.quantized
            total = total + q.commitment
            logged |= codebook_terms(q)
        return LossOutput(total=total, terms=logged)

    @torch.no_grad()
    def sample_grid(
        self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Rows: training patches, their reconstructions (quantized once the codebook is set)."""
        images, vae = batch["image"][:8], modules["vae"]
        rebuilt = vae(images, quantize=bool(vae.quantizer.initialised)).image
        return image_rows(images, rebuilt)

    def config(self) -> dict[str, Any]:
        return {
            "stage": STAGE,
            "preset": self.settings.preset,
            "data": self.settings.data,
            "seed": self.settings.seed,
            "weights_dir": self.settings.weights_dir,
            "perceptual": self.lpips is not None,
            "model": to_dict(self.model_config),
        }


# ---------------------------------------------------------------------------------------------
# Latent scaling


@torch.no_grad()
def measure_latents(
    model: VQAutoencoder, dataset: FacePatchDataset, samples: int, seed: int, batch_size: int = 32
) -> LatentStats:
    """Scaling factor 1 / std of the continuous latents of `samples` training patches.

    The patches are items (SCALE_EPOCH, 0..samples-1) of the training dataset, drawn with the
    loop's seeding, so they follow the training distribution and never repeat a training batch.
    """
    items = SeededItems(dataset, seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    latents = []
    for start in range(0, samples, batch_size):
        keys = range(start, min(start + batch_size, samples))
        images = torch.stack([items[(SCALE_EPOCH, i)]["image"] for i in keys]).to(device)
        latents.append(model.encode(images).float().cpu())
    model.train(was_training)
    scale, mean, std = latent_std_scale(torch.cat(latents))
    return LatentStats(scaling_factor=scale, mean=mean, std=std, samples=samples)


def store_latent_stats(final_dir: Path, stats: LatentStats) -> None:
    """Add task_config.latent to final/config.json (atomically; the weights are unchanged)."""
    config = ckpt.read_config(final_dir)
    config["task_config"]["latent"] = to_dict(stats)
    text = json.dumps(config, indent=2, default=str) + "\n"
    write_bytes_atomic(final_dir / ckpt.CONFIG_FILE, text.encode())


def train_vae(
    task: VAETask, loop: LoopConfig, run_dir: Path, *, resume: bool = False
) -> tuple[TrainResult, LatentStats | None]:
    """Train, then (on the main process) measure and store the latent scaling factor."""
    result = train(task, loop, run_dir, resume=resume)
    if not PartialState().is_main_process:
        return result, None
    stats = measure_latents(
        task.modules()["vae"],
        task.dataset(augment=False),
        task.model_config.scale_samples,
        task.settings.seed,
    )
    store_latent_stats(result.final_dir, stats)
    return result, stats


# ---------------------------------------------------------------------------------------------
# Loading a trained autoencoder


@dataclass(frozen=True)
class TrainedVAE:
    """A trained autoencoder in eval mode, its config and latent scaling (None: not measured)."""

    model: VQAutoencoder
    config: VAEConfig
    latent: LatentStats | None


def load_vae(run_dir: Path) -> TrainedVAE:
    """The autoencoder of a VAE run (final weights, else the latest checkpoint), in eval mode."""
    model, saved = ckpt.load_run_module(run_dir, RUN, _build_vae, ema=False)
    latent = saved.get("latent")
    stats = from_dict(LatentStats, latent, source=f"{run_dir} latent stats") if latent else None
    return TrainedVAE(model=model, config=model_config_from_saved(saved), latent=stats)


def _build_vae(saved: dict[str, Any]) -> VQAutoencoder:
    return VQAutoencoder(model_config_from_saved(saved).network)
