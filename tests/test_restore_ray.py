"""`drbfr restore --engine ray` on a local Ray runtime (2 CPUs): the same files, byte for byte,
and the same report as one process, with a restore actor killed mid-run and restarted by Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from drbfr_cli.choices import Background
from drbfr_cli.restore.records import RECORDS_NAME, is_image_record
from tests.conftest import PROJECT_ROOT
from tests.test_restore_ranks import (
    _args,
    _comparable,
    _files,
    _outputs,
    make_photos,
    restore_in_one_process,
)


@pytest.fixture
def photos(real_lq_whole_dir: Path, tmp_path: Path) -> Path:
    return make_photos(real_lq_whole_dir, tmp_path / "photos")


@pytest.fixture
def one_process(photos: Path, shared_weights_dir: Path) -> Path:
    return restore_in_one_process(photos, photos.parent / "one", shared_weights_dir)


def _restore_actor(driver: subprocess.Popen, timeout: float = 240) -> psutil.Process:
    """The process of the restore actor (Ray names it after the map_batches class)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in psutil.process_iter(["cmdline"]):
            if any("_Restore" in part for part in process.info["cmdline"] or ()):
                return process
        assert driver.poll() is None, f"the run ended first: {driver.stderr.read()}"
        time.sleep(0.1)
    raise AssertionError("no restore actor appeared")


def test_ray_writes_what_one_process_writes_with_an_actor_killed(
    photos, one_process, shared_weights_dir, tmp_path
):
    out = tmp_path / "ray"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(
        [sys.executable, "-m", "drbfr_cli", *_args(photos, out, shared_weights_dir),
         "--engine", "ray", "--batch-size", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Killed as soon as it exists: with --model identity the actor's work is over in a moment,
    # so a later kill could miss the run. Its batches then run on the actor Ray restarts.
    actor = _restore_actor(run)
    actor.send_signal(signal.SIGKILL)
    killed_at = len(_outputs(out))
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    assert killed_at < 20, "the kill did not land in the middle"
    assert not actor.is_running()
    assert _files(out) == _files(one_process)  # nothing lost, byte for byte
    one, ray = (json.loads((o / "report.json").read_text()) for o in (one_process, out))
    assert [_comparable(r) for r in ray["images"]] == [_comparable(r) for r in one["images"]]
    assert {r["status"] for r in ray["images"]} == {"ok"} and ray["settings"]["engine"] == "ray"
    lines = [json.loads(line) for line in (out / RECORDS_NAME).read_text().splitlines()]
    records = [line for line in lines if is_image_record(line)]
    assert sorted(r["relative"] for r in records) == sorted(p.name for p in photos.iterdir())


def test_the_ray_stages_in_one_process_write_what_one_process_writes(
    photos, one_process, shared_weights_dir, tmp_path
):
    """The stage functions the Ray pipeline maps, chained here without Ray (for the plumbing,
    see the test above)."""
    import pickle

    from drbfr_cli.faces.detect import DetectorKind
    from drbfr_cli.imaging import find_sources
    from drbfr_cli.restore import ray_engine
    from drbfr_cli.restore.finish import write_job
    from drbfr_cli.restore.plan import plan_outputs
    from drbfr_cli.restore.run import RestoreOptions, open_log, ready_output_folder
    from drbfr_cli.restore.tools import ToolChoices

    out = tmp_path / "stages"
    options = RestoreOptions(out_dir=out, save_faces=True, batch_size=3)
    choices = ToolChoices(model="identity", weights_dir=shared_weights_dir,
                          detector=DetectorKind.YUNET, background=Background.LANCZOS)  # fmt: skip
    sources = find_sources([str(photos)], ())
    ready_output_folder(out, lambda _message: None)
    log = open_log(out)
    rows = [
        {"job": pickle.dumps(ray_engine.skip_or_job(s, o, options, log))}
        for s, o in zip(sources, plan_outputs(sources, options), strict=True)
    ]
    rows = [ray_engine._prepare(row, options, choices) for row in rows]
    restore = ray_engine._Restore(choices, options.batch_size)
    batches = [rows[i : i + 5] for i in range(0, len(rows), 5)]  # other batches than one process
    rows = [
        {"job": data}
        for batch in batches
        for data in restore({"job": [row["job"] for row in batch]})["job"]
    ]
    for row in rows:
        rendered = ray_engine._render(row, options, choices)
        write_job(pickle.loads(rendered["job"]), pickle.loads(rendered["rendered"]), log)
    log.close()
    assert _files(out) == _files(one_process)
