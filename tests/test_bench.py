"""`drbfr bench restore|train` on the tiny preset through the CLI (restore also with the peers
bench/restore adds), and the pieces they rest on.

No test asserts a speed: the commands must run and write well-formed results.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.harness import baselines, peers
from bench.harness.baselines import Baseline, build_baseline
from drbfr_cli.benchmark.inputs import KnownFacesDetector, face_canvas, synthetic_image
from drbfr_cli.benchmark.random_bundle import random_bundle, shape_copy
from drbfr_cli.cli.main import app
from drbfr_cli.diffusion.sampling import SamplingConfig, network_calls, restore_latents
from drbfr_cli.faces.align import align_face
from drbfr_cli.presets import ldm_config_from_preset
from drbfr_cli.restore.prepare import resize_square

runner = CliRunner()

_TINY = ldm_config_from_preset("tiny")[0].sampling
CALLS_PER_STEP = (1 if _TINY.guidance_scale == 1 else 2) * _TINY.samples
"""Network calls per face and sampling step of the tiny preset's default sampling: two with
guidance, once for each of the samples it averages."""


def _bench(command: str, *extra: str, obj: object = None):
    """Run `drbfr bench COMMAND EXTRA...` (COMMAND split like a shell line); `obj`: the peers
    bench/restore passes."""
    return runner.invoke(app, ["bench", *shlex.split(command), *extra], obj=obj)


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and value > 0


class _Conv(torch.nn.Module):
    """A one-layer stand-in for a 512 px baseline: the measuring code runs, in milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.conv(x),)


@pytest.fixture
def small_baselines(monkeypatch: pytest.MonkeyPatch) -> None:
    def build(device):
        with torch.device(device):
            return _Conv()

    for name in baselines.BUILDERS:
        monkeypatch.setitem(
            baselines.BUILDERS, name, (build, lambda m, x: m(x)[0], "stand-in for the test")
        )


def test_bench_restore_tiny_writes_json_and_tables(tmp_path: Path, small_baselines) -> None:
    out, markdown = tmp_path / "restore.json", tmp_path / "restore.md"
    done = _bench(
        "restore --preset tiny --device cpu --batch-sizes 1,2 --steps 2 --start-t 1,0.5 "
        "--faces 2 --repeats 1 --warmup 0 --image-sides 256 --face-counts 1,2 --copies 1 "
        "--quiet",
        *("-o", str(out), "--markdown", str(markdown)),
        obj=peers.Baselines(),
    )
    assert done.exit_code == 0, done.output
    result = json.loads(out.read_text())
    assert result["kind"] == "restore"
    assert set(result) >= {"machine", "settings", "model", "inputs", "pipeline_stages", "runs"}
    assert all(_positive(v) for v in result["model"]["flops_per_face"].values())
    assert all(_positive(v) for v in result["pipeline_stages"]["seconds_per_image"].values())
    (run,) = result["runs"]
    assert run["precision"] == "fp32"
    assert set(run) >= {
        "model_stages",
        "estimated",
        "restorer",
        "batching",
        "baselines",
        "ratios",
        "pipeline",
        "scaling",
    }
    for row in run["model_stages"]:
        for stage in ("dr", "vae_encode", "network_call", "vae_decode"):
            assert _positive(row[stage]["seconds"]) and _positive(row[stage]["host_peak_mb"])
        assert [s["calls"] for s in row["sampling"]] == [2 * CALLS_PER_STEP, 1 * CALLS_PER_STEP]
    measured = {(r["batch"], r["start_t"]) for r in run["restorer"]}
    assert measured == {(batch, t) for batch in (1, 2) for t in (1.0, 0.5)}
    assert all(_positive(r["faces_per_s"]) for r in run["restorer"])
    assert all(_positive(r["speedup_vs_one_face_loop"]) for r in run["batching"])
    assert set(run["baselines"]) == {"gfpgan", "codeformer"}
    assert all(_positive(r["x_gfpgan"]) and _positive(r["x_codeformer"]) for r in run["ratios"])
    assert [r["batch"] for r in run["pipeline"]["rows"]] == [1, 2]
    assert _positive(run["pipeline"]["speedup_vs_one_face_loop"])
    assert [r["faces_per_image"] for r in run["scaling"]["face_count"]] == [1, 2]
    assert [r["faces"] for r in run["scaling"]["face_count"]] == [1, 2]
    assert [r["side"] for r in run["scaling"]["image_size"]] == [512, 256]
    text = markdown.read_text()
    assert "Restorer by batch size" in text and "x GFPGAN v1 clean time" in text


