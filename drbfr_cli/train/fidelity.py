"""The fidelity-network stage: F (nets/fidelity.py) regresses HQ patches from their Eq. (11)
degradations under an L1 loss, min E |F(y) - x|_1 (the per-pixel median of p(x | y); L1
rather than L2 trains restoration networks to higher PSNR in practice: EDSR, Lim et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from drbfr_cli.bundle import MANIFEST, load_bundle_fidelity, read_manifest, read_part
from drbfr_cli.config import from_dict, to_dict
from drbfr_cli.errors import DrbfrError, load_strict
from drbfr_cli.nets.fidelity import FidelityNet, build_fidelity
from drbfr_cli.presets import FidelityModelConfig
from drbfr_cli.train.checkpoint import RunStage, load_run_module
from drbfr_cli.train.datasets import RestorationPairDataset, load_faces
from drbfr_cli.train.loop import LossOutput
from drbfr_cli.train.samples import image_rows

STAGE = "fidelity"
RUN = RunStage(STAGE, module="fidelity", label="a fidelity run")


@dataclass(frozen=True)
class FidelityTaskConfig:
    model: FidelityModelConfig
    data: str
    preset: str
    seed: int = 0
    init_from: str | None = None
    """A bundle carrying F, or a fidelity run, whose weights start this run (new optimizer)."""


class FidelityTask:
    """TrainTask for F on pairs of HQ / LQ patches."""

    name = STAGE
    resume_may_change = frozenset({"data"})

    def __init__(self, config: FidelityTaskConfig, faces: list | None = None) -> None:
        self.settings = config
        self.model_config = config.model
        sides = config.model.data.face_sides
        self.faces = faces if faces is not None else load_faces(config.data, sides[1])
        with torch.random.fork_rng():  # weights depend on the seed only, not on global state
            torch.manual_seed(config.seed)
            self._modules: dict[str, nn.Module] = {"fidelity": build_fidelity(config.model.network)}
        if config.init_from:
            start_weights(self._modules["fidelity"], Path(config.init_from))

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
            mild=cfg.mild_degradations,
            mild_fraction=cfg.mild_fraction,
        )

    def compute_loss(
        self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor], step: int
    ) -> LossOutput:
        restored = modules["fidelity"](batch["lq"])
        l1 = (restored - batch["hq"]).abs().mean()
        with torch.no_grad():  # PSNR on [0, 1] images: [-1, 1] halves the error
            mse = ((restored.clamp(-1, 1) - batch["hq"]) / 2).pow(2).flatten(1).mean(1)
            input_mse = ((batch["lq"] - batch["hq"]) / 2).pow(2).flatten(1).mean(1)
            gain = 10 * torch.log10(input_mse.clamp_min(1e-10) / mse.clamp_min(1e-10))
        return LossOutput(
            total=l1, terms={"l1": float(l1.detach()), "psnr_gain": float(gain.mean())}
        )

    @torch.no_grad()
    def sample_grid(
        self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Rows: LQ, F(LQ), HQ for up to 8 items."""
        n = min(8, batch["lq"].shape[0])
        lq, hq = batch["lq"][:n], batch["hq"][:n]
        return image_rows(lq, modules["fidelity"](lq), hq)

    def config(self) -> dict[str, Any]:
        return {
            "stage": STAGE,
            "preset": self.settings.preset,
            "data": self.settings.data,
            "seed": self.settings.seed,
            "init_from": self.settings.init_from,
            "model": to_dict(self.model_config),
        }


def load_fidelity(run_dir: Path, *, ema: bool = True) -> tuple[FidelityNet, dict[str, Any]]:
    """F of a run (EMA weights when the run kept them; final, else the latest checkpoint), in
    eval mode, and the task config saved with it."""
    return load_run_module(run_dir, RUN, _build_fidelity, ema=ema)


def _build_fidelity(saved: dict[str, Any]) -> FidelityNet:
    model = from_dict(FidelityModelConfig, saved["model"], source="fidelity checkpoint config")
    return build_fidelity(model.network)


def start_weights(network: FidelityNet, source: Path) -> None:
    """Load F's weights from a bundle that carries F (its `fidelity` part) or a fidelity run
    (its EMA when kept); a one-line error when the shapes differ."""
    if (source / MANIFEST).is_file():
        manifest = read_manifest(source)
        if "fidelity" not in manifest:
            raise DrbfrError(f"{source}: this bundle carries no fidelity network")
        state = read_part(source, manifest, "fidelity")
    else:
        state = load_fidelity(source)[0].state_dict()
    load_strict(network, state, what="F's weights do not fit this preset", where=source)


def load_frozen_fidelity(source: Path) -> FidelityNet:
    """F of a bundle that carries one, or of a fidelity run (its EMA when kept), frozen and in
    eval mode: the cleaner of the LQ patches an LDRM trains on (train/ldm.py)."""
    if (source / MANIFEST).is_file():
        return load_bundle_fidelity(source)
    return load_fidelity(source)[0].requires_grad_(False).eval()
