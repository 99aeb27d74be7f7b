"""Folders of earlier drbfr output inside an input (a record file or the gallery's marker in
them) are not searched for inputs: through the real CLI, on real photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.gallery.page import MARKER_NAME
from drbfr_cli.imaging import OUTPUT_MARKERS, is_output_folder
from drbfr_cli.restore.records import RECORDS_GLOB, records_name
from tests.test_restore_cli import small_copies

runner = CliRunner()


def _restore(weights: Path, *args: str | Path):
    options = ["--weights-dir", str(weights), "--detector", "yunet", "--model", "identity"]
    return runner.invoke(app, ["restore", *map(str, args), *options, "--bg-upsampler", "lanczos"])


def _relatives(out: Path) -> list[str]:
    return [r["relative"] for r in json.loads((out / "report.json").read_text())["images"]]


@pytest.fixture
def photos(real_lq_whole_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    small_copies(real_lq_whole_dir / "Blake_Lively.jpg", folder, ["a.jpg", "sub/b.png"], 0.35)
    return folder


def test_an_earlier_output_folder_inside_the_input_is_not_read(photos, shared_weights_dir):
    first = _restore(shared_weights_dir, photos, "-o", photos / "out")
    assert first.exit_code == 0, first.output
    assert "not searched" not in first.stderr
    again = _restore(shared_weights_dir, photos, "-o", photos / "out")  # OUT itself: no note
    assert again.exit_code == 0 and "not searched" not in again.stderr, again.output
    assert list((photos / "out" / "gallery" / "faces").iterdir())  # thumbnails to avoid
    second = _restore(shared_weights_dir, photos, "-o", photos / "out2")
    assert second.exit_code == 0, second.output
    assert _relatives(photos / "out2") == ["a.jpg", "sub/b.png"]
    assert f"note: not searched: 1 folder(s) of earlier drbfr output ({photos / 'out'})" in (
        second.stderr
    )


def test_a_copied_gallery_folder_is_skipped_and_a_named_output_folder_is_read(
    photos, shared_weights_dir, tmp_path
):
    first = _restore(shared_weights_dir, photos, "-o", tmp_path / "out")
    assert first.exit_code == 0, first.output
    shutil.copytree(tmp_path / "out" / "gallery", photos / "copy" / "gallery")
    copied = _restore(shared_weights_dir, photos, "-o", tmp_path / "o2")
    assert copied.exit_code == 0 and _relatives(tmp_path / "o2") == ["a.jpg", "sub/b.png"]
    named = _restore(shared_weights_dir, tmp_path / "out", "-o", tmp_path / "o3")
    assert named.exit_code == 0, named.output
    assert _relatives(tmp_path / "o3") == ["restored_imgs/a.jpg", "restored_imgs/sub/b.png"]


def test_the_markers_are_the_record_files_and_the_gallery_marker() -> None:
    assert OUTPUT_MARKERS == (RECORDS_GLOB, MARKER_NAME)
    assert is_output_folder([records_name(None)]) and is_output_folder([records_name(3)])
    assert is_output_folder([MARKER_NAME]) and not is_output_folder(["report.json", "a.jpg"])
