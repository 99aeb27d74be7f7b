"""Benchmarks of the data path: Eq. (11) steps at 512 px and `drbfr degrade` worker scaling.

CPU timings are reported as ratios against a baseline measured in the same run (a 512 px PNG
encode), so they compare across machines; absolute times only mean something on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--hq", type=Path, default=Path("../shared/data/hq"), help="HQ faces for the degrade run"
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--copies", type=int, default=8, help="links per HQ face in the degrade run"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    steps = bench_steps(args.repeats)
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
    if args.hq.is_dir():
        sets = bench_degrade_set(args.hq, [1, 2], args.copies)
        result["degrade_set_seconds"] = sets
        result["degrade_set_speedup_2_workers"] = sets[1] / sets[2]
        count = args.copies * len(collect_images([args.hq]))
        print(
            f"drbfr degrade, {count} faces at 512 px: 1 worker {sets[1]:.2f} s, "
            f"2 workers {sets[2]:.2f} s, speed-up {sets[1] / sets[2]:.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
