"""The prepared check for a lent GPU (`bench/gpu-check`, `make gpu-check`): within a time budget
(8 minutes by default) it measures, writing each result as one JSON line to OUT/gpu_check.jsonl
the moment it exists (a run cut short keeps everything measured so far):

1. `flops`: FLOPs per training item of each stage and preset, and the projected wall time of a
   full run on 8 H100s in bf16 at 40 % utilisation (benchmark/flops.py; no GPU needed).
2. `match`: fp16 and bf16 restorations against fp32 on the same faces and seeds: finite, not
   black (mean > MIN_MEAN), and PSNR against fp32 >= MIN_PSNR_DB (the stated tolerance).
3. `restore`: faces/s of the small and paper presets (default sampling) and of the GFPGAN and
   CodeFormer architectures (random weights) at batches 1-32, in fp16 and bf16.
4. `train`: items/s and peak memory of a training step of each stage and preset, stepped for
   TRAIN_SECONDS (bf16 on a GPU that has it, else fp16).

`--dry-run` shrinks every case (tiny preset, batches 1-2, one timed repeat, 1 s of training,
fp32 on the CPU) so that the whole script runs on a CPU in seconds; CI runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

MIN_PSNR_DB = 30.0
"""fp16 / bf16 restorations must be within this PSNR of fp32's (on [0, 1] images)."""
MIN_MEAN = 0.02
"""A restoration whose mean is below this is black."""
TRAIN_SECONDS = 60.0
RESULTS = "gpu_check.jsonl"


@dataclass(frozen=True)
class Plan:
    """What the check measures."""

    presets: tuple[str, ...] = ("small", "paper")
    baselines: tuple[str, ...] = ("gfpgan", "codeformer")
    precisions: tuple[str, ...] = ("fp16", "bf16")
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    train_seconds: float = TRAIN_SECONDS
    repeats: int = 2
    warmup: int = 1
    match_faces: int = 4
    budget_s: float = 480.0
    device: str = "auto"
    sampling_steps: int | None = None
    """None: each preset's default sampling."""
    train_batch: int | None = None
    """None: each preset's batch size."""
    flops_presets: tuple[str, ...] = ("tiny", "small", "base", "paper")
    speed_precisions: tuple[str, ...] | None = None
    """Precisions of the restore timings (None: `precisions`, which the match check uses)."""


DRY_RUN = Plan(
    presets=("tiny",),
    baselines=("gfpgan",),
    precisions=("bf16",),
    batches=(1, 2),
    train_seconds=1.0,
    repeats=1,
    warmup=0,
    match_faces=2,
    budget_s=3600.0,  # the dry run shrinks the cases, not the budget: it runs every one
    device="cpu",
    sampling_steps=2,
    train_batch=2,
    flops_presets=("tiny",),
    speed_precisions=("fp32",),  # CPU bf16 convolutions are emulated: slow, and not the point
)


class Results:
    """OUT/gpu_check.jsonl, one line per result, flushed and synced as each is written."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / RESULTS
        self.path.write_text("")
        self.count = 0

    def write(self, kind: str, **row: Any) -> None:
        line = json.dumps({"kind": kind, **row}, default=str)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.count += 1
        print(line, flush=True)


class Clock:
    """The remaining time budget."""

    def __init__(self, budget_s: float) -> None:
        self.deadline = time.perf_counter() + budget_s

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def _guarded(results: Results, kind: str, key: dict[str, Any], fn: Callable[[], dict]) -> None:
    """Run one case; an out-of-memory or other runtime failure is a result too."""
    from drbfr_cli.devices import free_memory, is_out_of_memory
    from drbfr_cli.errors import first_line

    try:
        results.write(kind, **key, **fn())
    except (RuntimeError, ValueError, NotImplementedError) as exc:
        reason = "out of memory" if is_out_of_memory(exc) else first_line(exc)[:300]
        results.write(kind, **key, failed=reason)
    finally:
        free_memory()


# ---------------------------------------------------------------------------------------------
# The restorers


def _bundle(preset: str, device: torch.device) -> tuple[Any, str]:
    """The shipped bundle of a preset when there is one (real weights), else random weights."""
    from drbfr_cli.benchmark.random_bundle import random_bundle
    from drbfr_cli.bundle import load_bundle, resolve_bundle
    from drbfr_cli.errors import DrbfrError

    if preset == "small":
        try:
            return load_bundle(resolve_bundle("drbfr-small", None)), "shipped drbfr-small"
        except DrbfrError as exc:
            note = f"random weights ({str(exc)[:120]})"
            return random_bundle(preset, device=device), note
    return random_bundle(preset, device=device), "random weights"


def _faces(count: int, side: int) -> torch.Tensor:
    from drbfr_cli.benchmark.inputs import synthetic_image
    from drbfr_cli.benchmark.restore_model import face_batch

    rng = np.random.default_rng(0)
    images = [(synthetic_image(rng, side) * 255).round().astype(np.uint8) for _ in range(4)]
    return face_batch(images, side, count)


_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def _restorer(bundle: Any, device: torch.device, precision: str, plan: Plan) -> Any:
    from drbfr_cli.restore.restorer import BundleRestorer

    sampling = bundle.sampling
    if plan.sampling_steps is not None:
        sampling = replace(sampling, steps=plan.sampling_steps)
    return BundleRestorer(bundle, device, _DTYPES[precision], sampling)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) between images in [0, 1]; inf when equal."""
    mse = float((a.double() - b.double()).pow(2).mean())
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


