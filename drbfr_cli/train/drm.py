"""The DRM training stage: L_DR = L_recon + lambda1 L_contras + lambda2 L_distribution (Eq. 7).

With several processes the batch-level terms see the whole batch: the contrastive negatives
and the energy distance use every process's rows (gathered with gradients, `gather_rows`), so
8 processes of 64 pairs give each positive 511 negatives, as one process holding 512 would.
L_recon is per item, and DDP's gradient average makes it the whole batch's mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from drbfr_cli.choices import Ablation
from drbfr_cli.config import from_dict, to_dict
from drbfr_cli.errors import DrbfrError, load_strict
from drbfr_cli.nets.drm import DRMConfig, build_drm
from drbfr_cli.train.accel import gather_rows
from drbfr_cli.train.checkpoint import load_modules
from drbfr_cli.train.datasets import PatchPairDataset, load_faces
from drbfr_cli.train.loop import LossOutput
from drbfr_cli.train.losses import distribution_loss, info_nce, reconstruction_loss
from drbfr_cli.train.samples import image_rows


@dataclass(frozen=True)
class DRMTaskConfig:
    model: DRMConfig
    data: str
    preset: str
    ablation: Ablation = Ablation.NONE
    seed: int = 0


class DRMTask:
    """TrainTask for the DRM: E_DR, G_LQ and the projection head on patch pairs."""

    name = "drm"
    resume_may_change = frozenset({"data"})

    def __init__(self, config: DRMTaskConfig, faces: list | None = None) -> None:
        self.settings = config
        self.model_config = config.model
        self.faces = faces if faces is not None else load_faces(config.data, config.model.face_size)
        with torch.random.fork_rng():  # weights depend on the seed only, not on global state
            torch.manual_seed(config.seed)
            networks = build_drm(config.model)
        if config.ablation is Ablation.CL:
            networks.pop("generator")
        elif config.ablation is Ablation.REC:
            networks.pop("head")
        self._modules = networks

    def modules(self) -> dict[str, nn.Module]:
        return self._modules

    def dataset(self) -> PatchPairDataset:
        cfg = self.model_config
        return PatchPairDataset(
            self.faces, crop_size=cfg.crop_size, patch_size=cfg.patch_size, seed=self.settings.seed
        )

    def compute_loss(
        self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor], step: int
    ) -> LossOutput:
        cfg = self.model_config
        encoder = modules["encoder"]
        dr1, dr2 = encoder(batch["lq1"]), encoder(batch["lq2"])
        head = modules.get("head")
        terms = batch_terms(dr1, dr2, head, cfg.temperature)
        total = cfg.lambda_distribution * terms["distribution"]
        if "generator" in modules:
            terms["recon"] = reconstruction_loss(
                modules["generator"](batch["hq2"], dr1), batch["lq2"]
            )
            total = total + terms["recon"]
        if "contrastive" in terms:
            total = total + cfg.lambda_contrastive * terms["contrastive"]
        return LossOutput(total=total, terms={k: float(v.detach()) for k, v in terms.items()})

    @torch.no_grad()
    def sample_grid(
        self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """Rows: HQ patch r2, real LQ patch p2, G_LQ(r2, f_DR(p1)) for up to 8 items."""
        if "generator" not in modules:
            return None
        n = min(8, batch["lq1"].shape[0])
        fake = modules["generator"](batch["hq2"][:n], modules["encoder"](batch["lq1"][:n]))
        return image_rows(batch["hq2"][:n], batch["lq2"][:n], fake)

    def config(self) -> dict[str, Any]:
        return {
            "stage": "drm",
            "preset": self.settings.preset,
            "ablation": self.settings.ablation.value,
            "data": self.settings.data,
            "seed": self.settings.seed,
            "model": to_dict(self.model_config),
        }


def batch_terms(
    dr1: torch.Tensor,
    dr2: torch.Tensor,
    head: nn.Module | None,
    temperature: float,
    reference: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The batch-level terms of Eq. 7 over every process's rows: the energy distance of all
    f_DR (Eq. 6) and, with a projection head, InfoNCE (Eq. 5) with every other item as a
    negative. `reference`: this process's N(0, I) samples (one per row of cat(dr1, dr2);
    drawn here when None)."""
    local = torch.cat([dr1, dr2])
    if reference is None:
        reference = torch.randn(local.flatten(1).shape, device=local.device)
    terms = {
        "distribution": distribution_loss(gather_rows(local), reference=gather_rows(reference))
    }
    if head is not None:
        z1, z2 = gather_rows(head(dr1)), gather_rows(head(dr2))
        terms["contrastive"] = info_nce(z1, z2, temperature)
    return terms


def model_config_from_saved(saved: dict[str, Any]) -> DRMConfig:
    """The DRMConfig stored with a DRM checkpoint."""
    return from_dict(DRMConfig, saved["model"], source="DRM checkpoint config")


def load_drm(run_dir: Path) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """The DRM networks of a run (final weights, else the latest checkpoint), in eval mode,
    and the task config saved with them."""
    states, saved = load_modules(run_dir)
    if saved.get("stage") != "drm":
        raise DrbfrError(f"{run_dir}: not a DRM run (stage {saved.get('stage')!r})")
    networks = build_drm(model_config_from_saved(saved))
    modules = {name: networks[name] for name in states}
    for name, module in modules.items():
        what = f"{name} weights do not match its config"
        load_strict(module, states[name], what=what, where=run_dir)
        module.eval()
    return modules, saved
