"""`make bench`: every benchmark of BENCHMARKS.md, for the device at hand, results in one folder.

1. the data path: Eq. (11) steps at 512 px and `drbfr degrade` worker scaling (in process);
2. `bench/restore` (`drbfr bench restore` with the GFPGAN and CodeFormer baselines) and
   `drbfr bench train` on the tiny preset (CPU-sized settings on a CPU) and on the paper
   preset (on a CPU: single network calls, extrapolated, and one cold training step at batch
   1), each in its own process; every command is printed first.

Run from the project root: `python -m bench.harness.suite` (`make bench`).

CPU timings are reported as ratios against baselines measured in the same run (a 512 px PNG
encode; GFPGAN, CodeFormer and the one-face loop), so they compare across machines; absolute
times only mean something on one machine. Inputs come from ../shared (or $DRBFR_SHARED) when
present: real whole photos with the YuNet detector, aligned faces and HQ faces; otherwise
synthetic pictures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import cv2
import numpy as np

from drbfr_cli.degradations import (
    DegradationParams,
    add_gaussian_noise,
    degrade,
    downsample,
    gaussian_blur,
    jpeg_compress,
    resize_to,
)
from drbfr_cli.imaging import collect_images, encode_image
from drbfr_cli.synthetic import DegradeConfig, make_lq_set


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of `repeats` calls, seconds (the least disturbed run)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_steps(repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.random((512, 512, 3), dtype=np.float32), (0, 0), 2)
    params = DegradationParams(sigma=5.0, r=4.0, delta=10.0, q=75)
    small = downsample(image, params.r)
    cases = {
        "baseline_png_encode": lambda: encode_image("x.png", image),
        "blur_sigma5": lambda: gaussian_blur(image, params.sigma),
        "downsample_r4": lambda: downsample(image, params.r),
        "noise_delta10": lambda: add_gaussian_noise(small, params.delta, np.random.default_rng(0)),
        "jpeg_q75": lambda: jpeg_compress(small, params.q),
        "resize_back": lambda: resize_to(small, (512, 512)),
        "degrade_eq11": lambda: degrade(image, params, np.random.default_rng(0)),
    }
    return {name: best_time(fn, repeats) for name, fn in cases.items()}


def bench_degrade_set(hq_dir: Path, workers: list[int], copies: int) -> dict[int, float]:
    """Seconds to degrade `copies` links to each face in `hq_dir`, per worker count."""
    links = Path(tempfile.mkdtemp(prefix="drbfr-bench-in-"))
    for source in collect_images([hq_dir]):
        for copy in range(copies):
            (links / f"{copy:03d}_{source.path.name}").symlink_to(source.path.resolve())
    sources = collect_images([links])
    seconds: dict[int, float] = {}
    for count in workers:
        out = Path(tempfile.mkdtemp(prefix="drbfr-bench-"))
        start = time.perf_counter()
        make_lq_set(sources, out, DegradeConfig(seed=0), workers=count)
        seconds[count] = time.perf_counter() - start
        shutil.rmtree(out)
    shutil.rmtree(links)
    return seconds


def degrade_bench(hq: Path, repeats: int, copies: int, json_path: Path | None) -> None:
    """Eq. (11) steps against a PNG encode, and `drbfr degrade` with 1 and 2 workers."""
    steps = bench_steps(repeats)
    base = steps["baseline_png_encode"]
    result: dict[str, object] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "steps_seconds": steps,
        "steps_ratio_to_png_encode": {k: v / base for k, v in steps.items()},
    }
    print(f"{'Eq. (11) step at 512 px':28s} {'ms':>8s} {'x PNG encode':>13s}")
    for name, seconds in steps.items():
        print(f"{name:28s} {seconds * 1e3:8.2f} {seconds / base:13.2f}")
    if hq.is_dir():
        sets = bench_degrade_set(hq, [1, 2], copies)
        result["degrade_set_seconds"] = sets
        result["degrade_set_speedup_2_workers"] = sets[1] / sets[2]
        count = copies * len(collect_images([hq]))
        print(
            f"drbfr degrade, {count} faces at 512 px: 1 worker {sets[1]:.2f} s, "
            f"2 workers {sets[2]:.2f} s, speed-up {sets[1] / sets[2]:.2f}x"
        )
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))


# ---------------------------------------------------------------------------------------------
# drbfr bench restore / train


def _shared_root() -> Path:
    from bench.common import shared

    return shared()


def restore_inputs(shared: Path) -> list[str]:
    """Real photos (with YuNet) and aligned faces when ../shared has them."""
    photos, aligned = shared / "data" / "real_lq" / "whole", shared / "data" / "real_lq" / "aligned"
    yunet = shared / "weights" / "face_detection_yunet_2023mar.onnx"
    args = []
    if photos.is_dir() and yunet.is_file():
        args += ["--photos", str(photos), "--detector", "yunet", "--weights-dir", str(yunet.parent)]
    if aligned.is_dir():
        args += ["--aligned-faces", str(aligned)]
    return args


GPU_RESTORE = (
    "--full --batch-sizes 1,4,8,16 --faces 16 --steps 20,50 --start-t 1,0.4 "
    "--baseline-batch-sizes 1,8 --bg-upsampler realesrgan --repeats 3 --warmup 1"
)
CPU_SETTINGS = {
    ("tiny", "restore"): "--full --batch-sizes 1,2,4,8 --faces 8 --steps 20 --start-t 1,0.4 "
    "--repeats 2 --warmup 1",
    ("tiny", "train"): "--batch-sizes 8 --repeats 3 --warmup 1",
    # larger presets (paper: a 415 M-parameter U-Net at 128 x 128 latents): single network
    # calls, extrapolated, and one cold training step at batch 1
    ("other", "restore"): "--calls-only --batch-sizes 1 --steps 20,50 --start-t 1,0.4 "
    "--repeats 1 --warmup 0",
    ("other", "train"): "--batch-sizes 1 --repeats 1 --warmup 0",
}


def settings(gpu: bool, preset: str, kind: str) -> list[str]:
    """The options of `drbfr bench KIND` for a preset, sized for a GPU or for a 2-core CPU."""
    if gpu:
        train = "--batch-sizes 1,8" if preset == "paper" else "--batch-sizes 8,32"
        return shlex.split(GPU_RESTORE if kind == "restore" else train)
    return shlex.split(CPU_SETTINGS[("tiny" if preset == "tiny" else "other", kind)])


def plan(gpu: bool, presets: list[str], shared: Path, out: Path) -> list[tuple[str, list[str]]]:
    """(name, `drbfr` arguments) of every bench command."""
    hq = shared / "data" / "hq"
    inputs = {
        "restore": restore_inputs(shared),
        "train": ["--data", str(hq)] if hq.is_dir() else [],
    }
    commands = []
    for preset in presets:
        for kind in ("restore", "train"):
            name = f"{kind}_{preset}"
            files = ["-o", str(out / f"{name}.json"), "--markdown", str(out / f"{name}.md")]
            device = ["--preset", preset, "--device", "cuda" if gpu else "cpu"]
            args = [*settings(gpu, preset, kind), *inputs[kind], *files]
            commands.append((name, ["bench", kind, *device, *args]))
    return commands


def shown(args: list[str]) -> str:
    """The command line of a planned command: `bench restore` runs as bench/restore (with the
    GFPGAN and CodeFormer baselines), the others as drbfr."""
    if args[:2] == ["bench", "restore"]:
        return "bench/restore " + " ".join(args[2:])
    return "drbfr " + " ".join(args)


def run_commands(commands: list[tuple[str, list[str]]]) -> dict[str, float]:
    """Run each command in its own process; seconds each took."""
    seconds = {}
    for name, args in commands:
        print(f"\n$ {shown(args)}", flush=True)
        start = time.perf_counter()
        if args[:2] == ["bench", "restore"]:
            script = Path(__file__).resolve().parent.parent / "restore"
            subprocess.run([sys.executable, str(script), *args[2:]], check=True)
        else:
            subprocess.run([sys.executable, "-m", "drbfr_cli", *args], check=True)
        seconds[name] = time.perf_counter() - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="results folder")
    parser.add_argument("--only", default="degrade,restore,train", help="comma list of parts")
    parser.add_argument("--presets", default="tiny,paper", help="comma list of model presets")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--shared", type=Path, default=_shared_root(), help="../shared data")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument(
        "--hq", type=Path, help="HQ faces for the degrade run (default: SHARED/data/hq)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="degrade steps: runs per step")
    parser.add_argument(
        "--copies", type=int, default=8, help="links per HQ face in the degrade run"
    )
    args = parser.parse_args()
    parts = set(args.only.split(","))
    gpu = args.device == "cuda"
    if args.device == "auto":
        from drbfr_cli.devices import cuda_available

        gpu = cuda_available()
    commands = [
        (name, argv)
        for name, argv in plan(gpu, args.presets.split(","), args.shared, args.out)
        if name.split("_")[0] in parts
    ]
    if args.dry_run:
        for _, argv in commands:
            print(shown(argv))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if "degrade" in parts:
        degrade_bench(
            args.hq or args.shared / "data" / "hq",
            args.repeats,
            args.copies,
            args.out / "degrade.json",
        )
    seconds = run_commands(commands)
    total = time.perf_counter() - start
    print("\n" + ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items()))
    print(f"all benchmarks: {total:.0f} s; results in {args.out}/ (JSON and Markdown tables)")


if __name__ == "__main__":
    main()
