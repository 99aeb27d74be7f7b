"""A restore killed with SIGKILL in the middle of 50 images, then the same command again: no
image is redone or left partial, and the rerun's report holds every face of every image."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.imaging import read_image
from drbfr_cli.restore.records import RECORDS_NAME, is_image_record
from tests.conftest import PROJECT_ROOT
from tests.test_restore_cli import small_copies

IMAGES = 50
KILL_AFTER = 5
"""Outputs present when the first run is killed."""


def _outputs(out: Path) -> dict[str, int]:
    """Finished restored images: relative path -> mtime (ns)."""
    folder = out / "restored_imgs"
    if not folder.is_dir():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def _kill_when(process: subprocess.Popen, out: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(_outputs(out)) < count:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_kill_then_rerun_completes_without_redoing_or_partial_files(
    real_lq_whole_dir, shared_weights_dir, tmp_path
):
    names = [f"img_{index:02d}.jpg" for index in range(IMAGES)]
    small_copies(real_lq_whole_dir / "Blake_Lively.jpg", tmp_path / "in", names, scale=0.35)
    out = tmp_path / "out"
    args = [
        "restore", str(tmp_path / "in"), "-o", str(out), "--weights-dir", str(shared_weights_dir),
        "--detector", "yunet", "--model", "identity", "--bg-upsampler", "lanczos", "--save-faces",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "drbfr_cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _kill_when(process, out, KILL_AFTER)
    before = _outputs(out)
    assert KILL_AFTER <= len(before) < IMAGES, "the kill did not land in the middle"
    for name in before:  # whatever the kill left is complete
        assert read_image(out / "restored_imgs" / name).size == (490, 324)
    assert not (out / "report.json").exists()
    lines = [json.loads(line) for line in (out / RECORDS_NAME).read_text().splitlines()]
    kept = [line for line in lines if is_image_record(line)]
    finished = {r["relative"]: r for r in kept}
    assert set(before) <= set(finished)  # every finished image has its record
    assert all(len(r["faces"]) == 2 and r["output_size"] == [490, 324] for r in finished.values())

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    after = _outputs(out)
    assert sorted(after) == names
    assert all(after[name] == stamp for name, stamp in before.items())  # not redone
    for name in after:
        assert read_image(out / "restored_imgs" / name).size == (490, 324)
    leftovers = [p for p in out.rglob(".*") if p.is_file()]
    assert leftovers == []
    report = json.loads((out / "report.json").read_text())
    statuses = {r["relative"]: r["status"] for r in report["images"]}
    assert {n for n, s in statuses.items() if s == "skipped"} == set(before)
    assert report["summary"]["restored"] == IMAGES - len(before)
    for record in report["images"]:  # the skipped images keep their records
        assert len(record["faces"]) == 2 and record["output_size"] == [490, 324], record["relative"]
        if record["status"] == "skipped":
            assert record["faces"] == finished[record["relative"]]["faces"]
    assert report["summary"]["faces"] == 2 * IMAGES
    for folder in ("cropped_faces", "restored_faces", "cmp"):
        assert len(list((out / folder).iterdir())) == 2 * IMAGES
