"""The LDRM training stage: L = ||eps - eps_theta(z_t, f_LQ, f_DR, t)||^2 (Eq. 8).

Per step: HQ patches x and their Eq. (11) degradations y; z_0 = s E_VAE(x) and f_LQ = s E_VAE(y)
with the frozen autoencoder (s its latent scaling factor), f_DR = E_DR(y) with the frozen DRM;
t ~ U{0, T-1}, z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps; a share `condition_dropout` of
the items has its conditions dropped (the unconditional model of the texture pass).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from drbfr_cli.choices import Sampler
from drbfr_cli.config import from_dict, load_preset, to_dict
from drbfr_cli.data import RestorationPairDataset, load_faces
from drbfr_cli.degradations import DegradationRanges
from drbfr_cli.diffusion.sampling import NoiseSchedule, SamplingConfig, restore_latents
from drbfr_cli.errors import DrbfrError
from drbfr_cli.nets.autoencoder import FirstStage
from drbfr_cli.nets.drm import DREncoder
from drbfr_cli.nets.ldrm import LDRM, LDRMConfig, LDRMDenoiser
from drbfr_cli.train import checkpoint as ckpt
from drbfr_cli.train.checkpoint import load_modules
from drbfr_cli.train.drm import load_drm
from drbfr_cli.train.loop import LossOutput
from drbfr_cli.train.vae import load_vae

STAGE = "ldm"
Range = tuple[float, float]


@dataclass(frozen=True)
class LDMConfig:
    """Network, data, noise schedule and default sampling of an LDM preset ([model] table)."""

    patch_size: int = 64
    """Training patches (and the face size the bundle restores): the VAE's image_size."""
    face_sides: tuple[int, int] = (64, 160)
    color_augment: bool = True
    blur: Range = (0.1, 10.0)
    """Eq. (11) ranges of the training degradations (defaults: the paper's)."""
    scale: Range = (0.8, 8.0)
    noise: Range = (0.0, 20.0)
    jpeg: Range = (60.0, 100.0)
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    attention_levels: tuple[bool, ...] = (False, True, True)
    layers_per_block: int = 1
    head_dim: int = 32
    norm_num_groups: int = 16
    time_embedding_dim: int = 128
    condition_dropout: float = 0.1
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    sampler: Sampler = Sampler.DDIM
    """Default sampling of the bundle (each overridable at restore time)."""
    steps: int = 20
    start_t: float = 1.0
    tem_t: float = 0.0
    guidance_scale: float = 1.0
    samples: int = 1
    """Restorations averaged per face (the posterior mean; 1: one sample)."""
    prior_skip: bool = False
    """Add the Gaussian-prior eps around f_LQ to the U-Net's output (nets/ldrm.py)."""
    decode_quantized: bool = False
    """Decode restored latents through the VAE's codebook (LDM's convention for VQ first
    stages; base and paper presets). False decodes the continuous latent (tiny preset)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError("condition_dropout must lie in [0, 1)")
        if not self.patch_size <= self.face_sides[0] <= self.face_sides[1]:
            raise ValueError("face_sides must be ordered and at least patch_size")
        self.ranges()  # validates the Eq. (11) ranges
        self.schedule()

    def ranges(self) -> DegradationRanges:
        return DegradationRanges(blur=self.blur, scale=self.scale, noise=self.noise, jpeg=self.jpeg)

    def schedule(self) -> NoiseSchedule:
        return NoiseSchedule(
            num_train_timesteps=self.num_train_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            beta_schedule=self.beta_schedule,
        )

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            sampler=Sampler(self.sampler), steps=self.steps, start_t=self.start_t,
            tem_t=self.tem_t, guidance_scale=self.guidance_scale, samples=self.samples,
        )  # fmt: skip

    def network(self, *, latent_channels: int, dr_tokens: int, dr_width: int, use_dr: bool):
        """The LDRMConfig for this preset, with the widths the frozen VAE and DRM impose."""
        names = {f.name for f in fields(LDRMConfig)}
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name in names}
        return LDRMConfig(
            latent_channels=latent_channels,
            dr_tokens=dr_tokens,
            dr_width=dr_width,
            use_dr=use_dr,
            **own,
        )


@dataclass(frozen=True)
class LDMTaskConfig:
    model: LDMConfig
    data: str
    preset: str
    drm: str
    """The frozen DRM's run folder."""
    vae: str
    """The frozen VQ autoencoder's run folder."""
    use_dr: bool = True
    """False: the paper's DR-None ablation."""
    seed: int = 0


def ldm_config_from_preset(preset: str) -> tuple[LDMConfig, dict[str, Any]]:
    """(model config, default training options) of an LDM preset."""
    table = load_preset(STAGE, preset)
    model = from_dict(LDMConfig, table.get("model", {}), source=f"ldm preset {preset!r}")
    return model, dict(table.get("train", {}))


