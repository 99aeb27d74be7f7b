"""`drbfr degrade` through the real CLI on real faces."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from drbfr_cli import __version__
from drbfr_cli.batch import ItemStatus
from drbfr_cli.cli.main import app
from drbfr_cli.imaging import collect_images, read_image, to_uint8
from drbfr_cli.synthetic import (
    MANIFEST_NAME,
    DegradeConfig,
    DegradeOutcome,
    DegradeRecord,
    make_lq_set,
    rebuild_lq,
)

runner = CliRunner()


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _manifest(folder: Path) -> list[DegradeRecord]:
    lines = (folder / MANIFEST_NAME).read_text().splitlines()
    return [DegradeRecord(**json.loads(line)) for line in lines]


def _degrade(*args: str | Path):
    return runner.invoke(app, ["degrade", *map(str, args)])


def test_version_and_help() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"drbfr {__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "degrade" in result.stdout


def test_console_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "drbfr_cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith("drbfr ")


def test_same_seed_gives_identical_bytes_and_other_seed_differs(
    hq_dir: Path, tmp_path: Path
) -> None:
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert _degrade(hq_dir, "-o", first, "--seed", "0").exit_code == 0
    assert _degrade(hq_dir, "-o", second, "--seed", "0", "--workers", "1").exit_code == 0
    assert _degrade(hq_dir, "-o", other, "--seed", "1").exit_code == 0
    a, b, c = _files(first), _files(second), _files(other)
    hq_names = sorted(p.name for p in hq_dir.iterdir() if p.suffix == ".png")
    assert sorted(a) == sorted([*hq_names, MANIFEST_NAME])
    assert a == b
    assert all(a[name] != c[name] for name in hq_names)
    assert Image.open(first / hq_names[0]).size == (512, 512)


def test_manifest_lies_in_ranges_and_rebuilds_each_image(hq_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lq"
    assert _degrade(hq_dir, "-o", out, "--seed", "5").exit_code == 0
    records = _manifest(out)
    assert len(records) == 12
    for r in records:
        assert 0.1 <= r.sigma <= 10 and 0.8 <= r.r <= 8 and 0 <= r.delta <= 20 and 60 <= r.q <= 100
    assert len({r.seed for r in records}) == 12
    for record in records[:3]:
        rebuilt = rebuild_lq(read_image(hq_dir / record.file).rgb, record)
        np.testing.assert_array_equal(
            to_uint8(rebuilt), to_uint8(read_image(out / record.file).rgb)
        )


def test_range_options_override_the_paper_ranges(hq_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lq"
    args = ["--blur", "2,2", "--scale", "1,2", "--noise", "0,0", "--jpeg", "90,95", "--size", "128"]
    assert _degrade(hq_dir, "-o", out, *args).exit_code == 0
    records = _manifest(out)
    assert all(
        r.sigma == 2 and 1 <= r.r <= 2 and r.delta == 0 and 90 <= r.q <= 95 and r.size == 128
        for r in records
    )
    bad = _degrade(hq_dir, "-o", tmp_path / "x", "--blur", "3,1")
    assert bad.exit_code == 2 and "LO must not exceed HI" in bad.output


def test_hq_out_writes_aligned_pairs(hq_dir: Path, tmp_path: Path) -> None:
    assert (
        _degrade(
            hq_dir, "-o", tmp_path / "lq", "--hq-out", tmp_path / "hq", "--size", "96"
        ).exit_code
        == 0
    )
    for name in _files(tmp_path / "hq"):
        assert (
            Image.open(tmp_path / "hq" / name).size
            == (96, 96)
            == Image.open(tmp_path / "lq" / name).size
        )


def _bad_inputs(folder: Path, hq_dir: Path) -> list[str]:
    """Three good faces and four bad files; returns the bad file names."""
    folder.mkdir()
    for source in sorted(hq_dir.glob("*.png"))[:3]:
        shutil.copy(source, folder / source.name)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a picture")
    good = (folder / sorted(p.name for p in folder.iterdir())[0]).read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 3])
    from tests.test_imaging import _write_bomb

    _write_bomb(folder / "bomb.png")
    return ["empty.png", "notes.jpg", "truncated.png", "bomb.png"]


def test_bad_files_are_reported_and_the_rest_is_done(hq_dir: Path, tmp_path: Path) -> None:
    bad = _bad_inputs(tmp_path / "in", hq_dir)
    out = tmp_path / "out"
    result = _degrade(tmp_path / "in", "-o", out, "--workers", "2")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == len(bad)
    for name in bad:
        assert sum(name in line for line in error_lines) == 1
    assert len([line for line in result.stderr.splitlines() if "bomb.png" in line]) == 1
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 4 and MANIFEST_NAME in written
    assert len(_manifest(out)) == 3


def test_unwritable_output_folder_is_one_line_error(hq_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    result = _degrade(hq_dir, "-o", blocker)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and str(blocker) in result.stderr
    assert blocker.read_text() == "x"


def test_unwritable_subfolder_fails_those_files_only(tmp_path: Path, hq_dir: Path) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    faces = sorted(hq_dir.glob("*.png"))
    shutil.copy(faces[0], tmp_path / "in" / "top.png")
    shutil.copy(faces[1], tmp_path / "in" / "sub" / "deep.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_text("a file where a folder is needed")
    result = _degrade(tmp_path / "in", "-o", tmp_path / "out", "--size", "64")
    assert result.exit_code == 1
    assert "sub/deep.png" in result.stderr and "cannot write" in result.stderr
    assert (tmp_path / "out" / "top.png").is_file()


def test_rerun_skips_finished_outputs_and_never_overwrites_silently(
    hq_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lq"
    assert _degrade(hq_dir, "-o", out, "--size", "64").exit_code == 0
    before = _files(out)
    again = _degrade(hq_dir, "-o", out, "--size", "64")
    assert again.exit_code == 0 and "unchanged 12" in again.stdout
    assert _files(out) == before
    clash = _degrade(hq_dir, "-o", out, "--size", "64", "--seed", "9")
    assert clash.exit_code == 1 and "--overwrite" in clash.stderr
    assert _files(out) == before
    forced = _degrade(hq_dir, "-o", out, "--size", "64", "--seed", "9", "--overwrite")
    assert forced.exit_code == 0
    after = _files(out)
    assert all(after[name] != before[name] for name in before)


def test_a_killed_run_resumes_and_its_temporaries_go(hq_dir: Path, tmp_path: Path) -> None:
    """Each record is in the manifest as soon as its image is written: a run killed after two
    images (and its temporary left behind) is finished by running it again, the two unchanged."""
    out = tmp_path / "lq"
    sources = collect_images([hq_dir])
    config = DegradeConfig(size=64)

    def killed(outcome: DegradeOutcome) -> None:
        if sum(1 for _ in out.glob("*.png")) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_lq_set(sources, out, config, on_done=killed)
    assert len(_manifest(out)) == 2
    left = out / ".drbfr-0123456789abcdef-1a2b3c4d.tmp"
    left.write_bytes(b"cut short")
    with (out / MANIFEST_NAME).open("a") as manifest:
        manifest.write('{"file": "cut')
    outcomes = make_lq_set(sources, out, config)
    statuses = [outcome.status for outcome in outcomes]
    assert statuses.count(ItemStatus.SKIPPED) == 2 and statuses.count(ItemStatus.OK) == 10
    assert not left.exists() and len(_manifest(out)) == 12
    fresh = tmp_path / "fresh"
    make_lq_set(sources, fresh, config)
    assert _files(fresh) == _files(out)


def test_output_into_the_input_folder_is_refused(hq_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    shutil.copytree(hq_dir, folder)
    before = _files(folder)
    result = _degrade(folder, "-o", folder)
    assert result.exit_code == 2 and "overwrite the input" in result.stderr
    assert _files(folder) == before


def test_output_inside_input_is_not_read_back(hq_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    shutil.copytree(hq_dir, folder)
    assert _degrade(folder, "-o", folder / "lq", "--size", "64").exit_code == 0
    again = _degrade(folder, "-o", folder / "lq", "--size", "64")
    assert again.exit_code == 0 and "12 images" in again.stdout


def test_missing_input_and_empty_folder(tmp_path: Path) -> None:
    missing = _degrade(tmp_path / "nope", "-o", tmp_path / "out")
    assert missing.exit_code == 2 and "no such file or folder" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = _degrade(tmp_path / "empty", "-o", tmp_path / "out")
    assert empty.exit_code == 2 and empty.stderr.startswith("error: no images found")


@pytest.mark.parametrize("kind", ["gray", "rgba"])
def test_gray_stays_gray_and_alpha_is_dropped(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    if kind == "gray":
        Image.fromarray(rng.integers(0, 255, (80, 80), dtype=np.uint8), mode="L").save(
            folder / "x.png"
        )
    else:
        Image.fromarray(rng.integers(0, 255, (80, 80, 4), dtype=np.uint8), mode="RGBA").save(
            folder / "x.png"
        )
    assert _degrade(folder, "-o", tmp_path / "out", "--size", "64").exit_code == 0
    assert Image.open(tmp_path / "out" / "x.png").mode == ("L" if kind == "gray" else "RGB")


def test_building_the_cli_does_not_load_torch() -> None:
    """`drbfr --version`, `--help`, `weights` and `degrade` start in a second, not after torch."""
    heavy = "{'torch', 'torchmetrics', 'diffusers'}"
    code = f"import sys, drbfr_cli.cli.main; print(sorted({heavy} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
