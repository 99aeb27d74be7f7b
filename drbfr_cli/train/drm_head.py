"""The degradation-head stage: a small MLP on the frozen E_DR's tokens of a face's central
region regresses Eq. (11)'s four parameters (normalised, estimate.py) and the severity, the
LPIPS-Alex distance of the LQ region to its HQ region mapped to [0, 1]. Loss: L1 on the five
targets (the severity through a sigmoid). E_DR comes from a DRM run or a bundle and stays
frozen; its fingerprint is saved with the run so `drbfr export` attaches the head only to the
E_DR it was trained on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from drbfr_cli.choices import LpipsNet
from drbfr_cli.config import from_dict, to_dict
from drbfr_cli.estimate import FIELDS, encode_params, severity_target
from drbfr_cli.metrics.lpips import load_lpips
from drbfr_cli.nets.drm_head import DegradationHead
from drbfr_cli.presets import DRMHeadModelConfig
from drbfr_cli.train.checkpoint import RunStage, load_run_module
from drbfr_cli.train.datasets import DegradedCropDataset, load_faces
from drbfr_cli.train.ldm import load_frozen_encoder
from drbfr_cli.train.loop import LossOutput

STAGE = "drm_head"
RUN = RunStage(STAGE, module="head", label="a drm-head run")


@dataclass(frozen=True)
class DRMHeadTaskConfig:
    model: DRMHeadModelConfig
    data: str
    preset: str
    drm: str
    """The DRM run or bundle whose frozen E_DR feeds the head."""
    seed: int = 0
    weights_dir: str | None = None
    lpips_backbone: str | None = None
    """A torchvision AlexNet state dict for LPIPS (default: the registry's lpips-alexnet)."""


def encoder_fingerprint(encoder: nn.Module) -> str:
    """sha256 of E_DR's float32 weights in key order: which E_DR a head was trained on."""
    digest = hashlib.sha256()
    for key, tensor in sorted(encoder.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class DRMHeadTask:
    """TrainTask for the degradation head on degraded crops, E_DR and LPIPS frozen."""

    name = STAGE
    resume_may_change = frozenset({"data", "weights_dir", "lpips_backbone"})

    def __init__(self, config: DRMHeadTaskConfig, faces: list | None = None) -> None:
        self.settings = config
        self.encoder, drm = load_frozen_encoder(Path(config.drm))
        self.fingerprint = encoder_fingerprint(self.encoder)
        network = replace(
            config.model.network,
            tokens=drm["model"]["tokens"],
            token_dim=drm["model"]["token_dim"],
        )
        self.model_config = replace(config.model, network=network)
        size = network.region_size
        self.faces = faces if faces is not None else load_faces(config.data, size)
        backbone = Path(config.lpips_backbone) if config.lpips_backbone else None
        weights_dir = Path(config.weights_dir) if config.weights_dir else None
        self.lpips = load_lpips(LpipsNet.ALEX, weights_dir, torch.device("cpu"), backbone)
        self.lpips.requires_grad_(False)
        with torch.random.fork_rng():  # weights depend on the seed only, not on global state
            torch.manual_seed(config.seed)
            self._modules: dict[str, nn.Module] = {"head": DegradationHead(network)}

    def modules(self) -> dict[str, nn.Module]:
        return self._modules

    def dataset(self) -> DegradedCropDataset:
        cfg = self.model_config
        return DegradedCropDataset(
            self.faces,
            box=cfg.network.region,
            jitter=cfg.jitter,
            margin=cfg.margin,
            ranges=cfg.degradations,
            mild=cfg.mild_degradations,
            mild_fraction=cfg.mild_fraction,
            seed=self.settings.seed,
        )

    def targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """N x 5 targets in [0, 1]: the normalised parameters and the severity."""
        device = batch["lq"].device
        self.encoder.to(device)
        self.lpips.to(device)
        with torch.no_grad():
            distance = self.lpips(batch["lq"].float(), batch["hq"].float()).flatten()
        return torch.cat([encode_params(batch["params"]), severity_target(distance)[:, None]], 1)

    def compute_loss(
        self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor], step: int
    ) -> LossOutput:
        target = self.targets(batch)
        with torch.no_grad():
            tokens = self.encoder(batch["lq"].float())
        raw = modules["head"](tokens)
        predicted = torch.cat([raw[:, :4], raw[:, 4:].sigmoid()], dim=1)
        errors = (predicted - target).abs().mean(0)
        terms = {f"l1_{name}": float(e.detach()) for name, e in zip(FIELDS, errors, strict=True)}
        return LossOutput(total=errors.mean(), terms=terms)

    def sample_grid(self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor]) -> None:
        return None

    def config(self) -> dict[str, Any]:
        return {
            "stage": STAGE,
            "preset": self.settings.preset,
            "data": self.settings.data,
            "drm": self.settings.drm,
            "drm_fingerprint": self.fingerprint,
            "seed": self.settings.seed,
            "weights_dir": self.settings.weights_dir,
            "lpips_backbone": self.settings.lpips_backbone,
            "model": to_dict(self.model_config),
        }


def load_drm_head(run_dir: Path, *, ema: bool = True) -> tuple[DegradationHead, dict[str, Any]]:
    """The head of a run (its EMA when kept and `ema`), in eval mode, and its saved config."""
    head, saved = load_run_module(run_dir, RUN, _build_head, ema=ema)
    return head.requires_grad_(False), saved


def _build_head(saved: dict[str, Any]) -> DegradationHead:
    model = from_dict(DRMHeadModelConfig, saved["model"], source="drm-head checkpoint config")
    return DegradationHead(model.network)
