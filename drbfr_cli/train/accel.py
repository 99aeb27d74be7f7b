"""The accelerate side of the loop: one Accelerator per run, and collective helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.distributed.nn as dist_nn
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


def resolve_mixed_precision(requested: str, *, device_type: str, bf16_supported: bool) -> str:
    """The mixed precision a run trains at: `auto` is bf16 on a CUDA GPU that supports it, fp16
    (with loss scaling) on other CUDA GPUs, and no (fp32) elsewhere; other values stay."""
    if requested != "auto":
        return requested
    if device_type != "cuda":
        return "no"
    return "bf16" if bf16_supported else "fp16"


def training_mixed_precision(requested: str, *, cpu: bool = False) -> str:
    """`resolve_mixed_precision` on this machine (the device a run without --cpu trains on)."""
    on_cuda = not cpu and devices.cuda_available()
    bf16 = on_cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    return resolve_mixed_precision(
        requested, device_type="cuda" if on_cuda else "cpu", bf16_supported=bf16
    )


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


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's rows of `tensor` concatenated in rank order (the tensor itself with one
    process); every process must pass the same shape.

    Gradients reach each process's own rows: torch.distributed.nn's all_gather sums, in its
    backward, what every process's loss asks of those rows. When every process computes the
    same loss L on the gathered rows, a process's rows get W * dL/drow; DDP then averages the
    parameter gradients over the W processes, so they are those of L on the whole batch.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return torch.cat(dist_nn.all_gather(tensor.contiguous()))