def match_row(reference: torch.Tensor, restored: torch.Tensor) -> dict[str, Any]:
    """How a low-precision restoration compares with fp32's, and whether it passes."""
    finite = bool(torch.isfinite(restored).all())
    mean = float(restored.nan_to_num(0.0).mean())
    clipped = (reference <= 0.0) | (reference >= 1.0)
    value = psnr(reference, restored.nan_to_num(0.0))
    return {
        "finite": finite,
        "mean": mean,
        "psnr_vs_fp32_db": value,
        "max_abs_diff": float((reference - restored.nan_to_num(0.0)).abs().max()),
        "fp32_clipped_fraction": float(clipped.float().mean()),
        # random weights often saturate: a high clipped fraction makes the comparison weak
        "tolerance": f"finite, mean > {MIN_MEAN}, PSNR vs fp32 >= {MIN_PSNR_DB} dB",
        "passed": finite and mean > MIN_MEAN and value >= MIN_PSNR_DB,
    }


def check_match(results: Results, plan: Plan, device: torch.device, preset: str) -> None:
    bundle, weights = _bundle(preset, device)
    faces = _faces(plan.match_faces, bundle.face_size)
    seeds = list(range(plan.match_faces))
    reference = _restorer(bundle, device, "fp32", plan).restore(faces, seeds)
    for precision in plan.precisions:
        key = {"preset": preset, "weights": weights, "precision": precision}
        restorer = _restorer(bundle, device, precision, plan)
        _guarded(
            results, "match", key, lambda r=restorer: match_row(reference, r.restore(faces, seeds))
        )


def _throughput(fn: Callable[[], object], faces: int, plan: Plan, device: torch.device) -> dict:
    from drbfr_cli.benchmark.measure import measure

    timing = measure(fn, device=device, repeats=plan.repeats, warmup=plan.warmup)
    return {"faces_per_s": faces / timing.seconds, **timing.to_dict()}


def _timer(restorer: Any, faces: torch.Tensor, plan: Plan, device: torch.device) -> Callable:
    seeds = list(range(faces.shape[0]))
    return lambda: _throughput(lambda: restorer.restore(faces, seeds), len(seeds), plan, device)


def restore_throughput(results: Results, plan: Plan, device: torch.device, clock: Clock) -> None:
    for preset in plan.presets:
        bundle, weights = _bundle(preset, device)
        for precision in plan.speed_precisions or plan.precisions:
            restorer = _restorer(bundle, device, precision, plan)
            for batch in plan.batches:
                if clock.left() < plan.train_seconds * 2:
                    results.write("restore", preset=preset, batch=batch, skipped="time budget")
                    continue
                faces = _faces(batch, bundle.face_size)
                key = {"model": preset, "weights": weights, "precision": precision,
                       "batch": batch, "sampling_steps": restorer.sampling.steps}  # fmt: skip
                _guarded(results, "restore", key, _timer(restorer, faces, plan, device))
    _baseline_throughput(results, plan, device, clock)


