"""Where a restoration's time goes: the wall time of each network a bundle runs, gathered by
forward hooks while the real `Bundle.restore` runs (so nothing is re-sequenced by hand).

Stages: the fidelity network F (twice with its flip ensemble), E_DR, the TAEF2 / VAE encoder,
the denoiser (once per sampling step and sample), the decoder, and `other`: the rest of the
wall time (sampler arithmetic, the low-frequency transfer, copies).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from drbfr_cli.benchmark.measure import synchronize
from drbfr_cli.bundle import Bundle
from drbfr_cli.diffusion.sampling import SamplingConfig

STAGES = ("fidelity", "dr", "encode", "denoiser", "decode")
"""The timed networks, in the order a restoration runs them."""


def stage_modules(bundle: Bundle) -> dict[str, nn.Module]:
    """The module behind each stage a bundle has (F and E_DR may be absent)."""
    model = bundle.parts.first_stage.model
    halves = getattr(model, "vq", model)  # the VQ autoencoder keeps its halves in `vq`
    encoder, decoder = halves.encoder, halves.decoder
    found: dict[str, nn.Module | None] = {
        "fidelity": bundle.fidelity,
        "dr": bundle.parts.encoder if bundle.use_dr else None,
        "encode": encoder,
        "denoiser": bundle.ldrm,
        "decode": decoder,
    }
    return {name: module for name, module in found.items() if module is not None}


@contextmanager
def stage_clock(
    modules: dict[str, nn.Module], device: torch.device
) -> Iterator[dict[str, list[float]]]:
    """Yields {stage: [seconds of each call]}, filled while the context is open. Calls are
    synchronised on `device`, so a GPU's queued kernels count to the stage that queued them."""
    times: dict[str, list[float]] = {name: [] for name in modules}
    started: dict[str, float] = {}
    handles = []
    for name, module in modules.items():

        def before(_module, _args, name=name) -> None:
            synchronize(device)
            started[name] = time.perf_counter()

        def after(_module, _args, _out, name=name) -> None:
            synchronize(device)
            times[name].append(time.perf_counter() - started.pop(name))

        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    try:
        yield times
    finally:
        for handle in handles:
            handle.remove()


def profile_restore(
    bundle: Bundle,
    lq: torch.Tensor,
    sampling: SamplingConfig,
    *,
    device: torch.device,
    dtype: torch.dtype | None = None,
    warmup: int = 1,
) -> dict[str, Any]:
    """One timed `bundle.restore` of `lq` (N x 3 x S x S in [-1, 1] on `device`) after `warmup`
    untimed ones: seconds per face of each stage, its calls, and its share of the wall time."""
    seeds = list(range(lq.shape[0]))

    def run() -> None:
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=dtype, enabled=dtype is not None),
        ):
            bundle.restore(lq, seeds, sampling)

    for _ in range(warmup):
        run()
    synchronize(device)
    with stage_clock(stage_modules(bundle), device) as times:
        start = time.perf_counter()
        run()
        synchronize(device)
        wall = time.perf_counter() - start
    return stage_rows(times, wall, faces=lq.shape[0])


def stage_rows(times: dict[str, list[float]], wall: float, *, faces: int) -> dict[str, Any]:
    """Per-face seconds, calls and share of each stage; `other` is the wall time left over."""
    rows = [
        {
            "stage": name,
            "calls": len(times[name]),
            "seconds_per_face": sum(times[name]) / faces,
            "share": sum(times[name]) / wall,
        }
        for name in STAGES
        if name in times
    ]
    timed = sum(sum(v) for v in times.values())
    rows.append(
        {
            "stage": "other",
            "calls": 0,
            "seconds_per_face": max(wall - timed, 0.0) / faces,
            "share": max(wall - timed, 0.0) / wall,
        }
    )
    return {"faces": faces, "seconds_per_face": wall / faces, "stages": rows}
