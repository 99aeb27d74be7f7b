"""Usage errors are one line on stderr with exit code 2, never a box: through the installed
entry point (`drbfr` beside the interpreter), as a user's shell runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def drbfr(*args: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("drbfr")), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "drbfr restore: No such option: --bogus"),
        (["--det-threshold", "2"], "drbfr restore: Invalid value for '--det-threshold'"),
        (["--no-face", "maybe"], "drbfr restore: Invalid value for '--no-face'"),
    ],
)
def test_a_restore_usage_error_is_one_line_exit_2(args, message, tmp_path: Path):
    result = drbfr("restore", str(tmp_path), "-o", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("(see drbfr restore -h)\n")
    assert "╭" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_option_is_one_line_and_help_still_works(tmp_path: Path):
    missing = drbfr("restore", str(tmp_path))
    assert missing.returncode == 2
    assert missing.stderr == (
        "error: drbfr restore: Missing option '-o' / '--out'. (see drbfr restore -h)\n"
    )
    helped = drbfr("restore", "-h")
    assert helped.returncode == 0 and "--no-face" in helped.stdout
    assert drbfr("--version").stdout.startswith("drbfr ")


def test_ctrl_c_exits_130_and_other_errors_keep_their_traceback(monkeypatch):
    import typer

    from drbfr_cli.cli import main

    def interrupted(**_kwargs):
        raise typer.Abort()

    monkeypatch.setattr(main, "app", interrupted)
    with pytest.raises(SystemExit) as stopped:
        main.run()
    assert stopped.value.code == 130

    def broken(**_kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(main, "app", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # not hidden behind an AttributeError
        main.run()
