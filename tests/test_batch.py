"""The batch core shared by restore, align and degrade: seeds, failures, output claims,
cleanup of temporaries and record files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from drbfr_cli.batch import (
    ItemStatus,
    RecordFile,
    claim_outputs,
    clashing_input,
    failure,
    item_seed,
    read_records,
    remove_temporaries,
    write_records,
)
from drbfr_cli.errors import DrbfrError, ImageReadError
from drbfr_cli.imaging import ImageSource


def _face_seed_as_written(run_seed: int, relative: str, index: int) -> int:
    """restore's per-face seed as it was written before the core (53 bits)."""
    digest = hashlib.sha256(f"{run_seed}\x00{relative}\x00{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 11


def _image_seed_as_written(run_seed: int, relative: str) -> int:
    """degrade's per-image seed as it was written before the core (63 bits)."""
    digest = hashlib.sha256(f"{run_seed}\x00{relative}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@pytest.mark.parametrize(
    ("run_seed", "relative"), [(0, "a/b.png"), (7, "photos/ü x.jpg"), (-3, "c.png")]
)
def test_item_seed_is_the_seed_restore_and_degrade_always_drew(run_seed: int, relative: str):
    for index in (0, 1, 12):
        assert item_seed(run_seed, relative, index) == _face_seed_as_written(
            run_seed, relative, index
        )
    assert item_seed(run_seed, relative, bits=63) == _image_seed_as_written(run_seed, relative)


def test_item_seed_values_are_pinned():
    """Values drawn by earlier releases: a change here changes every restored face and every
    degraded set made with the same --seed."""
    assert item_seed(0, "a/b.png", 1) == 1131108943819884
    assert item_seed(7, "photos/ü x.jpg", 0) == 166279754783493
    assert item_seed(0, "a/b.png", bits=63) == 7520147848918498525
    assert item_seed(123456789, "c.png", bits=63) == 1202609210878983160


def test_item_seed_widths_and_keys():
    assert 0 <= item_seed(0, "x", bits=53) < 2**53 and 0 <= item_seed(0, "x", bits=63) < 2**63
    assert item_seed(0, "x", bits=63) >> 10 == item_seed(0, "x", bits=53)
    assert len({item_seed(0, "a", 1), item_seed(1, "a", 1), item_seed(0, "b", 1)}) == 3
    assert item_seed(0, "a\x00b") == item_seed(0, "a", "b")  # keys are joined by NUL
    with pytest.raises(ValueError, match="bits"):
        item_seed(0, "x", bits=65)


def test_item_status_values_are_the_strings_restore_records_hold():
    assert [status.value for status in ItemStatus] == ["ok", "skipped", "no_face", "failed"]


def test_failure_is_one_line_naming_the_file(tmp_path: Path):
    path = tmp_path / "a.png"
    try:
        cv2.resize(np.zeros((0, 0), np.float32), (2, 2))
    except cv2.error as exc:
        opencv = failure(path, exc)
    assert opencv.startswith(f"{path}: OpenCV failed on this image (") and "\n" not in opencv
    memory = failure(path, MemoryError(), memory_hint="use a smaller --upscale")
    assert memory == f"{path}: out of memory (MemoryError); use a smaller --upscale"
    assert failure(path, ImageReadError(path, "empty file (0 bytes)")) == (
        f"{path}: empty file (0 bytes)"
    )


def test_claim_outputs_refuses_two_inputs_writing_one_output(tmp_path: Path):
    owners = claim_outputs(
        [(tmp_path / "a.png", Path("in/a.png")), (tmp_path / "b.png", Path("b"))]
    )
    assert owners == {tmp_path / "a.png": Path("in/a.png"), tmp_path / "b.png": Path("b")}
    with pytest.raises(DrbfrError) as caught:
        claim_outputs(
            [("a", Path("x/a.gif")), ("a", Path("x/a.png"))],
            describe=lambda key: f"OUT/{key}_NN.png",
            hint="use --ext same",
        )
    assert (
        str(caught.value)
        == "x/a.gif and x/a.png would both be written to OUT/a_NN.png; use --ext same"
    )


def test_clashing_input_sees_through_symbolic_links(tmp_path: Path):
    (tmp_path / "in").mkdir()
    photo = tmp_path / "in" / "a.png"
    photo.write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "in")
    sources = [ImageSource(photo, Path("a.png"))]
    assert clashing_input([tmp_path / "out" / "a.png"], sources) is None
    assert clashing_input([tmp_path / "link" / "a.png"], sources) == (
        tmp_path / "link" / "a.png",
        photo,
    )


def test_remove_temporaries_deletes_only_drbfr_temporaries(tmp_path: Path):
    recorded, other = "0123456789abcdef", "fedcba9876543210"
    (tmp_path / "sub").mkdir()
    mine = tmp_path / f".drbfr-{recorded}-1a2b3c4d.tmp"
    deep = tmp_path / "sub" / f".drbfr-{recorded}-00000000.tmp"
    foreign = tmp_path / f".drbfr-{other}-1a2b3c4d.tmp"
    users = [tmp_path / ".drbfr-notes.tmp", tmp_path / "photo.png", tmp_path / ".hidden"]
    for path in [mine, deep, foreign, *users]:
        path.write_bytes(b"x")
    (tmp_path / f".drbfr-{recorded}-ffffffff.tmp").mkdir()  # a folder is never deleted

    assert remove_temporaries([tmp_path], sessions=[recorded]) == 1
    assert not mine.exists() and deep.exists() and foreign.exists()
    assert remove_temporaries([tmp_path], sessions=[recorded], recursive=True) == 1
    assert not deep.exists() and foreign.exists()
    assert remove_temporaries([tmp_path, tmp_path / "absent"]) == 1  # any drbfr process's
    assert not foreign.exists() and all(path.exists() for path in users)
    assert (tmp_path / f".drbfr-{recorded}-ffffffff.tmp").is_dir()


def test_record_file_appends_whole_lines_and_ends_a_cut_one(tmp_path: Path):
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2, "cut')  # a kill cut the last line short
    with RecordFile(path) as records:
        records.append({"a": 3}, '{"a": 4}')
        records.append()
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2, "cut\n{"a": 3}\n{"a": 4}\n'
    assert read_records(path, json.loads, name="record file") == [
        {"a": 1},
        {"a": 3},
        {"a": 4},
    ]
    with pytest.raises(DrbfrError, match="not a drbfr record file"):
        read_records(path, json.loads, name="record file", strict=True)


def test_read_records_strict_forgives_only_a_last_line_cut_short(tmp_path: Path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2, "cut')
    assert read_records(path, json.loads, name="manifest", strict=True) == [{"a": 1}]
    assert read_records(tmp_path / "absent.jsonl", json.loads, name="manifest") == []
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(DrbfrError, match="cannot read the manifest"):
        read_records(path, json.loads, name="manifest")


def test_write_records_replaces_the_file_atomically(tmp_path: Path):
    path = tmp_path / "manifest.jsonl"
    path.write_text("old\n")
    write_records(path, ['{"b": 1}', '{"a": 2}'])
    assert path.read_text() == '{"b": 1}\n{"a": 2}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl"]
    write_records(path, [])
    assert path.read_text() == ""


def test_a_record_file_is_created_by_its_first_append(tmp_path: Path):
    records = RecordFile(tmp_path / "records.jsonl", sync=False)
    records.close()
    assert not (tmp_path / "records.jsonl").exists()
    with records:
        records.append({"a": 1})
    assert (tmp_path / "records.jsonl").read_text() == '{"a": 1}\n'
