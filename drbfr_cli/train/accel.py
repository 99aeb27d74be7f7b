"""The accelerate side of the loop: one Accelerator per run, and collective helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs

from drbfr_cli import devices
from drbfr_cli.errors import DrbfrError

if TYPE_CHECKING:
    from drbfr_cli.train.task import LoopConfig


def _on_cpu(loop: LoopConfig) -> bool:
    """Train on the CPU when asked, or when the machine has no accelerator device."""
    if loop.cpu:
        return True
    return not devices.has_accelerator()


def make_accelerator(loop: LoopConfig) -> Accelerator:
    """An Accelerator for this run's device, precision and gradient accumulation."""
    # A process may train several times (tests, scripts): accelerate keeps its device, precision
    # and accumulation settings in process-wide state, cleared here between runs. A distributed
    # process group (torchrun, accelerate launch) is kept: it belongs to the whole process.
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    AcceleratorState._reset_state(reset_partial_state=not distributed)
    GradientState._reset_state()
    cpu = _on_cpu(loop)
    if loop.mixed_precision == "fp16" and cpu:
        raise DrbfrError("fp16 mixed precision needs a GPU; use bf16 or no on the CPU")
    # cpu=True also selects gloo for CPU processes started by torchrun / accelerate launch
    ddp = DistributedDataParallelKwargs(find_unused_parameters=loop.find_unused_parameters)
    return Accelerator(
        cpu=cpu,
        mixed_precision=loop.mixed_precision,
        gradient_accumulation_steps=loop.grad_accum,
        kwargs_handlers=[ddp],
    )


def mean_over_ranks(accelerator: Accelerator, terms: dict[str, float]) -> dict[str, float]:
    """Every rank's terms averaged (all ranks call this at the same steps, same term names)."""
    keys = sorted(terms)
    values = torch.tensor([terms[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    values = accelerator.reduce(values, reduction="mean")
    return dict(zip(keys, values.tolist(), strict=True))