@dataclass(frozen=True)
class FrozenParts:
    """The frozen first stage and DR encoder the LDRM is conditioned on, with their configs."""

    first_stage: FirstStage
    encoder: DREncoder
    vae_config: dict[str, Any]
    drm_config: dict[str, Any]


def load_frozen_parts(drm_run: Path, vae_run: Path, *, quantize: bool = True) -> FrozenParts:
    """E_DR of a DRM run and the VAE (with its latent scaling) of a VAE run, frozen; `quantize`:
    whether decoding goes through the codebook."""
    drm_modules, drm_saved = load_drm(drm_run)
    trained_vae = load_vae(vae_run)
    if trained_vae.latent is None:
        raise DrbfrError(f"{vae_run}: no latent scaling factor (finish the VAE run first)")
    vae_saved = {
        "model": to_dict(trained_vae.config),
        "latent": to_dict(trained_vae.latent),
        "preset": ckpt.read_config(ckpt.weights_folder(vae_run))["task_config"].get("preset"),
    }
    for module in (drm_modules["encoder"], trained_vae.model):
        module.requires_grad_(False).eval()
    return FrozenParts(
        first_stage=FirstStage(trained_vae.model, trained_vae.latent.scaling_factor, quantize),
        encoder=drm_modules["encoder"],
        vae_config=vae_saved,
        drm_config={"model": drm_saved["model"], "preset": drm_saved.get("preset")},
    )


