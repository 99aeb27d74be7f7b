"""Where a restoration's time goes: forward hooks on the real `Bundle.restore`."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import torch
from typer.testing import CliRunner

from drbfr_cli.benchmark.profile import STAGES, profile_restore, stage_rows
from drbfr_cli.benchmark.random_bundle import random_bundle
from drbfr_cli.cli.main import app
from drbfr_cli.diffusion.sampling import network_calls
from drbfr_cli.nets.fidelity import FidelityConfig, build_fidelity

CPU = torch.device("cpu")


def _bundle_with_fidelity():
    bundle = random_bundle("tiny", seed=0)
    torch.manual_seed(0)
    net = build_fidelity(FidelityConfig(channels=(4,), blocks=(1,))).eval()
    return replace(bundle, fidelity=net)


def _calls(profile: dict) -> dict[str, int]:
    return {s["stage"]: s["calls"] for s in profile["stages"]}


def test_profile_counts_each_network_call_of_a_restoration() -> None:
    bundle = _bundle_with_fidelity()
    side = bundle.face_size
    lq = torch.rand(2, 3, side, side) * 2 - 1
    for samples, flip in ((1, True), (2, False)):
        sampling = replace(bundle.sampling, steps=4, start_t=1.0, samples=samples)
        sampling = replace(sampling, fidelity_flip=flip)
        profile = profile_restore(bundle, lq, sampling, device=CPU, warmup=0)
        calls = _calls(profile)
        assert calls["fidelity"] == (2 if flip else 1)
        assert calls["encode"] == 1 and calls["decode"] == 1 and calls["dr"] == 1
        # the denoiser runs once per call of the whole batch: network_calls counts per face
        assert calls["denoiser"] == network_calls(bundle.schedule, sampling)
        assert profile["faces"] == 2
        shares = sum(s["share"] for s in profile["stages"])
        assert abs(shares - 1.0) < 1e-6
        per_face = sum(s["seconds_per_face"] for s in profile["stages"])
        assert abs(per_face - profile["seconds_per_face"]) < 1e-6


def test_profile_leaves_no_hooks_and_the_restoration_unchanged() -> None:
    bundle = _bundle_with_fidelity()
    side = bundle.face_size
    lq = torch.rand(1, 3, side, side) * 2 - 1
    sampling = replace(bundle.sampling, steps=3, start_t=1.0)
    with torch.no_grad():
        before = bundle.restore(lq, [0], sampling)
    profile_restore(bundle, lq, sampling, device=CPU, warmup=0)
    with torch.no_grad():
        after = bundle.restore(lq, [0], sampling)
    assert torch.equal(before, after)
    for module in (bundle.fidelity, bundle.ldrm, bundle.parts.encoder):
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_stage_rows_put_the_untimed_rest_in_other() -> None:
    times = {"encode": [0.5], "denoiser": [0.25, 0.25], "decode": [1.0]}
    profile = stage_rows(times, wall=4.0, faces=2)
    rows = {r["stage"]: r for r in profile["stages"]}
    assert [r["stage"] for r in profile["stages"]] == [
        *[s for s in STAGES if s in times],
        "other",
    ]
    assert rows["denoiser"]["calls"] == 2 and rows["denoiser"]["seconds_per_face"] == 0.25
    assert rows["other"]["seconds_per_face"] == 1.0 and rows["other"]["share"] == 0.5
    assert profile["seconds_per_face"] == 2.0


def test_bench_restore_profiles_each_sampling_at_the_models_default(tmp_path: Path) -> None:
    out, markdown = tmp_path / "r.json", tmp_path / "r.md"
    command = (
        "bench restore --preset tiny --device cpu --batch-sizes 1 --faces 1 --repeats 1 "
        "--warmup 0 --no-pipeline --samples 1,2 --quiet"
    )
    done = CliRunner().invoke(
        app, [*shlex.split(command), "-o", str(out), "--markdown", str(markdown)]
    )
    assert done.exit_code == 0, done.output
    (run,) = json.loads(out.read_text())["runs"]
    assert "baselines" not in run  # no peers: those are bench/restore's
    default = random_bundle("tiny", seed=0).sampling
    profiles = run["profile"]
    assert [(p["steps"], p["start_t"], p["samples"]) for p in profiles] == [
        (default.steps, default.start_t, 1),
        (default.steps, default.start_t, 2),
    ]
    one, two = (_calls(p)["denoiser"] for p in profiles)
    assert two == 2 * one
    assert [r["samples"] for r in run["restorer"]] == [1, 2]
    assert "Where a restoration's time goes" in markdown.read_text()


def test_bench_restore_refuses_a_bad_flip_list() -> None:
    done = CliRunner().invoke(app, shlex.split("bench restore --preset tiny --flip maybe"))
    assert done.exit_code == 2
    assert "--flip expects a comma list of on, off" in done.output
