"""File names are printed as they are, never as Rich markup or terminal control, and every
message is one line: through the real CLI, with failing files whose names hold brackets, an
ESC sequence and a newline beside a good photo that is restored."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drbfr_cli.cli.common import printable, shown
from drbfr_cli.cli.main import app
from tests.test_restore_cli import small_copies

runner = CliRunner()
BAD = {
    "[copy 2] scan.jpg": "[copy 2] scan.jpg",
    "a[/]b.jpg": "a[/]b.jpg",
    "\x1b[2J\x1b[31mclear.jpg": "\\x1b[2J\\x1b[31mclear.jpg",
    "x\nerror: forged.jpg": "x\\x0aerror: forged.jpg",
}
"""Name of a file that is not an image (a folder `a[` holding `]b.jpg`, ...) -> as printed."""


@pytest.fixture
def named(real_lq_whole_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    small_copies(real_lq_whole_dir / "Blake_Lively.jpg", folder, ["good.jpg"], 0.35)
    for name in BAD:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("not a picture")
    return folder


def test_failing_names_print_literally_on_one_line_each(named, shared_weights_dir, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, [
        "restore", str(named), "-o", str(out), "--weights-dir", str(shared_weights_dir),
        "--detector", "yunet", "--model", "identity", "--bg-upsampler", "lanczos",
    ])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "\x1b" not in result.stderr and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert all(line.startswith(("error: ", "note: ")) for line in lines), lines
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == len(BAD), (result.stdout, result.stderr)
    for printed in BAD.values():
        assert sum(printed in line for line in errors) == 1, (printed, errors)
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["restored"] == 1 and report["summary"]["failed"] == len(BAD)
    assert (out / "restored_imgs" / "good.jpg").is_file()


def test_an_output_folder_with_markup_and_control_characters_prints_as_is(
    named, shared_weights_dir, tmp_path
):
    out = tmp_path / "[bold]out\x1b[2J"
    result = runner.invoke(app, [
        "restore", str(named / "good.jpg"), "-o", str(out), "--weights-dir",
        str(shared_weights_dir), "--detector", "yunet", "--model", "identity",
        "--bg-upsampler", "lanczos",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"report: {tmp_path}/[bold]out\\x1b[2J/report.json" in result.stdout
    assert "\x1b" not in result.stdout


def test_printable_shows_every_control_character_and_undecodable_byte() -> None:
    undecodable = os.fsdecode(b"caf\xe9.jpg")
    assert printable(undecodable) == "caf\\xe9.jpg"
    assert printable("a\tb\rc\x7f\x85") == "a\\x09b\\x0dc\\x7f\\x85"
    assert printable("evil\u202egpj.exe") == "evil\\u202egpj.exe"
    assert printable("été [1].jpg") == "été [1].jpg"
    assert shown("[red]x[/red]") == "\\[red]x\\[/red]"
