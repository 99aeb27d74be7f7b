"""The record file (OUT/report.records.jsonl): a rerun's report keeps the records of the images
it skips, and files drbfr did not write are never counted as finished nor replaced."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.imaging import write_image
from drbfr_cli.restore.records import RECORDS_NAME, is_image_record
from tests.test_restore_cli import IDENTITY, small_copies

runner = CliRunner()


def _restore(*args: str | Path):
    return runner.invoke(app, ["restore", *map(str, args)])


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _records(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / RECORDS_NAME).read_text().splitlines()]
    return [line for line in lines if is_image_record(line)]


@pytest.fixture
def photos(real_lq_whole_dir: Path, tmp_path: Path) -> Path:
    """Four small real photos with two faces each."""
    folder = tmp_path / "photos"
    small_copies(real_lq_whole_dir / "Blake_Lively.jpg", folder, ["a.jpg", "b.png"])
    small_copies(real_lq_whole_dir / "rfpp_06.png", folder, ["c.png", "d.png"])
    return folder


@pytest.fixture
def faces(real_lq_aligned_dir: Path, tmp_path: Path) -> Path:
    """Three real aligned faces."""
    folder = tmp_path / "faces"
    folder.mkdir()
    for path in sorted(real_lq_aligned_dir.glob("*.png"))[:3]:
        shutil.copy(path, folder / path.name)
    return folder


def _yunet(weights: Path) -> tuple[str, ...]:
    return ("--weights-dir", str(weights), "--detector", "yunet", *IDENTITY)


def test_a_rerun_report_keeps_the_records_of_skipped_images(photos, shared_weights_dir):
    out = photos.parent / "out"
    args = (photos, "-o", out, "--report-csv", out / "report.csv", *_yunet(shared_weights_dir))
    first = _restore(*args)
    assert first.exit_code == 0, first.output
    finished = {r["relative"]: r for r in _report(out)["images"]}
    assert [r["relative"] for r in _records(out)] == sorted(finished)
    (out / "restored_imgs" / "b.png").unlink()
    again = _restore(*args)
    assert again.exit_code == 0, again.output
    report = _report(out)
    for record in report["images"]:
        name = record["relative"]
        assert record["status"] == ("ok" if name == "b.png" else "skipped")
        assert len(record["faces"]) == 2 and record["size"] == finished[name]["size"], name
        if name != "b.png":
            assert record["faces"] == finished[name]["faces"]
            assert record["files"] == finished[name]["files"]
    summary = report["summary"]
    assert summary["faces"] == 8 and summary["faces_restored"] == 2
    assert (summary["restored"], summary["skipped"]) == (1, 3)
    with (out / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["faces"] for row in rows] == ["2"] * 4
    assert len(_records(out)) == 5  # appended, never rewritten


def test_files_the_user_put_in_out_are_kept_and_fail_their_image(faces, tmp_path):
    names = sorted(p.name for p in faces.iterdir())
    out = tmp_path / "out"
    text_file = out / "restored_imgs" / names[0]
    text_file.parent.mkdir(parents=True)
    text_file.write_text("my notes")
    unrelated = out / "restored_imgs" / names[1]
    shutil.copy(faces / names[2], unrelated)  # a real image, but not drbfr's output
    result = _restore(faces, "-o", out, "--aligned", *IDENTITY)
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("drbfr did not write" in line for line in errors)
    assert text_file.read_text() == "my notes"
    assert unrelated.read_bytes() == (faces / names[2]).read_bytes()
    statuses = {r["relative"]: r["status"] for r in _report(out)["images"]}
    assert statuses == {names[0]: "failed", names[1]: "failed", names[2]: "ok"}
    forced = _restore(faces, "-o", out, "--aligned", "--overwrite", *IDENTITY)
    assert forced.exit_code == 1 and text_file.read_text() == "my notes"


def test_an_output_changed_after_the_run_is_not_finished(faces, tmp_path):
    out = tmp_path / "out"
    assert _restore(faces, "-o", out, "--aligned", *IDENTITY).exit_code == 0
    edited = sorted((out / "restored_imgs").iterdir())[0]
    write_image(edited, np.zeros((8, 8, 3), np.float32))
    result = _restore(faces, "-o", out, "--aligned", *IDENTITY)
    assert result.exit_code == 1 and f"{edited}: a file drbfr did not write" in result.stderr
    assert _report(out)["summary"]["skipped"] == 2


def test_a_user_file_at_a_face_crop_path_fails_the_image(faces, tmp_path):
    out = tmp_path / "out"
    first = sorted(faces.iterdir())[0]
    blocker = out / "cropped_faces" / f"{first.stem}_00.png"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("keep me")
    result = _restore(faces, "-o", out, "--aligned", "--save-faces", *IDENTITY)
    assert result.exit_code == 1 and str(blocker) in result.stderr
    assert blocker.read_text() == "keep me"
    assert not (out / "restored_imgs" / first.name).exists()
    assert len(list((out / "restored_imgs").iterdir())) == 2


def test_a_user_report_json_or_record_file_is_never_replaced(faces, tmp_path):
    for name in ("report.json", RECORDS_NAME):
        out = tmp_path / name
        out.mkdir()
        (out / name).write_text('{"mine": true}\n')
        result = _restore(faces, "-o", out, "--aligned", *IDENTITY)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1
        assert "not a drbfr" in result.stderr
        assert (out / name).read_text() == '{"mine": true}\n'
        assert not (out / "restored_imgs").exists()


LEGACY_REPORT = Path(__file__).parent / "fixtures" / "legacy" / "restore_report.json"
"""report.json of `drbfr restore faces -o out --aligned --model identity` by drbfr 0.1.0 (no
record file then) on the first two real aligned faces; its paths are relative to that run's
directory."""


def test_a_rerun_adopts_the_outputs_a_legacy_report_lists(faces, tmp_path):
    first, second, third = sorted(p.name for p in faces.iterdir())
    out = tmp_path / "out"
    (out / "restored_imgs").mkdir(parents=True)
    shutil.copy(LEGACY_REPORT, out / "report.json")
    legacy = {r["relative"]: r for r in json.loads(LEGACY_REPORT.read_text())["images"]}
    assert sorted(legacy) == [first, second]
    for name in (first, second):
        shutil.copy(faces / name, out / "restored_imgs" / name)  # what that run wrote
    (out / "restored_imgs" / third).write_text("mine")  # not in the report: stays foreign
    result = _restore(faces, "-o", out, "--aligned", *IDENTITY)
    assert result.exit_code == 1, result.output
    assert "adopted 2 output(s)" in result.stderr
    assert "drbfr did not write" in result.stderr
    assert (out / "restored_imgs" / third).read_text() == "mine"
    images = {r["relative"]: r for r in _report(out)["images"]}
    assert images[third]["status"] == "failed"
    for name in (first, second):
        assert images[name]["status"] == "skipped"
        # the legacy records, plus the fields added since at their defaults
        for face, old in zip(images[name]["faces"], legacy[name]["faces"], strict=True):
            assert {key: face[key] for key in old} == old
            assert face["identity"] is None and face["identity_failed"] is False
        assert images[name]["size"] == legacy[name]["size"] == [512, 512]
    assert [r["relative"] for r in _records(out)] == [first, second, third]
    again = _restore(faces, "-o", out, "--aligned", *IDENTITY)
    assert "adopted" not in again.stderr and _report(out)["summary"]["skipped"] == 2


def test_a_legacy_output_removed_since_is_restored_again(faces, tmp_path):
    kept = sorted(p.name for p in faces.iterdir())[0]
    out = tmp_path / "out"
    (out / "restored_imgs").mkdir(parents=True)
    shutil.copy(LEGACY_REPORT, out / "report.json")
    shutil.copy(faces / kept, out / "restored_imgs" / kept)  # the other listed one is gone
    result = _restore(faces, "-o", out, "--aligned", *IDENTITY)
    assert result.exit_code == 0, result.output
    assert "adopted 1 output(s)" in result.stderr
    statuses = {r["relative"]: r["status"] for r in _report(out)["images"]}
    assert [name for name, status in statuses.items() if status == "skipped"] == [kept]
    assert _report(out)["summary"]["restored"] == 2
