"""Outputs are created with the permissions of the process umask (0644 under umask 022), as
any file the user makes, never 0600: restored photos must be readable by other users. So are
the folders of bundles and checkpoints (0755 under 022), never mkdtemp's 0700."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from drbfr_cli.bundle import write_bundle
from drbfr_cli.cli.main import app
from drbfr_cli.imaging import write_bytes_atomic
from drbfr_cli.train.checkpoint import CheckpointContent, write_folder

runner = CliRunner()


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _modes(folder: Path) -> dict[str, int]:
    return {
        p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_atomic_writes_follow_the_umask(tmp_path: Path) -> None:
    for umask, expected in ((0o022, 0o644), (0o027, 0o640), (0o002, 0o664)):
        previous = os.umask(umask)
        try:
            write_bytes_atomic(tmp_path / f"{umask:o}.bin", b"data")
        finally:
            os.umask(previous)
        assert stat.S_IMODE((tmp_path / f"{umask:o}.bin").stat().st_mode) == expected


def test_restore_degrade_and_align_outputs_are_0644(
    umask_022: None,
    real_lq_aligned_dir: Path,
    real_lq_whole_dir: Path,
    shared_weights_dir: Path,
    tmp_path: Path,
) -> None:
    faces = tmp_path / "faces"
    faces.mkdir()
    for path in sorted(real_lq_aligned_dir.glob("*.png"))[:2]:
        shutil.copy(path, faces / path.name)
    restored = tmp_path / "restored"
    runs = [
        ["restore", faces, "-o", restored, "--aligned", "--model", "identity", "--save-faces",
         "--report-csv", restored / "report.csv"],
        ["degrade", faces, "-o", tmp_path / "lq", "--size", "64", "--hq-out", tmp_path / "hq"],
        ["align", real_lq_whole_dir / "Blake_Lively.jpg", "-o", tmp_path / "aligned",
         "--detector", "yunet", "--weights-dir", shared_weights_dir, "--size", "64"],
    ]  # fmt: skip
    for args in runs:
        result = runner.invoke(app, list(map(str, args)))
        assert result.exit_code == 0, result.output
    for folder in ("restored", "lq", "hq", "aligned"):
        modes = _modes(tmp_path / folder)
        assert modes and set(modes.values()) == {0o644}, (folder, modes)
    assert {"report.json", "report.csv"} <= set(_modes(restored))


def _write_bundle(target: Path) -> None:
    write_bundle(target, {"format": "test"}, {"drm": {"weight": torch.zeros(2)}})


def _write_checkpoint(target: Path) -> None:
    weights = {"drm": {"weight": torch.zeros(2)}}
    write_folder(target, CheckpointContent(weights=weights, ema=weights, config={"task": "drm"}))


@pytest.mark.parametrize(("umask", "folder_mode"), [(0o022, 0o755), (0o027, 0o750)])
@pytest.mark.parametrize("write", [_write_bundle, _write_checkpoint])
def test_bundle_and_checkpoint_folders_follow_the_umask(
    write: Callable[[Path], None], umask: int, folder_mode: int, tmp_path: Path
) -> None:
    target = tmp_path / "made"
    previous = os.umask(umask)
    try:
        write(target)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == folder_mode
    modes = _modes(target)
    assert len(modes) >= 2 and set(modes.values()) == {folder_mode & 0o666}, modes
    assert [p.name for p in tmp_path.iterdir()] == ["made"]  # no temporary left beside it