def check_geometry(model: LDMConfig, vae_model: dict[str, Any], ldrm: LDRMConfig) -> None:
    """The training patch must be the VAE's face size and fit the U-Net's downsampling."""
    if model.patch_size != vae_model["image_size"]:
        raise DrbfrError(
            f"the ldm preset trains on {model.patch_size} px patches but the VAE codes "
            f"{vae_model['image_size']} px faces: pick presets of the same size"
        )
    vae_factor = 2 ** (len(vae_model["block_out_channels"]) - 1)
    if (model.patch_size // vae_factor) % ldrm.downsampling:
        raise DrbfrError(
            f"the {model.patch_size // vae_factor} px latent does not fit the U-Net's "
            f"{ldrm.downsampling}x downsampling"
        )


def condition(
    parts: FrozenParts, lq: torch.Tensor, *, use_dr: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(f_LQ = s E_VAE(y), f_DR = E_DR(y) or None) of LQ images in [-1, 1] (Eq. 8)."""
    with torch.no_grad():
        f_lq = parts.first_stage.encode(lq)
        f_dr = parts.encoder(lq) if use_dr else None
    return f_lq, f_dr


_INFERENCE_ONLY = (
    "sampler", "steps", "start_t", "tem_t", "guidance_scale", "samples", "decode_quantized",
)  # fmt: skip


class LDMTask:
    """TrainTask for the LDRM denoiser, conditioned on the frozen DRM and VAE."""

    name = STAGE
    # paths may move; the sampling defaults and the decoding choice do not touch training
    resume_may_change = frozenset({"data", "drm", "vae"} | {f"model.{k}" for k in _INFERENCE_ONLY})

    def __init__(
        self, config: LDMTaskConfig, faces: list | None = None, parts: FrozenParts | None = None
    ) -> None:
        self.settings, self.model_config = config, config.model
        self.parts = parts or load_frozen_parts(
            Path(config.drm), Path(config.vae), quantize=config.model.decode_quantized
        )
        vae_model, drm_model = self.parts.vae_config["model"], self.parts.drm_config["model"]
        self.network_config = config.model.network(
            latent_channels=vae_model["latent_channels"],
            dr_tokens=drm_model["tokens"],
            dr_width=drm_model["token_dim"],
            use_dr=config.use_dr,
        )
        check_geometry(config.model, vae_model, self.network_config)
        sides = config.model.face_sides
        self.faces = faces if faces is not None else load_faces(Path(config.data), sides[1])
        self.alphas_cumprod = config.model.schedule().alphas_cumprod().float()
        with torch.random.fork_rng():  # weights depend on the seed only, not on global state
            torch.manual_seed(config.seed)
            ldrm = LDRM(self.network_config, config.model.schedule())
            self._modules: dict[str, nn.Module] = {"ldrm": ldrm}

    def modules(self) -> dict[str, nn.Module]:
        return self._modules

    def dataset(self) -> RestorationPairDataset:
        cfg = self.model_config
        return RestorationPairDataset(
            self.faces,
            patch_size=cfg.patch_size,
            sides=cfg.face_sides,
            ranges=cfg.ranges(),
            seed=self.settings.seed,
            color_augment=cfg.color_augment,
        )

    def _frozen_on(self, device: torch.device) -> FrozenParts:
        """The frozen parts on `device` (moved once)."""
        if next(self.parts.encoder.parameters()).device != device:
            self.parts.encoder.to(device)
            self.parts.first_stage.model.to(device)
        return self.parts

    def compute_loss(
        self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor], step: int
    ) -> LossOutput:
        hq, lq = batch["hq"], batch["lq"]
        parts = self._frozen_on(hq.device)
        f_lq, f_dr = condition(parts, lq, use_dr=self.settings.use_dr)
        with torch.no_grad():
            z0 = parts.first_stage.encode(hq)
        noise = torch.randn_like(z0)
        t = torch.randint(0, len(self.alphas_cumprod), (z0.shape[0],), device=z0.device)
        abar = self.alphas_cumprod.to(z0.device)[t][:, None, None, None]
        z_t = abar.sqrt() * z0 + (1 - abar).sqrt() * noise
        keep = torch.rand(z0.shape[0], device=z0.device) >= self.model_config.condition_dropout
        eps = modules["ldrm"](z_t, t, f_lq, f_dr, keep)
        loss = F.mse_loss(eps.float(), noise)
        return LossOutput(total=loss, terms={"eps_mse": float(loss.detach())})

    @torch.no_grad()
    def sample_grid(
        self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Rows: LQ, restored (the preset's default sampling, seed 0..n-1), HQ; up to 6 items."""
        hq, lq = batch["hq"][:6], batch["lq"][:6]
        restored = restore_faces(
            modules["ldrm"],
            self._frozen_on(hq.device),
            lq,
            seeds=list(range(lq.shape[0])),
            schedule=self.model_config.schedule(),
            sampling=self.model_config.sampling(),
            use_dr=self.settings.use_dr,
        )
        rows = [torch.cat(list(t), dim=2) for t in (lq, restored, hq)]
        return ((torch.cat(rows, dim=1) + 1) / 2).clamp(0, 1)

    def config(self) -> dict[str, Any]:
        return {
            "stage": STAGE,
            "preset": self.settings.preset,
            "data": self.settings.data,
            "drm": self.settings.drm,
            "vae": self.settings.vae,
            "use_dr": self.settings.use_dr,
            "seed": self.settings.seed,
            "model": to_dict(self.model_config),
            "network": to_dict(self.network_config),
            "frozen": {"drm": self.parts.drm_config, "vae": self.parts.vae_config},
        }


@torch.no_grad()
def restore_faces(
    ldrm: nn.Module,
    parts: FrozenParts,
    lq: torch.Tensor,
    *,
    seeds: list[int],
    schedule: NoiseSchedule,
    sampling: SamplingConfig,
    use_dr: bool = True,
) -> torch.Tensor:
    """Restored faces in [-1, 1] of LQ faces in [-1, 1]: condition, sample, texture pass, decode."""
    was_training = ldrm.training
    ldrm.eval()
    f_lq, f_dr = condition(parts, lq, use_dr=use_dr)
    f_lq = f_lq.float()  # the sampler's state stays fp32 under autocast; the networks need not
    denoiser = LDRMDenoiser(_unwrap(ldrm), f_lq, f_dr)
    latents = restore_latents(denoiser, f_lq, seeds, schedule, sampling)
    ldrm.train(was_training)
    return parts.first_stage.decode(latents)


def _unwrap(module: nn.Module) -> LDRM:
    """The LDRM inside a DDP / compiled wrapper."""
    while not isinstance(module, LDRM):
        module = getattr(module, "module", None) or module._orig_mod
    return module


# ---------------------------------------------------------------------------------------------
# Loading a trained LDRM


def network_config_from_saved(saved: dict[str, Any]) -> LDRMConfig:
    return from_dict(LDRMConfig, saved["network"], source="LDM checkpoint network config")


def load_ldm(run_dir: Path, *, ema: bool | None = None) -> tuple[LDRM, dict[str, Any]]:
    """The LDRM of a run in eval mode (EMA weights when kept, unless ema=False) and its config."""
    states, saved = load_modules(run_dir)
    if saved.get("stage") != STAGE:
        raise DrbfrError(f"{run_dir}: not an LDM run (stage {saved.get('stage')!r})")
    if ema is not False:
        try:
            states, _ = load_modules(run_dir, ema=True)
        except DrbfrError:
            if ema:
                raise
    schedule = from_dict(LDMConfig, saved["model"], source="LDM checkpoint model").schedule()
    model = LDRM(network_config_from_saved(saved), schedule)
    try:
        model.load_state_dict(states["ldrm"])
    except (KeyError, RuntimeError) as exc:
        first_line = str(exc).splitlines()[0]
        raise DrbfrError(
            f"{run_dir}: ldrm weights do not match its config ({first_line})"
        ) from None
    return model.eval(), saved
