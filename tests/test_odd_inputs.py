"""Odd inputs through the real CLI on real photos: a named pipe among the inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_restore_cli import IDENTITY, small_copies


def _drbfr(*args: str | Path, **env: str) -> subprocess.CompletedProcess:
    """The installed entry point, as a shell runs it, stdout and stderr on pipes; a hang
    fails the test instead of the test run."""
    command = [str(Path(sys.executable).with_name("drbfr")), *map(str, args)]
    environment = {**os.environ, **env}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=environment, check=False
    )


def _weights(shared_weights_dir: Path) -> tuple[str, ...]:
    return ("--weights-dir", str(shared_weights_dir), "--detector", "yunet", *IDENTITY)


def _statuses(out: Path) -> dict[str, str]:
    report = json.loads((out / "report.json").read_text())
    return {record["relative"]: record["status"] for record in report["images"]}


@pytest.fixture
def photos(real_lq_whole_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    small_copies(real_lq_whole_dir / "Blake_Lively.jpg", folder, ["a.jpg", "b.png"])
    return folder


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_fails_alone_and_never_blocks(photos, shared_weights_dir, tmp_path):
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    os.mkfifo(photos / "in_folder.png")  # found in a folder: not a file, not an input
    out = tmp_path / "out"
    named = _drbfr("restore", pipe, photos / "a.jpg", "-o", out, *_weights(shared_weights_dir))
    assert named.returncode == 1, named.stderr
    errors = [line for line in named.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {pipe}: is a named pipe (FIFO), not an image file"]
    assert _statuses(out) == {"a.jpg": "ok", "pipe.jpg": "failed"}
    piped = subprocess.run(
        [str(Path(sys.executable).with_name("drbfr")), "restore", "-", photos, "-o",
         tmp_path / "o3", *_weights(shared_weights_dir)],
        input=f"{pipe}\n", capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert piped.returncode == 1, piped.stderr
    assert _statuses(tmp_path / "o3") == {"a.jpg": "ok", "b.png": "ok", "pipe.jpg": "failed"}