def _baseline_throughput(results: Results, plan: Plan, device: torch.device, clock: Clock) -> None:
    from bench.harness.baselines import FACE_SIZE, Unavailable, build_baseline

    for name in plan.baselines:
        baseline = build_baseline(name, device)
        if isinstance(baseline, Unavailable):
            results.write("restore", model=name, skipped=baseline.reason)
            continue
        for precision in plan.speed_precisions or plan.precisions:
            dtype = _DTYPES[precision]
            for batch in plan.batches:
                if clock.left() < plan.train_seconds * 2:
                    results.write("restore", model=name, batch=batch, skipped="time budget")
                    continue
                faces = _faces(batch, FACE_SIZE).to(device) * 2 - 1

                def run(b=baseline, f=faces, d=dtype) -> None:
                    with (
                        torch.no_grad(),
                        torch.autocast(device.type, dtype=d, enabled=d is not None),
                    ):
                        b(f)

                key = {"model": name, "weights": "random", "precision": precision, "batch": batch}
                _guarded(
                    results, "restore", key, lambda r=run, n=batch: _throughput(r, n, plan, device)
                )
        del baseline


# ---------------------------------------------------------------------------------------------
# Training


def train_precision(device: torch.device) -> str:
    from drbfr_cli.train.accel import resolve_mixed_precision

    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    return resolve_mixed_precision("auto", device_type=device.type, bf16_supported=bf16)


def train_row(stage: str, preset: str, plan: Plan, device: torch.device, seconds: float) -> dict:
    """Items/s and peak memory of a stage's training step, stepped for about `seconds`."""
    from drbfr_cli.benchmark.train import TrainBenchConfig, _FaceSource, bench_step, build_task
    from drbfr_cli.presets import (
        drm_config_from_preset,
        ldm_config_from_preset,
        vae_config_from_preset,
    )

    loaders = {"drm": drm_config_from_preset, "vae": vae_config_from_preset}
    _, defaults = loaders.get(stage, ldm_config_from_preset)(preset)
    batch = plan.train_batch or int(defaults["batch_size"])
    precision = train_precision(device)
    config = TrainBenchConfig(
        preset=preset, stages=(stage,), batch_sizes=(batch,), device=str(device),
        precisions=(precision,), repeats=1, warmup=1,
    )  # fmt: skip
    task, notes = build_task(stage, config, _FaceSource(None, 0))
    probe = bench_step(task, batch, precision, device, config)
    repeats = max(1, int(seconds / probe["seconds_per_step"]))
    row = bench_step(task, batch, precision, device, replace(config, repeats=repeats, warmup=0))
    return {"precision": precision, "notes": notes, "steps_timed": repeats, **row}


def train_throughput(results: Results, plan: Plan, device: torch.device, clock: Clock) -> None:
    from drbfr_cli.benchmark.train import STAGES
    from drbfr_cli.config import preset_names

    cases = [(s, p) for p in plan.presets for s in STAGES if p in preset_names(s)]
    for index, (stage, preset) in enumerate(cases):
        share = clock.left() / (len(cases) - index) - 5.0
        seconds = min(plan.train_seconds, share)
        if seconds <= 0:
            results.write("train", stage=stage, preset=preset, skipped="time budget")
            continue
        key = {"stage": stage, "preset": preset}
        _guarded(
            results,
            "train",
            key,
            lambda s=stage, p=preset, t=seconds: train_row(s, p, plan, device, t),
        )


# ---------------------------------------------------------------------------------------------
# The run


def flops_results(results: Results, presets: tuple[str, ...]) -> None:
    from drbfr_cli.benchmark.flops import flops_rows

    for row in flops_rows(presets):
        results.write("flops", **row)


def run_check(plan: Plan, out: Path) -> Path:
    """Every measurement of `plan`, in order of importance, within its time budget."""
    from drbfr_cli.benchmark.measure import machine_info
    from drbfr_cli.devices import resolve_device

    clock = Clock(plan.budget_s)
    device = resolve_device(plan.device)
    results = Results(out)
    results.write("machine", **machine_info(device), plan=plan.__dict__)
    flops_results(results, plan.flops_presets)
    for preset in plan.presets:
        check_match(results, plan, device, preset)
    restore_throughput(results, plan, device, clock)
    train_throughput(results, plan, device, clock)
    results.write("done", results=results.count, seconds_left=round(clock.left(), 1))
    return results.path


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/gpu-check", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out/gpu-check")))
    parser.add_argument("--dry-run", action="store_true", help="shrink every case (CPU, seconds)")
    parser.add_argument("--budget-s", type=float, default=None, help="time budget in seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    plan = DRY_RUN if args.dry_run else Plan()
    if args.budget_s is not None:
        plan = replace(plan, budget_s=args.budget_s)
    path = run_check(plan, args.out)
    print(f"results: {path}", flush=True)
    return 0


def read_results(path: Path) -> Iterator[dict[str, Any]]:
    """The result lines of a gpu_check.jsonl."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield json.loads(line)
