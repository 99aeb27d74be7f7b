"""What the training loop and a stage agree on: how to train (`LoopConfig`), what a stage
provides (`TrainTask`) and what its loss step returns (`LossOutput`). train/loop.py runs them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from drbfr_cli.errors import DrbfrError


@dataclass(frozen=True)
class LoopConfig:
    """How to train (the same for every stage). See the module docstring for the conventions."""

    steps: int
    """Optimizer steps in all (a resumed run may raise it to train longer)."""
    batch_size: int
    """Items per micro-batch on each process."""
    lr: float
    """AdamW learning rate after warm-up."""
    weight_decay: float = 0.0
    warmup_steps: int = 0
    """Linear warm-up from 0 to `lr` over this many steps, then constant."""
    cooldown_steps: int = 0
    """Linear decay of the lr to 0 over the last this-many steps (warm-up, stable, decay:
    Hu et al. 2024, MiniCPM); 0 keeps it constant to the end."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this (None: no clipping; the norm is logged either way)."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """fp16 needs a GPU (with a gradient scaler); bf16 also runs on the CPU."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    seed: int = 0
    num_workers: int = 0
    """DataLoader worker processes per training process."""
    log_every: int = 10
    """Steps between lines of metrics.jsonl (each the mean over those steps and all ranks)."""
    sample_every: int = 0
    """Steps between sample grids (0: never)."""
    checkpoint_every: int = 500
    """Steps between checkpoints (0: only at the end); the last step is always checkpointed."""
    keep_checkpoints: int = 2
    ema_decay: float | None = None
    """Keep an EMA copy of every module with this decay (None: no EMA)."""
    cpu: bool = False
    """Train on the CPU even when a GPU is present (without a GPU the CPU is used anyway)."""
    find_unused_parameters: bool = False
    """Let DDP tolerate parameters that some steps leave without gradient (slower; only
    needed in multi-process runs whose loss skips part of a module)."""

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise DrbfrError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.cooldown_steps <= self.steps:
            raise DrbfrError(
                f"cooldown_steps must lie in [0, steps={self.steps}], got {self.cooldown_steps}"
            )
        for name in ("warmup_steps", "num_workers", "sample_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise DrbfrError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.lr > 0:
            raise DrbfrError(f"lr must be positive, got {self.lr}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise DrbfrError(f"mixed_precision must be no, fp16 or bf16: {self.mixed_precision}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise DrbfrError(f"ema_decay must lie in (0, 1), got {self.ema_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise DrbfrError(f"grad_clip must be positive or None, got {self.grad_clip}")


@dataclass(frozen=True)
class ParamGroup:
    """Modules that AdamW steps with their own betas and gradient clipping (e.g. a GAN's
    discriminator). Adam's moments are per parameter, so a group is the same update as an
    optimizer of its own; one optimizer keeps one fp16 loss-scaler step for all groups."""

    name: str
    modules: tuple[str, ...]
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | Literal["loop"] | None = "loop"
    """Clip this group's gradient norm to this (None: no clipping; loop: LoopConfig.grad_clip)."""


@dataclass(frozen=True)
class LossOutput:
    """A training loss: `total` to backpropagate, `terms` (detached floats) to log."""

    total: torch.Tensor
    terms: dict[str, float]


class TrainTask(Protocol):
    """One training stage, as the loop sees it.

    Optional attribute: `resume_may_change: frozenset[str]`, dotted keys of `config()` that a
    resumed run may change (e.g. a data path); every other key must match the saved config.
    Optional method: `param_groups() -> list[ParamGroup]`, every module in exactly one group
    (default: one group of all modules with the loop's settings); the first group's gradient
    norm is logged as `grad_norm`, the others' as `grad_norm_<name>`.
    """

    name: str

    def modules(self) -> dict[str, torch.nn.Module]:
        """The trained modules, saved in checkpoints by name."""
        ...

    def dataset(self) -> torch.utils.data.Dataset:
        """Items are dict[str, Tensor]; map-style or iterable."""
        ...

    def compute_loss(
        self, modules: dict[str, torch.nn.Module], batch: dict[str, torch.Tensor], step: int
    ) -> LossOutput:
        """The loss of one micro-batch at optimizer step `step` (1-based)."""
        ...

    def sample_grid(
        self, modules: dict[str, torch.nn.Module], batch: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """A float 3xHxW image in [0, 1] showing what the modules do, or None."""
        ...

    def config(self) -> dict[str, Any]:
        """The task's own config (JSON-serialisable), saved with every checkpoint."""
        ...
