"""The LDRM training stage: L = ||eps - eps_theta(z_t, f_LQ, f_DR, t)||^2 (Eq. 8).

Per step: HQ patches x and their Eq. (11) degradations y; z_0 = s E_VAE(x) and f_LQ = s E_VAE(y)
with the frozen autoencoder (s its latent scaling factor), f_DR = E_DR(y) with the frozen DRM;
t ~ U{0, T-1}, z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps; a share `condition_dropout` of
the items has its conditions dropped (the unconditional model of the texture pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from drbfr_cli.config import from_dict, to_dict
from drbfr_cli.diffusion.pipeline import FrozenParts, condition, restore_faces
from drbfr_cli.errors import DrbfrError
from drbfr_cli.nets.autoencoder import FirstStage
from drbfr_cli.nets.drm import DRMConfig
from drbfr_cli.nets.ldrm import LDRM, LDRMConfig
from drbfr_cli.presets import INFERENCE_ONLY_FIELDS, LDMConfig, VAEConfig
from drbfr_cli.train import checkpoint as ckpt
from drbfr_cli.train.checkpoint import load_modules
from drbfr_cli.train.datasets import RestorationPairDataset, load_faces
from drbfr_cli.train.drm import load_drm
from drbfr_cli.train.loop import LossOutput
from drbfr_cli.train.vae import load_vae

STAGE = "ldm"


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


def check_geometry(model: LDMConfig, vae: VAEConfig, ldrm: LDRMConfig) -> None:
    """The training patch must be the VAE's face size and fit the U-Net's downsampling."""
    patch = model.data.patch_size
    if patch != vae.image_size:
        raise DrbfrError(
            f"the ldm preset trains on {patch} px patches but the VAE codes "
            f"{vae.image_size} px faces: pick presets of the same size"
        )
    latent_side = patch // vae.network.downsampling
    if latent_side % ldrm.downsampling:
        raise DrbfrError(
            f"the {latent_side} px latent does not fit the U-Net's "
            f"{ldrm.downsampling}x downsampling"
        )


class LDMTask:
    """TrainTask for the LDRM denoiser, conditioned on the frozen DRM and VAE."""

    name = STAGE
    # paths may move; the sampling defaults and the decoding choice do not touch training
    resume_may_change = frozenset(
        {"data", "drm", "vae"} | {f"model.{k}" for k in INFERENCE_ONLY_FIELDS}
    )

    def __init__(
        self, config: LDMTaskConfig, faces: list | None = None, parts: FrozenParts | None = None
    ) -> None:
        self.settings, self.model_config = config, config.model
        self.parts = parts or load_frozen_parts(
            Path(config.drm), Path(config.vae), quantize=config.model.decode_quantized
        )
        vae = from_dict(VAEConfig, self.parts.vae_config["model"], source="frozen VAE")
        drm = from_dict(DRMConfig, self.parts.drm_config["model"], source="frozen DRM")
        self.network_config = config.model.network_for(
            latent_channels=vae.network.latent_channels,
            dr_tokens=drm.tokens,
            dr_width=drm.token_dim,
            use_dr=config.use_dr,
        )
        check_geometry(config.model, vae, self.network_config)
        sides = config.model.data.face_sides
        self.faces = faces if faces is not None else load_faces(config.data, sides[1])
        with torch.random.fork_rng():  # weights depend on the seed only, not on global state
            torch.manual_seed(config.seed)
            ldrm = LDRM(self.network_config)
            self._modules: dict[str, nn.Module] = {"ldrm": ldrm}

    def modules(self) -> dict[str, nn.Module]:
        return self._modules

    def dataset(self) -> RestorationPairDataset:
        cfg = self.model_config
        return RestorationPairDataset(
            self.faces,
            patch_size=cfg.data.patch_size,
            sides=cfg.data.face_sides,
            ranges=cfg.degradations,
            seed=self.settings.seed,
            color_augment=cfg.data.color_augment,
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
        cond = condition(parts, lq, use_dr=self.settings.use_dr)
        with torch.no_grad():
            z0 = parts.first_stage.encode(hq)
        schedule = self.model_config.schedule
        noise = torch.randn_like(z0)
        t = torch.randint(0, schedule.num_train_timesteps, (z0.shape[0],), device=z0.device)
        z_t = schedule.add_noise(z0, noise, t)
        keep = torch.rand(z0.shape[0], device=z0.device) >= self.model_config.condition_dropout
        eps = modules["ldrm"](z_t, t, cond.f_lq, cond.f_dr, keep, schedule.abar_at(t))
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
            schedule=self.model_config.schedule,
            sampling=self.model_config.sampling,
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
    model = LDRM(network_config_from_saved(saved))
    try:
        model.load_state_dict(states["ldrm"])
    except (KeyError, RuntimeError) as exc:
        first_line = str(exc).splitlines()[0]
        raise DrbfrError(
            f"{run_dir}: ldrm weights do not match its config ({first_line})"
        ) from None
    return model.eval(), saved
