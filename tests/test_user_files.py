"""Nothing in OUT or in the inputs that drbfr did not write is ever deleted or changed: cleanup
removes only temporaries whose session a record file lists, and report parts of recorded runs
(by name), through the real CLI on real photos, OUT beside, inside and equal to the input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.restore.records import RECORDS_NAME, SESSION_STATUS
from tests.test_restore_cli import small_copies

runner = CliRunner()
UNRECORDED = "0123456789abcdef"
"""A session no record file lists."""


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by path relative to it."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _restore(weights: Path, *args: str | Path):
    options = ["--weights-dir", str(weights), "--detector", "yunet", "--model", "identity"]
    return runner.invoke(app, ["restore", *map(str, args), *options, "--bg-upsampler", "lanczos"])


def _user_files(folder: Path) -> list[str]:
    """Files of the user's that look like leftovers: dot-.tmp names, old-style drbfr temporary
    names, a drbfr-style name of an unrecorded session, report.parts/ content."""
    files = {
        ".notes.tmp": "x",
        ".a.jpg.1a2b3c4d.tmp": "old-style name",
        f".drbfr-{UNRECORDED}-00000000.tmp": "unrecorded session",
        "report.parts/mine.txt": "y",
        f"report.parts/{'0' * 32}/rank-00000.jsonl": "a run no record lists",
        "restored_imgs/.mine.tmp": "z",
    }
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return list(files)


@pytest.fixture
def photos(real_lq_whole_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    small_copies(real_lq_whole_dir / "Blake_Lively.jpg", folder, ["a.jpg", "sub/b.png"], 0.35)
    return folder


def _kept(before: dict[str, str], after: dict[str, str]) -> None:
    assert {name: after.get(name) for name in before} == before


@pytest.mark.parametrize("where", ["beside", "inside", "equal"])
def test_user_files_in_out_and_the_inputs_are_untouched(photos, shared_weights_dir, where):
    out = {"beside": photos.parent / "out", "inside": photos / "out", "equal": photos}[where]
    out.mkdir(exist_ok=True)
    _user_files(out)
    before_in, before_out = tree_hashes(photos), tree_hashes(out)
    for run in range(2):  # the first run and a rerun that skips everything
        result = _restore(shared_weights_dir, photos, "-o", out)
        assert result.exit_code == 0, result.output
        assert "removed" not in result.output
        _kept(before_in, tree_hashes(photos))
        _kept(before_out, tree_hashes(out))
        report = json.loads((out / "report.json").read_text())
        assert report["summary"]["images"] == 2, run
    assert (out / "restored_imgs" / "sub" / "b.png").is_file()


def _sessions(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / RECORDS_NAME).read_text().splitlines()]
    return [line for line in lines if line["status"] == SESSION_STATUS]


def test_only_the_leftovers_of_recorded_sessions_are_removed(photos, shared_weights_dir, tmp_path):
    out = tmp_path / "out"
    first = _restore(shared_weights_dir, photos, "-o", out)
    assert first.exit_code == 0, first.output
    (session,) = _sessions(out)
    # What a run of that session killed mid-write leaves: temporaries and an unmerged part.
    leftovers = [
        out / f".drbfr-{session['session']}-1a2b3c4d.tmp",
        out / "restored_imgs" / "sub" / f".drbfr-{session['session']}-5e6f7a8b.tmp",
        out / "report.parts" / session["run"] / "rank-00001.jsonl",
        out / "report.parts" / session["run"] / "merging",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    mine = [*_user_files(out), f"report.parts/{session['run']}/mine.txt"]
    (out / mine[-1]).write_text("the user's")
    before = {name: tree_hashes(out)[name] for name in mine}
    again = _restore(shared_weights_dir, photos, "-o", out)
    assert again.exit_code == 0, again.output
    assert "removed 2 unfinished temporary file(s)" in again.output
    assert [path for path in leftovers if path.exists()] == []
    _kept(before, tree_hashes(out))
    assert len(_sessions(out)) == 2  # each run lists its own session
