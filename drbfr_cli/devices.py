"""The one place that picks a device and a precision, and asks what accelerators exist.

Every other module receives a `torch.device` (or its name) chosen here; none of them calls
`torch.cuda.is_available` itself. torch is imported inside the functions, so importing this
module stays cheap for `--help` and `--version`.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import TYPE_CHECKING

from drbfr_cli.choices import Precision
from drbfr_cli.errors import DrbfrError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""/proc/cpuinfo flags of CPUs with bf16 instructions."""
BF16_CPU_SLOWDOWN = 160
"""bf16 autocast over fp32 on a CPU without them, measured: a 3x3 convolution, 64 channels at
64 x 64, one thread, torch 2.15 on an AVX2 AMD EPYC: 3.7 ms fp32, 608 ms bf16."""
CPUINFO = Path("/proc/cpuinfo")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def mps_available() -> bool:
    import torch

    return torch.backends.mps.is_available()


def cuda_count() -> int:
    """Usable CUDA devices (0 without a CUDA build or driver)."""
    import torch

    return torch.cuda.device_count() if cuda_available() else 0


def best_device() -> str:
    """cuda, mps or cpu: what `auto` means on this machine."""
    if cuda_available():
        return "cuda"
    if mps_available():
        return "mps"
    return "cpu"


def resolve_device(name: str) -> torch.device:
    """`auto` -> the best device here; otherwise the named device, checked to exist here
    (one-line DrbfrError naming what exists)."""
    import torch

    if name == "auto":
        return torch.device(best_device())
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise DrbfrError(f"unknown torch device {name!r}; use {DEVICE_HELP}") from None
    if chosen.type == "cuda":
        count = cuda_count()
        if (chosen.index or 0) >= count:
            raise DrbfrError(f"device {name!r}: this machine has {count} usable CUDA device(s)")
    elif chosen.type == "mps" and not mps_available():
        raise DrbfrError("device 'mps': Apple Metal is not available here")
    elif chosen.type not in {"cpu", "cuda", "mps"}:
        raise DrbfrError(f"unsupported device {name!r}; use {DEVICE_HELP}")
    return chosen


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a restore (None: plain fp32). auto: fp16 on CUDA, fp32 elsewhere."""
    import torch

    if precision is Precision.AUTO:
        return torch.float16 if device.type == "cuda" else None
    if precision is Precision.FP16 and device.type == "cpu":
        raise DrbfrError("fp16 needs a GPU; use --precision fp32 (what auto picks) on the CPU")
    return {Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}.get(precision)


def cpu_has_bf16(cpuinfo: Path | None = None) -> bool | None:
    """Whether this CPU has bf16 instructions (BF16_CPU_FLAGS); None where it cannot be told
    (no /proc/cpuinfo)."""
    try:
        text = (cpuinfo or CPUINFO).read_text(errors="replace")
    except OSError:
        return None
    flags = {
        flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()
    }
    return bool(flags & BF16_CPU_FLAGS)


def check_precision(
    precision: Precision, device: torch.device, cpuinfo: Path | None = None
) -> None:
    """One-line DrbfrError, before any model loads, for a precision `device` cannot run (fp16
    on a CPU) or runs far slower than fp32 (bf16 on a CPU without bf16 instructions)."""
    if device.type != "cpu":
        return
    if precision is Precision.BF16 and cpu_has_bf16(cpuinfo) is False:
        raise DrbfrError(
            "--precision bf16: this CPU has no bf16 instructions (AVX512-BF16 or AMX), and bf16 "
            f"convolutions run about {BF16_CPU_SLOWDOWN}x slower than fp32 on such CPUs; use "
            "--precision fp32 (what auto picks on a CPU)"
        )
    autocast_dtype(precision, device)


def precision_of(dtype: torch.dtype | None) -> Precision:
    """The precision an autocast dtype (see `autocast_dtype`) runs at; None: fp32."""
    import torch

    return {torch.float16: Precision.FP16, torch.bfloat16: Precision.BF16}.get(
        dtype, Precision.FP32
    )


def has_accelerator() -> bool:
    """Whether training has any accelerator (torch.accelerator where torch has it)."""
    import torch

    accelerator_api = getattr(torch, "accelerator", None)
    if accelerator_api is not None:
        return accelerator_api.is_available()
    return cuda_available()


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA's OutOfMemoryError and the RuntimeErrors other backends raise for it."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def free_memory() -> None:
    """Return cached accelerator memory to the driver (after an out-of-memory error)."""
    import torch

    gc.collect()
    if cuda_available():
        torch.cuda.empty_cache()
    if mps_available():
        torch.mps.empty_cache()


def cuda_rng_states() -> list:
    """Every CUDA device's RNG state ([] without CUDA), for checkpoints."""
    import torch

    return torch.cuda.get_rng_state_all() if cuda_available() else []


def set_cuda_rng_states(states: list) -> None:
    import torch

    if states and cuda_available():
        torch.cuda.set_rng_state_all(states)
