"""The LDRM training stage: L = ||eps - eps_theta(z_t, f_LQ, f_DR, t)||^2 (Eq. 8).

Per step: HQ patches x and their Eq. (11) degradations y; z_0 = s E_VAE(x) and f_LQ = s E_VAE(y)
with the frozen autoencoder (s its latent scaling factor), f_DR = E_DR(y) with the frozen DRM;
t ~ U{0, T-1}, z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps; a share `condition_dropout` of
the items has its conditions dropped (the unconditional model of the texture pass).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from drbfr_cli import weights
from drbfr_cli.bundle import (
    MANIFEST,
    denoiser_part,
    load_bundle_encoder,
    read_manifest,
    read_part,
)
from drbfr_cli.choices import FirstStageKind
from drbfr_cli.config import from_dict, to_dict
from drbfr_cli.diffusion.pipeline import FrozenParts, condition, restore_faces
from drbfr_cli.errors import DrbfrError, load_strict
from drbfr_cli.nets.autoencoder import FirstStage
from drbfr_cli.nets.drm import DRMConfig
from drbfr_cli.nets.fidelity import fidelity_output
from drbfr_cli.nets.ldrm import LDRM, LDRMConfig
from drbfr_cli.nets.taef2 import (
    DECODER_WEIGHTS,
    ENCODER_WEIGHTS,
    TAEF2FirstStage,
    load_taef2,
    shipped_latent_stats,
)
from drbfr_cli.presets import (
    INFERENCE_ONLY_FIELDS,
    FirstStageGeometry,
    LDMConfig,
    first_stage_geometry,
)
from drbfr_cli.train import checkpoint as ckpt
from drbfr_cli.train.datasets import RestorationPairDataset, load_faces
from drbfr_cli.train.drm import load_drm
from drbfr_cli.train.fidelity import load_frozen_fidelity
from drbfr_cli.train.loop import LossOutput
from drbfr_cli.train.samples import image_rows
from drbfr_cli.train.vae import load_vae

STAGE = "ldm"
RUN = ckpt.RunStage(STAGE, module="ldrm", label="an LDM run")


@dataclass(frozen=True)
class LDMTaskConfig:
    model: LDMConfig
    data: str
    preset: str
    drm: str
    """The frozen DRM's run folder."""
    vae: str = ""
    """The frozen VQ autoencoder's run folder (first_stage vq; unused for taef2)."""
    use_dr: bool = True
    """False: the paper's DR-None ablation."""
    seed: int = 0
    weights_dir: str | None = None
    """Where registry weights (TAEF2) are looked for first."""
    init_from: str | None = None
    """A bundle or LDM run whose denoiser weights start this run (fine-tuning; the optimizer
    starts afresh)."""
    fidelity: str | None = None
    """A bundle carrying F, or a fidelity run, whose frozen F cleans every LQ patch before it
    conditions the LDRM: the LDRM then learns on what it restores in a bundle with that F."""


def load_frozen_encoder(source: Path) -> tuple[nn.Module, dict[str, Any]]:
    """E_DR, frozen, and its config record ({"model", "preset"}) from a DRM run or a bundle (so
    training continues from a shipped model when its DRM run is gone)."""
    if (source / MANIFEST).is_file():
        return load_bundle_encoder(source)
    drm_modules, drm_saved = load_drm(source)
    encoder = drm_modules["encoder"].requires_grad_(False).eval()
    return encoder, {"model": drm_saved["model"], "preset": drm_saved.get("preset")}


def load_frozen_parts(
    drm_run: Path,
    vae_run: Path | None,
    *,
    first_stage: FirstStageKind = FirstStageKind.VQ,
    quantize: bool = True,
    weights_dir: Path | None = None,
) -> FrozenParts:
    """E_DR of a DRM run and the first stage, frozen: the VAE (with its latent scaling) of a VAE
    run (`quantize`: whether decoding goes through the codebook), or the pretrained TAEF2."""
    encoder, drm_config = load_frozen_encoder(drm_run)
    if first_stage is FirstStageKind.TAEF2:
        codec = load_taef2(weights_dir, shipped_latent_stats())
        return FrozenParts(codec, encoder, taef2_record(codec), drm_config)
    if vae_run is None:
        raise DrbfrError("the vq first stage needs the run folder of a trained VAE (--vae)")
    trained_vae = load_vae(vae_run)
    if trained_vae.latent is None:
        raise DrbfrError(f"{vae_run}: no latent scaling factor (finish the VAE run first)")
    vae_saved = {
        "model": to_dict(trained_vae.config),
        "latent": to_dict(trained_vae.latent),
        "preset": ckpt.read_config(ckpt.weights_folder(vae_run))["task_config"].get("preset"),
    }
    trained_vae.model.requires_grad_(False).eval()
    return FrozenParts(
        first_stage=FirstStage(trained_vae.model, trained_vae.latent.scaling_factor, quantize),
        encoder=encoder,
        vae_config=vae_saved,
        drm_config=drm_config,
    )


