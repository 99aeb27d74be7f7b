"""`drbfr restore` as several processes under torchrun: each rank takes a hash shard of the
inputs, writes its own record file and report part; the outputs are byte for byte those of one
process, every input is written once, the merged report lists all; a rank killed with SIGKILL
and a rerun lose nothing and redo nothing."""

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
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.errors import DrbfrError
from drbfr_cli.restore.merge import PARTS_DIR, PartWriter, parts_dir
from drbfr_cli.restore.ranks import Rank, rank_from_env, shard_of
from drbfr_cli.restore.records import RecordLog, is_image_record, record_files
from drbfr_cli.restore.report import ImageRecord, ImageStatus, RunSummary
from tests.conftest import PROJECT_ROOT
from tests.test_restore_cli import small_copies

NAMES = ("00.jpg", "10045.png", "Blake_Lively.jpg", "example.jpg", "rfpp_06.png")
COPIES = 4
"""20 inputs: four copies of each whole photo under different names."""


def _args(inputs: Path, out: Path, weights: Path) -> list[str]:
    return [
        "restore", str(inputs), "-o", str(out), "--weights-dir", str(weights),
        "--detector", "yunet", "--model", "identity", "--bg-upsampler", "lanczos",
        "--save-faces", "--quiet",
    ]  # fmt: skip


