"""`drbfr train drm` and `drbfr analyze drm` through the real CLI on real faces."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from tests.conftest import PROJECT_ROOT

runner = CliRunner()
QUICK = [
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--log-every",
    "5",
    "--checkpoint-every",
    "10",
    "--sample-every",
    "20",
]


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def split_faces(hq_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Eight faces to train on, four never seen, to analyse with."""
    root = tmp_path_factory.mktemp("faces")
    faces = sorted(hq_dir.glob("*.png"))
    for index, face in enumerate(faces):
        target = root / ("train" if index < 8 else "unseen") / face.name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(face, target)
    return root / "train", root / "unseen"


@pytest.fixture(scope="module")
def trained_run(split_faces: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("drm") / "run"
    result = runner.invoke(
        app,
        ["train", "drm", "--data", str(split_faces[0]), "-o", str(run), "--steps", "60", *QUICK],
    )
    assert result.exit_code == 0, result.output
    return run


def test_training_loss_falls_and_the_run_is_complete(trained_run: Path) -> None:
    log = _log(trained_run)
    assert [entry["step"] for entry in log] == list(range(5, 65, 5))
    first, last = log[0], log[-1]
    assert last["recon"] < 0.7 * first["recon"]
    assert last["loss"] < first["loss"]
    assert {"recon", "contrastive", "distribution"} <= set(first)
    final = trained_run / "final"
    weights = {p.name for p in final.glob("*.safetensors")}
    assert weights == {"encoder.safetensors", "generator.safetensors", "head.safetensors"}
    config = json.loads((final / "config.json").read_text())
    assert config["task"] == "drm" and config["task_config"]["preset"] == "tiny"
    assert config["task_config"]["model"]["tokens"] == 4
    encoder = load_file(final / "encoder.safetensors")
    assert all(t.isfinite().all() for t in encoder.values())
    assert list((trained_run / "samples").glob("*.png"))


def test_resume_continues_at_the_right_step(split_faces: tuple[Path, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "drm", "--data", str(split_faces[0]), "-o", str(run), *QUICK]
    assert runner.invoke(app, [*args, "--steps", "20"]).exit_code == 0
    again = runner.invoke(app, [*args, "--steps", "20"])
    assert again.exit_code == 2 and "--resume" in again.stderr
    resumed = runner.invoke(app, [*args, "--steps", "30", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert [entry["step"] for entry in _log(run)] == [5, 10, 15, 20, 25, 30]


@pytest.mark.parametrize(
    "content", [None, b"not an image"], ids=["empty-folder", "no-readable-image"]
)
def test_bad_data_folders_are_one_line_errors(tmp_path: Path, content: bytes | None) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if content is not None:
        (data / "face.png").write_bytes(content)
    result = runner.invoke(
        app, ["train", "drm", "--data", str(data), "-o", str(tmp_path / "run"), "--steps", "2"]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and str(data) in result.stderr
    assert "Traceback" not in result.output


def test_analyze_writes_every_report(
    trained_run: Path, split_faces: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "analysis"
    args = [
        "analyze",
        "drm",
        "--drm",
        str(trained_run),
        "--data",
        str(split_faces[1]),
        "-o",
        str(out),
    ]
    result = runner.invoke(app, [*args, "--crop", "96", "--draws", "3", "--seed", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "analysis.json").read_text())
    assert data["faces"] == 4 and data["protocol"].startswith("leave-one-face-out")
    for key in ("linear", "knn"):
        assert (
            0.0 <= data["type_probe"][key] <= 1.0
            and 0.0 <= data["type_probe_untrained"][key] <= 1.0
        )
    assert set(data["r2"]) == {"sigma", "r", "delta", "q"}
    assert -1.0 <= data["cosine_same_face_different_degradations"] <= 1.0
    assert data["reconstruction"]["psnr_glq_vs_lq"] > 10
    assert (out / "report.md").read_text().startswith("# DRM analysis")
    assert (out / "dr_scatter.png").stat().st_size > 1000


def test_analyze_refuses_a_corrupt_run(
    trained_run: Path, split_faces: tuple[Path, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "run"
    shutil.copytree(trained_run, broken)
    weights = broken / "final" / "encoder.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = runner.invoke(
        app,
        [
            "analyze",
            "drm",
            "--drm",
            str(broken),
            "--data",
            str(split_faces[1]),
            "-o",
            str(tmp_path / "a"),
        ],
    )
    assert result.exit_code == 2 and "encoder.safetensors" in result.stderr
    missing = runner.invoke(
        app,
        [
            "analyze",
            "drm",
            "--drm",
            str(tmp_path / "nope"),
            "--data",
            str(split_faces[1]),
            "-o",
            str(tmp_path / "b"),
        ],
    )
    assert missing.exit_code == 2


def test_torchrun_two_processes_train_the_drm_in_sync(
    split_faces: tuple[Path, Path], tmp_path: Path
) -> None:
    """The same command scales to many processes: 2 CPU ranks (gloo) stay in sync."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "drbfr_cli",
        "train",
        "drm",
        "--data",
        str(split_faces[0]),
        "-o",
        str(run),
        "--steps",
        "6",
        *QUICK,
    ]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((run / "final" / "config.json").read_text())
    assert config["world_size"] == 2
    assert [entry["step"] for entry in _log(run)] == [5, 6]  # every 5 steps, and the last
