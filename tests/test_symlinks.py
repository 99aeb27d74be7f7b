"""Symbolic links as inputs: valid ones are followed; loops and dangling links, named on the
command line or found in a folder, fail alone with a one-line reason (stderr and report)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.imaging import collect_images, read_image
from drbfr_cli.metrics.report import TILE

runner = CliRunner()

LOOP = "symbolic link loop"
DANGLING = "broken symbolic link"


@pytest.fixture
def linked(real_lq_aligned_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A folder with a real face, a valid link to it, a dangling link, a self loop and a
    two-link cycle; and a loop outside it, to name on the command line."""
    folder = tmp_path / "faces"
    folder.mkdir()
    shutil.copy(real_lq_aligned_dir / "Adele_crop.png", folder / "a.png")
    (folder / "link.png").symlink_to("a.png")
    (folder / "dangling.png").symlink_to("gone.png")
    (folder / "self.png").symlink_to("self.png")
    (folder / "ping.jpg").symlink_to("pong.jpg")
    (folder / "pong.jpg").symlink_to("ping.jpg")
    named = tmp_path / "named.png"
    named.symlink_to(named.name)
    return folder, named


def test_broken_links_are_collected_and_fail_with_their_reason(linked) -> None:
    folder, named = linked
    sources = collect_images([named, folder])
    assert [s.relative.as_posix() for s in sources] == [
        "a.png", "dangling.png", "link.png", "named.png", "ping.jpg", "pong.jpg", "self.png"
    ]  # fmt: skip
    assert read_image(folder / "link.png").size == (512, 512)
    for name, reason in [("dangling.png", DANGLING), ("self.png", LOOP), ("ping.jpg", LOOP)]:
        with pytest.raises(Exception, match=reason):
            read_image(folder / name)


def test_restore_reports_loops_and_dangling_links_and_restores_the_rest(linked, tmp_path) -> None:
    folder, named = linked
    out = tmp_path / "out"
    args = [named, folder, "-o", out, "--aligned", "--model", "identity"]
    result = runner.invoke(app, ["restore", *map(str, args)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    records = {r["relative"]: r for r in json.loads((out / "report.json").read_text())["images"]}
    assert {k for k, r in records.items() if r["status"] == "ok"} == {
        "a.png",
        "link.png",
    }
    assert (out / "restored_imgs" / "link.png").is_file()
    broken = {"named.png": LOOP, "dangling.png": DANGLING, "self.png": LOOP}
    broken |= {"ping.jpg": LOOP, "pong.jpg": LOOP}
    for relative, reason in broken.items():
        assert records[relative]["status"] == "failed" and reason in records[relative]["error"]
        error_lines = [line for line in result.stderr.splitlines() if relative in line]
        assert len(error_lines) == 1 and reason in error_lines[0], relative


def test_degrade_reports_broken_links_and_degrades_the_rest(linked, tmp_path) -> None:
    folder, named = linked
    out = tmp_path / "lq"
    args = [named, folder, "-o", out, "--size", "64"]
    result = runner.invoke(app, ["degrade", *map(str, args)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert sorted(p.name for p in out.rglob("*.png")) == ["a.png", "link.png"]
    assert result.stderr.count(LOOP) == 4 and result.stderr.count(DANGLING) == 1


def test_eval_fails_broken_links_alone_and_its_grid_skips_a_broken_lq(linked, tmp_path) -> None:
    folder, _ = linked
    lq = tmp_path / "lq"
    lq.mkdir()
    (lq / "a.png").symlink_to(lq / "a.png")  # the LQ of an image that is fine: a loop
    out = tmp_path / "eval"
    args = ["eval", "--restored", folder, "--lq", lq, "--metrics", "niqe", "--out", out]
    result = runner.invoke(app, [*map(str, args)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.count(LOOP) == 3 and result.stderr.count(DANGLING) == 1
    assert (out / "comparison.png").is_file()
    assert read_image(out / "comparison.png").size[0] == TILE  # the restored column alone