def _torchrun(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    return subprocess.Popen(
        [*command, "-m", "drbfr_cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _files(out: Path) -> dict[str, bytes]:
    """Every output file (images and face crops) by path relative to OUT."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for folder in ("restored_imgs", "cropped_faces", "restored_faces", "cmp")
        if (out / folder).is_dir()
        for p in (out / folder).rglob("*")
        if p.is_file()
    }


def _records(out: Path) -> list[dict]:
    lines = [json.loads(line) for f in record_files(out) for line in f.read_text().splitlines()]
    return [line for line in lines if is_image_record(line)]


def _comparable(record: dict) -> dict:
    """A record without what depends on the process or the run (times, rank, OUT)."""
    drop = {"timings", "rank", "host", "output", "status"}
    return {key: value for key, value in record.items() if key not in drop}


def make_photos(whole_dir: Path, folder: Path) -> Path:
    """20 small photos: COPIES copies of each whole photo, under different names."""
    for name in NAMES:
        stem, ext = Path(name).stem, Path(name).suffix
        copies = [f"{stem}_{k}{ext}" for k in range(COPIES)]
        small_copies(whole_dir / name, folder, copies, scale=0.3)
    return folder


def restore_in_one_process(photos: Path, out: Path, weights: Path) -> Path:
    result = CliRunner().invoke(app, _args(photos, out, weights))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def photos(real_lq_whole_dir: Path, tmp_path_factory) -> Path:
    return make_photos(real_lq_whole_dir, tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def one_process(photos: Path, shared_weights_dir: Path) -> Path:
    return restore_in_one_process(photos, photos.parent / "one", shared_weights_dir)


def test_the_shard_is_a_stable_hash_of_the_relative_path():
    names = [f"dir/img_{k:04d}.jpg" for k in range(2000)]
    shards = [shard_of(name, 4) for name in names]
    assert [shards.count(r) for r in range(4)] == pytest.approx([500] * 4, abs=60)
    assert shard_of("dir/img_0001.jpg", 4) == shards[1]  # the same whatever else is there
    ranks = [Rank(r, 4) for r in range(4)]
    assert all(sum(rank.takes(name) for rank in ranks) == 1 for name in names)


def test_ranks_come_from_the_launcher_variables():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    rank = rank_from_env(env)
    assert (rank.rank, rank.world_size, rank.local_rank, rank.local_world_size) == (3, 4, 1, 2)
    assert rank_from_env({}).world_size == 1 and not rank_from_env({}).sharded
    for bad in ({"RANK": "2", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "two"}):
        with pytest.raises(DrbfrError):
            rank_from_env(bad)


def test_a_record_log_reads_the_shards_of_every_rank(tmp_path):
    image = tmp_path / "restored_imgs" / "a.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"pixels")
    record = {"input": "a.png", "relative": "a.png", "status": "ok", "faces": [], "size": None,
              "output_size": None, "files": {"restored_imgs/a.png": _sha(b"pixels")}}  # fmt: skip
    (tmp_path / "report.records.rank-00001.jsonl").write_text(json.dumps(record) + "\n")
    log = RecordLog(tmp_path, "report.records.rank-00000.jsonl")
    assert log.owns(image) and log.finished(image)["relative"] == "a.png"
    image.write_bytes(b"edited")
    assert not log.owns(image) and log.finished(image) is None
    log.close()


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_two_ranks_write_what_one_process_writes(photos, one_process, shared_weights_dir):
    out = photos.parent / "two"
    process = _torchrun(_args(photos, out, shared_weights_dir))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert _files(out) == _files(one_process)  # byte for byte, the same files
    records = _records(out)
    assert sorted(r["relative"] for r in records) == sorted(p.name for p in photos.iterdir())
    assert {r["rank"] for r in records} == {0, 1}  # each input written once, by one rank
    assert sorted(p.name for p in record_files(out)) == [
        "report.records.rank-00000.jsonl", "report.records.rank-00001.jsonl",
    ]  # fmt: skip
    one, two = (json.loads((o / "report.json").read_text()) for o in (one_process, out))
    assert [_comparable(r) for r in two["images"]] == [_comparable(r) for r in one["images"]]
    assert two["summary"]["restored"] == 20 and two["summary"]["faces"] == one["summary"]["faces"]
    assert two["settings"]["world_size"] == 2 and not (out / PARTS_DIR).exists()


def _outputs(out: Path) -> dict[str, int]:
    folder = out / "restored_imgs"
    if not folder.is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if not p.name.startswith(".")}


def _kill_a_rank(process: subprocess.Popen, out: Path, count: int) -> None:
    """SIGKILL rank 1's process once `count` outputs exist; torchrun then stops the other."""
    deadline = time.monotonic() + 240
    while len(_outputs(out)) < count:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.02)
    workers = psutil.Process(process.pid).children()
    victim = next(w for w in workers if w.environ().get("RANK") == "1")
    os.kill(victim.pid, signal.SIGKILL)
    process.communicate(timeout=300)
    assert process.returncode != 0


def test_a_killed_rank_and_a_rerun_lose_nothing_and_redo_nothing(
    photos, one_process, shared_weights_dir
):
    out = photos.parent / "killed"
    args = _args(photos, out, shared_weights_dir)
    _kill_a_rank(_torchrun(args), out, 4)
    before = _outputs(out)
    assert 4 <= len(before) < 20, "the kill did not land in the middle"
    assert not (out / "report.json").exists()
    rerun = _torchrun(args)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    after = _outputs(out)
    assert all(after[name] == stamp for name, stamp in before.items())  # not redone
    assert _files(out) == _files(one_process)  # nothing lost, nothing partial
    written = [r["relative"] for r in _records(out) if r["status"] == "ok"]
    assert set(written) == {p.name for p in photos.iterdir()}
    # an image is written twice only when the kill cut it between its record and its file
    assert all(written.count(name) == 1 for name in before)
    report = json.loads((out / "report.json").read_text())
    statuses = {r["relative"]: r["status"] for r in report["images"]}
    assert {name for name, status in statuses.items() if status == "skipped"} == set(before)
    assert report["summary"]["restored"] == 20 - len(before) and len(statuses) == 20
    assert [p for p in out.rglob(".*") if p.is_file()] == []


def _record(name: str, rank: int) -> ImageRecord:
    return ImageRecord(input=name, relative=name, output=f"out/{name}", status=ImageStatus.OK,
                       timings={"read": 1.0}, rank=rank, host="h")  # fmt: skip


def test_report_merge_puts_the_parts_of_all_ranks_in_input_order(tmp_path):
    folder = parts_dir(tmp_path, "run1")
    order = {0: [0, 3], 1: [1, 2, 4]}
    writers = {r: PartWriter(folder, r, 2, order[r], settings={"device": f"cpu{r}"},
                             csv_path=tmp_path / "r.csv") for r in order}  # fmt: skip
    for rank, indexes in order.items():
        for index in indexes:
            writers[rank].add(_record(f"{index}.png", rank))
    writers[0].close(RunSummary())
    runner = CliRunner()
    missing = runner.invoke(app, ["report", "merge", str(tmp_path)])
    assert missing.exit_code == 2 and "rank(s) 1 of 2 did not finish" in missing.stderr
    writers[1].close(RunSummary())
    merged = runner.invoke(app, ["report", "merge", str(tmp_path)])
    assert merged.exit_code == 0, merged.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["relative"] for r in report["images"]] == [f"{i}.png" for i in range(5)]
    assert [r["rank"] for r in report["images"]] == [0, 1, 1, 0, 1]
    assert report["summary"]["restored"] == 5 and report["settings"]["devices"] == ["cpu0", "cpu1"]
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 6
    assert not (tmp_path / PARTS_DIR).exists()
    again = runner.invoke(app, ["report", "merge", str(tmp_path)])
    assert again.exit_code == 2 and "no report parts" in again.stderr
