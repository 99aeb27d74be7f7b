"""bench/gpu-check's CPU dry run end to end, and the FLOP counts behind BENCHMARKS.md's
projected training times."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.harness.gpu_check import DRY_RUN, match_row, read_results, run_check
from drbfr_cli.benchmark.flops import flops_rows, projected_seconds, stage_flops

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_dry_run_writes_every_kind_of_result(tmp_path: Path) -> None:
    path = run_check(DRY_RUN, tmp_path)
    rows = list(read_results(path))
    kinds = [row["kind"] for row in rows]
    assert kinds[0] == "machine" and kinds[-1] == "done"
    assert rows[-1]["results"] == len(rows) - 1
    assert {"flops", "match", "restore", "train"} <= set(kinds)
    assert not [row for row in rows if "failed" in row], [r for r in rows if "failed" in r]
    match = [row for row in rows if row["kind"] == "match"]
    assert match and all(row["finite"] and row["mean"] > 0.02 for row in match)
    assert all(0.0 <= row["fp32_clipped_fraction"] <= 1.0 for row in match)
    restore = {(row["model"], row["batch"]) for row in rows if row["kind"] == "restore"}
    assert restore == {("tiny", 1), ("tiny", 2), ("gfpgan", 1), ("gfpgan", 2)}
    assert all(row["faces_per_s"] > 0 for row in rows if row["kind"] == "restore")
    train = {row["stage"]: row for row in rows if row["kind"] == "train"}
    assert set(train) == {"drm", "vae", "ldm"}
    assert all(row["items_per_s"] > 0 and row["precision"] == "no" for row in train.values())


def test_match_row_flags_nan_black_and_distant_outputs() -> None:
    reference = torch.full((1, 3, 8, 8), 0.5)
    assert match_row(reference, reference + 0.001)["passed"]
    assert not match_row(reference, reference * float("nan"))["passed"]
    assert not match_row(reference, torch.zeros_like(reference))["passed"]
    assert not match_row(reference, reference + 0.1)["passed"]  # 20 dB, under the 30 dB bound


def test_training_flops_and_their_projection() -> None:
    from drbfr_cli.benchmark.measure import count_flops
    from drbfr_cli.benchmark.random_bundle import random_bundle
    from drbfr_cli.diffusion.pipeline import LDRMDenoiser, condition

    counted = stage_flops("ldm", "tiny")
    bundle = random_bundle("tiny", device="meta")
    lq = torch.empty(1, 3, bundle.face_size, bundle.face_size, device="meta")
    cond = condition(bundle.parts, lq, use_dr=True)
    call = LDRMDenoiser(bundle.ldrm, cond, bundle.schedule)
    t = torch.zeros(1, dtype=torch.int64, device="meta")
    forward = count_flops(lambda: call(cond.f_lq, t, conditional=True))
    assert forward is not None and 3 * forward < counted.flops_per_item < 5 * forward
    row = next(r for r in flops_rows(("tiny",), gpus=8) if r["stage"] == "ldm")
    items = row["steps"] * row["batch_per_gpu"] * 8
    assert row["run_flops"] == pytest.approx(counted.flops_per_item * items)
    seconds = projected_seconds(counted, gpus=8, peak=989e12, utilisation=0.4)
    assert row["projected_hours"] * 3600 == pytest.approx(seconds)
    assert seconds == pytest.approx(counted.flops_per_item * items / (8 * 989e12 * 0.4))
    assert json.dumps(row)


def test_bench_flops_command_prints_the_table_and_writes_rows(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from drbfr_cli.cli.main import app

    out = tmp_path / "flops.json"
    result = CliRunner().invoke(app, ["bench", "flops", "--presets", "tiny", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "| tiny | ldm |" in result.stdout and "989 TFLOP/s x 0.4" in result.stdout
    rows = json.loads(out.read_text())
    assert [row["stage"] for row in rows] == ["drm", "vae", "ldm"]
