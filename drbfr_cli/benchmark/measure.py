"""Timing and memory measurement for the benchmarks.

A measurement runs a function `warmup` times unmeasured, then `repeats` times measured, and
reports the median (and best) wall time. On a GPU the device is synchronised before the clock
starts and before it stops, so queued kernels are counted. Peak memory covers the measured
runs only: host memory as the process's peak resident set size (Linux: VmHWM, reset through
/proc/self/clear_refs; elsewhere sampled by a thread), GPU memory as
torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from drbfr_cli import __version__

MB = 1024 * 1024
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")
_SAMPLE_SECONDS = 0.002


@dataclass(frozen=True)
class Measurement:
    """Wall time of `repeats` measured runs and the peak memory they reached."""

    seconds: float
    """Median of the measured runs."""
    best: float
    repeats: int
    host_peak_mb: float | None
    """Peak resident set size of the process during the measured runs."""
    host_added_mb: float | None
    """That peak minus the resident size just before the measured runs."""
    device_peak_mb: float | None
    """torch.cuda.max_memory_allocated during the measured runs (None off CUDA)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def synchronize(device: torch.device) -> None:
    """Wait for the queued work of `device` (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure(
    fn: Callable[[], object], *, device: torch.device, repeats: int = 3, warmup: int = 1
) -> Measurement:
    """Run fn `warmup` times, then time `repeats` runs (each synchronised on `device`)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    with peak_memory(device) as peaks:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - start)
    return Measurement(
        seconds=statistics.median(times),
        best=min(times),
        repeats=repeats,
        host_peak_mb=peaks.get("host_peak_mb"),
        host_added_mb=peaks.get("host_added_mb"),
        device_peak_mb=peaks.get("device_peak_mb"),
    )


# ---------------------------------------------------------------------------------------------
# Memory


def resident_mb() -> float:
    """The process's resident set size now."""
    import psutil

    return psutil.Process().memory_info().rss / MB


def _read_hwm_mb() -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where that is not possible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _read_hwm_mb() is not None


class _RssSampler(threading.Thread):
    """Samples the resident set size until stopped (where the peak cannot be reset)."""

    def __init__(self) -> None:
        super().__init__(name="drbfr-rss-sampler", daemon=True)
        self.peak = resident_mb()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(_SAMPLE_SECONDS):
            self.peak = max(self.peak, resident_mb())

    def stop(self) -> float:
        self._done.set()
        self.join()
        return max(self.peak, resident_mb())


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Fills the yielded dict with host_peak_mb, host_added_mb and (CUDA) device_peak_mb of
    the block."""
    peaks: dict[str, float] = {}
    before = resident_mb()
    exact = _reset_hwm()
    sampler = None if exact else _RssSampler()
    if sampler is not None:
        sampler.start()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield peaks
    finally:
        peak = _read_hwm_mb() if sampler is None else sampler.stop()
        if peak is not None:
            peaks["host_peak_mb"] = peak
            peaks["host_added_mb"] = max(0.0, peak - before)
        if device.type == "cuda":
            peaks["device_peak_mb"] = torch.cuda.max_memory_allocated(device) / MB


# ---------------------------------------------------------------------------------------------
# FLOPs


def count_flops(fn: Callable[[], object]) -> float | None:
    """FLOPs (a multiply-add counts two) of the torch operators fn runs, by
    torch.utils.flop_counter; meant for modules and inputs on the meta device (no compute).
    None when fn cannot run that way."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn()
    except (RuntimeError, NotImplementedError, TypeError):
        return None
    return float(counter.get_total_flops())


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------
# The machine


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work sharing the machine shows here."""
    if not hasattr(os, "getloadavg"):
        return None
    return [round(value, 2) for value in os.getloadavg()]


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    import psutil

    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "drbfr": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "load_average": _load_average(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": props.name,
            "gpu_memory_gb": round(props.total_memory / 1024**3, 1),
            "cuda": torch.version.cuda,
        }
    return info
