"""The memory budget of a restore: each image's peak is estimated from its header, before a pixel
is decoded, and an image whose estimate exceeds the budget fails alone (the run goes on).

The estimate is linear in the input and output pixel counts, with per-pixel costs measured with
`/usr/bin/time -v` on a 43 MP JPEG (8032 x 5354, identity model, Lanczos background): peak RSS
3.41 GiB at --upscale 1 and 9.18 GiB at --upscale 2, for a process that peaks at 1.07 GiB on a
small photo: about 10 bytes per input pixel and 48 per output pixel (BENCHMARKS.md; a 196 MP
PNG at --upscale 1 took 10.9 GiB over the process, estimated 11.7).
"""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path

from drbfr_cli.errors import DrbfrError

MAX_UPSCALE = 16.0
"""Largest --upscale (Real-ESRGAN's networks are x2 and x4; a 1000 px photo at 16 is 256 MP)."""
INPUT_BYTES_PER_PIXEL = 16
"""Decoded input (uint8 and float32 RGB, alpha) per input pixel."""
OUTPUT_BYTES_PER_PIXEL = 48
"""Background, pasted result and encoding buffers per output pixel."""
NETWORK_BYTES_PER_PIXEL = 12
"""A network background's float32 RGB output at its own scale, before the resize to --upscale."""
ALIGNED_OUTPUT_PIXELS = 512 * 512
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
AUTO = "auto"
UNLIMITED = ("0", "none")


def estimate_peak(
    width: int, height: int, upscale: float, *, aligned: bool = False, network_scale: float = 0
) -> int:
    """Bytes one image of `width` x `height` needs while it is restored (beyond the process's
    models): its decoded input, and the output at `upscale` (512 x 512 with --aligned), with a
    network background's output at `network_scale` when that exceeds `upscale`."""
    pixels = width * height
    if aligned:
        return INPUT_BYTES_PER_PIXEL * pixels + OUTPUT_BYTES_PER_PIXEL * ALIGNED_OUTPUT_PIXELS
    peak = INPUT_BYTES_PER_PIXEL * pixels + OUTPUT_BYTES_PER_PIXEL * round(pixels * upscale**2)
    if network_scale > upscale:
        peak += NETWORK_BYTES_PER_PIXEL * round(pixels * network_scale**2)
    return peak


def parse_memory(text: str) -> int | None:
    """--max-memory: `auto` (available_memory), `0` or `none` (no budget), or a size such as
    `12G`, `800M`, `1.5GB` (binary units; a bare number is bytes). One-line DrbfrError else."""
    text = text.strip().lower()
    if text == AUTO:
        return available_memory()
    if text in UNLIMITED:
        return None
    match = _SIZE.match(text)
    if match is None:
        raise DrbfrError(f"--max-memory: {text!r} is not auto, none or a size such as 12G or 800M")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Memory a run may use: the kernel's MemAvailable, less than any address-space limit
    (`ulimit -v`) leaves; None where neither can be read."""
    limits = [value for value in (_mem_available(meminfo), _address_space_left()) if value]
    return min(limits) if limits else None


def _mem_available(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _address_space_left() -> int | None:
    """RLIMIT_AS less this process's present virtual size; None without a limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return soft
    return max(soft - pages * os.sysconf("SC_PAGE_SIZE"), 0)


def gigabytes(size: int) -> str:
    return f"{size / (1 << 30):.1f} GB"


def over_budget(path: Path, peak: int, budget: int, upscale: float) -> str:
    """The one-line reason an image is not restored."""
    return (
        f"{path}: needs about {gigabytes(peak)} of memory at --upscale {upscale:g}, over the "
        f"budget of {gigabytes(budget)} (--max-memory); use a smaller --upscale, free memory "
        "or raise --max-memory"
    )