def check_geometry(model: LDMConfig, first: FirstStageGeometry, ldrm: LDRMConfig) -> None:
    """The training patch must suit the first stage (a VQ autoencoder's face size, or a
    multiple of TAEF2's downsampling) and its latent the U-Net's downsampling."""
    patch = model.data.patch_size
    if first.fixed_patch and patch != first.face_size:
        raise DrbfrError(
            f"the ldm preset trains on {patch} px patches but the VAE codes "
            f"{first.face_size} px faces: pick presets of the same size"
        )
    if patch % first.downsampling:
        raise DrbfrError(f"patch_size {patch} is not a multiple of {first.downsampling}")
    latent_side = patch // first.downsampling
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
        {"data", "drm", "vae", "weights_dir", "init_from", "fidelity"}
        | {f"model.{k}" for k in INFERENCE_ONLY_FIELDS}
    )

    def __init__(
        self, config: LDMTaskConfig, faces: list | None = None, parts: FrozenParts | None = None
    ) -> None:
        self.settings, self.model_config = config, config.model
        self.parts = parts or load_frozen_parts(
            Path(config.drm),
            Path(config.vae) if config.vae else None,
            first_stage=config.model.first_stage,
            quantize=config.model.decode_quantized,
            weights_dir=Path(config.weights_dir) if config.weights_dir else None,
        )
        geometry = first_stage_geometry(self.parts.vae_config)
        drm = from_dict(DRMConfig, self.parts.drm_config["model"], source="frozen DRM")
        self.network_config = config.model.network_for(
            latent_channels=geometry.latent_channels,
            dr_tokens=drm.tokens,
            dr_width=drm.token_dim,
            use_dr=config.use_dr,
        )
        check_geometry(config.model, geometry, self.network_config)
        sides = config.model.data.face_sides
        self.faces = faces if faces is not None else load_faces(config.data, sides[1])
        with torch.random.fork_rng():  # weights depend on the seed only, not on global state
            torch.manual_seed(config.seed)
            ldrm = LDRM(self.network_config)
            self._modules: dict[str, nn.Module] = {"ldrm": ldrm}
        if config.init_from:
            load_denoiser_weights(ldrm, Path(config.init_from))
        self.fidelity = load_frozen_fidelity(Path(config.fidelity)) if config.fidelity else None

    def modules(self) -> dict[str, nn.Module]:
        return self._modules

    def dataset(self) -> Dataset:
        """Pairs of HQ / LQ patches; with TAEF2 also their latents, encoded where the items are
        made (data-loader workers), so encoding overlaps the denoiser's step."""
        cfg = self.model_config
        pairs = RestorationPairDataset(
            self.faces,
            patch_size=cfg.data.patch_size,
            sides=cfg.data.face_sides,
            ranges=cfg.degradations,
            seed=self.settings.seed,
            color_augment=cfg.data.color_augment,
        )
        if self.fidelity is not None:
            pairs = CleanedPairs(pairs, self.fidelity, flip=cfg.sampling.fidelity_flip)
        if cfg.first_stage is FirstStageKind.TAEF2:
            latents = LatentPairs(pairs, self.parts.first_stage)
            if cfg.pair_reuse > 1:
                return ReplayPairs(latents, reuse=cfg.pair_reuse, pool_size=cfg.pair_pool)
            return latents
        return pairs

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
        cond = condition(parts, lq, use_dr=self.settings.use_dr, f_lq=batch.get("f_lq"))
        with torch.no_grad():
            z0 = batch["z0"] if "z0" in batch else parts.first_stage.encode(hq)
        schedule = self.model_config.schedule
        noise = torch.randn_like(z0)
        t_end = training_t_end(schedule.num_train_timesteps, self.model_config.train_t_max)
        t = torch.randint(0, t_end, (z0.shape[0],), device=z0.device)
        z_t = schedule.add_noise(z0, noise, t)
        keep = torch.rand(z0.shape[0], device=z0.device) >= self.model_config.condition_dropout
        eps = modules["ldrm"](z_t, t, cond.f_lq, cond.f_dr, keep, schedule.abar_at(t))
        loss = F.mse_loss(eps.float(), noise)
        return LossOutput(total=loss, terms={"eps_mse": float(loss.detach())})

    @torch.no_grad()
    def sample_grid(
        self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Rows: LQ (F's output when the run has F), restored (the preset's default sampling,
        seed 0..n-1), HQ; up to 6 items."""
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
        return image_rows(lq, restored, hq)

    def config(self) -> dict[str, Any]:
        return {
            "stage": STAGE,
            "preset": self.settings.preset,
            "data": self.settings.data,
            "drm": self.settings.drm,
            "vae": self.settings.vae,
            "use_dr": self.settings.use_dr,
            "seed": self.settings.seed,
            "weights_dir": self.settings.weights_dir,
            "init_from": self.settings.init_from,
            "fidelity": self.settings.fidelity,
            "model": to_dict(self.model_config),
            "network": to_dict(self.network_config),
            "frozen": {"drm": self.parts.drm_config, "vae": self.parts.vae_config},
        }


def training_t_end(num_train_timesteps: int, train_t_max: float) -> int:
    """One past the largest training timestep: t_max = round(train_t_max (T - 1)), the index
    that sampling's start_t maps to (diffusion/sampling.py run_timesteps)."""
    return round(train_t_max * (num_train_timesteps - 1)) + 1


class CleanedPairs(Dataset):
    """Items of a pair dataset with lq replaced by F(lq) (restore's `fidelity_output`, so the
    LDRM trains on the inputs it restores in a bundle with this F)."""

    def __init__(self, pairs: Dataset, fidelity: nn.Module, *, flip: bool) -> None:
        self.pairs, self.fidelity, self.flip = pairs, fidelity, flip

    def __len__(self) -> int:
        return len(self.pairs)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.pairs[index]
        with torch.no_grad():
            cleaned = fidelity_output(self.fidelity, item["lq"][None], flip=self.flip)[0]
        return {**item, "lq": cleaned}


class LatentPairs(Dataset):
    """Items of a pair dataset with their first-stage latents: hq, lq (images, for E_DR and
    sample grids), z0 = E(hq) and f_lq = E(lq). Encoding is deterministic, so an item is the
    same whichever process makes it."""

    def __init__(self, pairs: Dataset, first_stage: TAEF2FirstStage) -> None:
        self.pairs, self.first_stage = pairs, first_stage

    def __len__(self) -> int:
        return len(self.pairs)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.pairs[index]
        with torch.no_grad():
            latents = self.first_stage.encode(torch.stack([item["hq"], item["lq"]]))
        return {**item, "z0": latents[0], "f_lq": latents[1]}


class ReplayPairs(IterableDataset):
    """Endless items from a pool of encoded pairs, so each pair serves about `reuse` items.

    Each fresh pair of `pairs` (indices drawn at random) is handed out once and joins a pool
    of up to `pool_size` pairs (replacing a random one when full); `reuse - 1` items drawn
    from the pool follow it. The loss draws fresh (t, noise) for every item, so a reused pair
    is a new Eq. (8) sample of the same (z_0, f_LQ, f_DR). The first `min(pool_size, WARM)`
    items are all fresh, so early batches (and the sample grid) hold distinct pairs. Draws
    come from a generator seeded by torch's per-worker seed (batches.py, iterable datasets).
    """

    WARM = 32

    def __init__(self, pairs: Dataset, *, reuse: int, pool_size: int) -> None:
        if reuse < 1 or pool_size < 1:
            raise ValueError("reuse and pool_size must be at least 1")
        self.pairs, self.reuse, self.pool_size = pairs, reuse, pool_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng(torch.initial_seed() % 2**63)
        size = len(self.pairs)  # type: ignore[arg-type]
        warm = min(self.pool_size, self.WARM)
        pool: list[dict[str, torch.Tensor]] = []
        while True:
            item = self.pairs[int(rng.integers(size))]
            if len(pool) < self.pool_size:
                pool.append(item)
            else:
                pool[int(rng.integers(self.pool_size))] = item
            yield item
            if len(pool) < warm:
                continue
            for _ in range(self.reuse - 1):
                yield pool[int(rng.integers(len(pool)))]


def load_denoiser_weights(ldrm: LDRM, source: Path) -> None:
    """Start `ldrm` from the denoiser of a bundle (its EMA weights when kept) or of an LDM run;
    one-line error unless the two have the same shape."""
    if (source / MANIFEST).is_file():
        manifest = read_manifest(source)
        state = read_part(source, manifest, denoiser_part(manifest))
    else:
        state = load_ldm(source)[0].state_dict()
    load_strict(ldrm, state, what="its denoiser does not fit this preset's", where=source)


def taef2_record(codec: TAEF2FirstStage) -> dict[str, Any]:
    """How a run or bundle names its TAEF2 first stage: registry names, sha256, statistics."""
    return {
        "kind": FirstStageKind.TAEF2.value,
        "encoder": {"name": ENCODER_WEIGHTS, "sha256": weights.spec(ENCODER_WEIGHTS).sha256},
        "decoder": {"name": DECODER_WEIGHTS, "sha256": weights.spec(DECODER_WEIGHTS).sha256},
        "latent": to_dict(codec.stats),
    }


# ---------------------------------------------------------------------------------------------
# Loading a trained LDRM


def network_config_from_saved(saved: dict[str, Any]) -> LDRMConfig:
    return from_dict(LDRMConfig, saved["network"], source="LDM checkpoint network config")


def load_ldm(run_dir: Path, *, ema: bool = True) -> tuple[LDRM, dict[str, Any]]:
    """The LDRM of a run in eval mode (EMA weights when kept, unless ema=False) and its config."""
    return ckpt.load_run_module(run_dir, RUN, _build_ldrm, ema=ema)


def _build_ldrm(saved: dict[str, Any]) -> LDRM:
    return LDRM(network_config_from_saved(saved))