def test_bench_restore_calls_only_extrapolates(tmp_path: Path) -> None:
    out = tmp_path / "calls.json"
    done = _bench(
        "restore --preset tiny --device cpu --calls-only --batch-sizes 1 --steps 20 "
        "--start-t 1,0.4 --repeats 1 --warmup 0 --no-pipeline",
        *("-o", str(out)),
    )
    assert done.exit_code == 0, done.output
    assert "extrapolated from single calls" in done.output
    (run,) = json.loads(out.read_text())["runs"]
    assert "restorer" not in run and "pipeline" not in run and "baselines" not in run
    expected = [(20 * CALLS_PER_STEP, 1.0), (8 * CALLS_PER_STEP, 0.4)]
    assert [(r["calls"], r["start_t"]) for r in run["estimated"]] == expected
    assert all(_positive(r["seconds_per_face"]) for r in run["estimated"])


def test_bench_train_tiny_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    done = _bench(
        "train --preset tiny --device cpu --batch-sizes 1,2 --repeats 1 --warmup 0 --quiet",
        *("-o", str(out)),
    )
    assert done.exit_code == 0, done.output
    result = json.loads(out.read_text())
    assert result["kind"] == "train"
    rows = [(r["stage"], r["batch"]) for r in result["rows"]]
    assert rows == [("drm", 2), ("vae", 1), ("vae", 2), ("ldm", 1), ("ldm", 2)]
    for row in result["rows"]:
        assert row["precision"] == "no"
        for key in ("items_per_s", "seconds_per_step", "host_peak_mb", "trained_parameters"):
            assert _positive(row[key]), key


def test_bench_train_runs_the_real_ldm_loop_with_and_without_the_replay_pool(
    tmp_path: Path,
) -> None:
    """--loop-steps: `train` itself on the small (TAEF2) preset, once per --pair-reuse value;
    with reuse 4 the loader encodes a quarter of the pairs (counted, not timed)."""
    out = tmp_path / "train.json"
    done = _bench(
        "train --preset small --stages ldm --device cpu --batch-sizes 2 --repeats 1 --warmup 0 "
        "--loop-steps 4 --pair-reuse 1,4 --workers 0 --quiet",
        *("-o", str(out)),
    )
    assert done.exit_code == 0, done.output
    rows = json.loads(out.read_text())["rows"]
    loops = [r for r in rows if r["stage"] == "ldm loop"]
    assert [r["pair_reuse"] for r in loops] == [1, 4]
    for row in loops:
        assert _positive(row["items_per_s"]) and _positive(row["seconds_per_step"])
    bad = _bench("train --preset small --stages ldm --loop-steps 2 --pair-reuse 0")
    assert bad.exit_code == 2 and "pair reuse" in bad.output


def test_bench_restore_with_the_peers_estimates_its_ratios(tmp_path: Path, small_baselines) -> None:
    """bench/restore's peers on --calls-only: drbfr's side of the ratios is extrapolated."""
    out = tmp_path / "calls.json"
    done = _bench(
        "restore --preset tiny --device cpu --calls-only --batch-sizes 1 --steps 2 "
        "--repeats 1 --warmup 0 --no-pipeline --quiet",
        *("-o", str(out)),
        obj=peers.Baselines(("gfpgan",)),
    )
    assert done.exit_code == 0, done.output
    (run,) = json.loads(out.read_text())["runs"]
    assert set(run["baselines"]) == {"gfpgan"}
    assert all(r["estimated"] and _positive(r["x_gfpgan"]) for r in run["ratios"])


def test_bench_restore_script_splits_its_options_from_drbfrs() -> None:
    chosen, rest = peers.parse(["--baselines", "gfpgan", "--device", "cpu", "--faces", "2"])
    assert chosen == peers.Baselines(("gfpgan",)) and rest == ["--device", "cpu", "--faces", "2"]
    assert peers.parse(["--baselines", "none", "--baseline-batch-sizes", "1,8"]) == (None, [])
    assert peers.parse(["--baseline-batch-sizes", "1,8"])[0].batch_sizes == (1, 8)
    with pytest.raises(SystemExit) as stopped:
        peers.parse(["--baselines", "gfpgan,restoreformer"])
    assert stopped.value.code == 2


def test_the_wheel_holds_no_development_harness() -> None:
    """drbfr_cli (the wheel's one package) has no peer baselines, GPU check or make-bench suite,
    and imports nothing from the checkout's bench/."""
    package = Path(__file__).resolve().parent.parent / "drbfr_cli"
    names = {path.stem for path in (package / "benchmark").glob("*.py")}
    assert not names & {"baselines", "gpu_check", "suite", "peers", "restore_pipeline"}
    harness = re.compile(r"^\s*(from|import) bench\b", re.MULTILINE)
    assert not [path for path in package.rglob("*.py") if harness.search(path.read_text())]


def test_bench_rejects_bad_options() -> None:
    done = _bench("restore --batch-sizes 0")
    assert done.exit_code == 2 and "must be positive" in done.output
    done = _bench("restore --device cpu --precision fp16")
    assert done.exit_code == 2 and "fp16 needs a GPU" in done.output
    done = _bench("train --stages gan")
    assert done.exit_code == 2 and "stages must be among" in done.output


# ---------------------------------------------------------------------------------------------
# The pieces


class _Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, latents, timesteps, *, conditional):
        self.calls += 1
        return torch.zeros_like(latents)


@pytest.mark.parametrize(
    "config",
    [
        SamplingConfig(steps=20),
        SamplingConfig(steps=50, start_t=0.4),
        SamplingConfig(steps=7, start_t=0.3, tem_t=0.2, tem_steps=3),
        SamplingConfig(steps=10, guidance_scale=2.0),
        SamplingConfig(steps=10, start_t=0.2, guidance_scale=2.0, tem_t=0.1, samples=3),
    ],
)
def test_network_calls_counts_what_sampling_calls(config: SamplingConfig) -> None:
    schedule = random_bundle("tiny", device="meta").schedule
    counting = _Counting()
    restore_latents(counting, torch.zeros(1, 3, 4, 4), [0], schedule, config)
    assert network_calls(schedule, config) == counting.calls


def test_random_bundle_restores_and_its_shape_copy_matches() -> None:
    bundle = random_bundle("tiny", seed=1)
    again = random_bundle("tiny", seed=1)
    assert torch.equal(bundle.ldrm.null_dr, again.ldrm.null_dr)
    faces = torch.rand(2, 3, bundle.face_size, bundle.face_size) * 2 - 1
    restored = bundle.restore(faces, [0, 1], SamplingConfig(steps=2))
    assert restored.shape == faces.shape and torch.isfinite(restored).all()
    meta = shape_copy(bundle)
    assert next(meta.ldrm.parameters()).device.type == "meta"
    shapes = [p.shape for p in bundle.ldrm.parameters()]
    assert [p.shape for p in meta.ldrm.parameters()] == shapes


def test_baselines_build_and_run_on_shapes() -> None:
    """The real GFPGAN and CodeFormer architectures, on the meta device (no compute)."""
    for name in ("gfpgan", "codeformer"):
        built = build_baseline(name, "meta")
        if not isinstance(built, Baseline):
            pytest.skip(built.reason)
        facts = baselines.baseline_facts(built)
        assert facts["parameters"] > 80e6 and facts["flops_per_face"] > 300e9


def test_canvas_faces_align_back_to_the_placed_crops() -> None:
    rng = np.random.default_rng(0)
    faces = [synthetic_image(rng) for _ in range(3)]
    canvas = face_canvas(faces, 5)
    found = KnownFacesDetector(canvas.landmarks).detect(canvas.image, 0.5)
    assert len(found) == 5
    for index, face in enumerate(found):
        crop = align_face(canvas.image, face).crop
        placed = resize_square(resize_square(faces[index % 3], 256), 512)
        error = np.abs(crop[64:-64, 64:-64] - placed[64:-64, 64:-64]).mean()
        assert error < 0.02


def test_peak_memory_sees_an_allocation() -> None:
    """In a fresh process, so that no memory freed by earlier tests can be reused unseen."""
    code = (
        "import numpy as np, torch\n"
        "from drbfr_cli.benchmark.measure import measure\n"
        "def allocate():\n"
        "    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched\n"
        "    block[::512] += 1\n"
        "m = measure(allocate, device=torch.device('cpu'), repeats=1, warmup=0)\n"
        "print(m.host_added_mb)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(done.stdout.strip().splitlines()[-1]) > 48


def test_a_variant_ldm_preset_benches_on_its_base_presets_parts() -> None:
    """small-face trains drbfr-small's denoiser on the small DRM and TAEF2: its random bundle
    has the small preset's network shape and the small-face preset's sampling."""
    from drbfr_cli.benchmark.random_bundle import random_bundle
    from drbfr_cli.presets import ldm_config_from_preset

    face, small = random_bundle("small-face", device="meta"), random_bundle("small", device="meta")
    assert face.ldrm.config == small.ldrm.config
    assert face.sampling == ldm_config_from_preset("small-face")[0].sampling != small.sampling
