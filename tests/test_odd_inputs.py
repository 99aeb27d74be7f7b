"""Odd inputs through the real CLI on real photos: a named pipe among the inputs, a 254-byte
file name, GIFs named or found in a folder, and the summary read from a pipe (not a terminal)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.imaging import NAME_MAX, read_image, to_uint8
from tests.test_restore_cli import IDENTITY, small_copies

runner = CliRunner()
GIF_NOTE = "note: 1 GIF input(s): each is restored from its first frame"


def _drbfr(*args: str | Path, **env: str) -> subprocess.CompletedProcess:
    """The installed entry point, as a shell runs it, stdout and stderr on pipes; a hang
    fails the test instead of the test run."""
    command = [str(Path(sys.executable).with_name("drbfr")), *map(str, args)]
    environment = {**os.environ, **env}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=environment, check=False
    )


def _weights(shared_weights_dir: Path) -> tuple[str, ...]:
    return ("--weights-dir", str(shared_weights_dir), "--detector", "yunet", *IDENTITY)


def _statuses(out: Path) -> dict[str, str]:
    report = json.loads((out / "report.json").read_text())
    return {record["relative"]: record["status"] for record in report["images"]}


@pytest.fixture
def photos(real_lq_whole_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    small_copies(real_lq_whole_dir / "Blake_Lively.jpg", folder, ["a.jpg", "b.png"])
    return folder


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_fails_alone_and_never_blocks(photos, shared_weights_dir, tmp_path):
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    os.mkfifo(photos / "in_folder.png")  # found in a folder: not a file, not an input
    out = tmp_path / "out"
    named = _drbfr("restore", pipe, photos / "a.jpg", "-o", out, *_weights(shared_weights_dir))
    assert named.returncode == 1, named.stderr
    errors = [line for line in named.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {pipe}: is a named pipe (FIFO), not an image file"]
    assert _statuses(out) == {"a.jpg": "ok", "pipe.jpg": "failed"}
    piped = subprocess.run(
        [str(Path(sys.executable).with_name("drbfr")), "restore", "-", photos, "-o",
         tmp_path / "o3", *_weights(shared_weights_dir)],
        input=f"{pipe}\n", capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert piped.returncode == 1, piped.stderr
    assert _statuses(tmp_path / "o3") == {"a.jpg": "ok", "b.png": "ok", "pipe.jpg": "failed"}


def test_a_254_byte_name_restores_and_the_summary_is_not_folded_in_a_pipe(
    photos, shared_weights_dir, tmp_path
):
    name = "n" * 250 + ".png"
    (photos / "b.png").rename(photos / name)
    bad = photos / ("x" * 250 + ".jpg")
    bad.write_text("not a picture")
    out = tmp_path / ("o" * 200) / "out"  # a long output path, too
    args = ("restore", photos, "-o", out, "--save-faces", "--suffix", "_restored")
    result = _drbfr(*args, *_weights(shared_weights_dir), COLUMNS="80")
    assert result.returncode == 1, result.stderr
    assert _statuses(out) == {"a.jpg": "ok", name: "ok", bad.name: "failed"}
    assert f"error: {bad}: not an image, or an unsupported format" in result.stderr.splitlines()
    written = [p for p in out.rglob("*") if p.is_file() and p.name.startswith("nnn")]
    assert len(written) == 1 + 3 * 2  # the image; two faces in each face folder
    assert all(len(os.fsencode(p.name)) <= NAME_MAX for p in written)
    restored = out / "restored_imgs"
    cut = [p.name for p in restored.iterdir() if p.name.startswith("nnn")]
    assert cut[0].endswith("_restored.png") and "~" in cut[0]
    lines = result.stdout.splitlines()
    rows = {line.split("│")[0].strip(): line.split("│")[1].strip() for line in lines if "│" in line}
    assert rows["restored"] == "2" and rows["faces restored"] == "4" and rows["failed"] == "1"
    assert f"report: {out / 'report.json'}" in lines  # the long path on one line
    again = _drbfr(*args, "--json", *_weights(shared_weights_dir), COLUMNS="80")
    assert again.returncode == 1
    assert _statuses(out) == {"a.jpg": "skipped", name: "skipped", bad.name: "failed"}
    summary = again.stderr.splitlines()  # with --json the summary is on stderr
    assert any(line.split("│")[0].strip() == "skipped (finished before)" for line in summary)
    assert f"report: {out / 'report.json'}" in summary


def _gif(path: Path, frames: list[np.ndarray]) -> None:
    images = [Image.fromarray(to_uint8(frame)) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100)


def test_gifs_are_restored_from_their_first_frame_named_or_in_a_folder(
    photos, shared_weights_dir, tmp_path
):
    first = read_image(photos / "a.jpg").rgb
    _gif(photos / "anim.gif", [first, first[::-1].copy()])  # two frames: the second upside down
    Image.open(photos / "anim.gif").convert("RGB").save(tmp_path / "first.png")
    weights = _weights(shared_weights_dir)
    found = runner.invoke(app, ["restore", str(photos), "-o", str(tmp_path / "f"), *weights])
    assert found.exit_code == 0, found.output
    assert found.stderr.count(GIF_NOTE) == 1
    assert _statuses(tmp_path / "f") == {"a.jpg": "ok", "anim.gif": "ok", "b.png": "ok"}
    out = tmp_path / "named"
    named = runner.invoke(app, ["restore", str(photos / "anim.gif"), str(tmp_path / "first.png"),
                                "-o", str(out), *weights])  # fmt: skip
    assert named.exit_code == 0, named.output
    assert named.stderr.count(GIF_NOTE) == 1
    gif_out, png_out = (
        read_image(out / "restored_imgs" / n).rgb for n in ("anim.png", "first.png")
    )
    assert np.array_equal(gif_out, png_out)  # the first frame, as its PNG restores
    assert np.array_equal(gif_out, read_image(tmp_path / "f" / "restored_imgs" / "anim.png").rgb)
    assert sorted(p.name for p in (out / "restored_imgs").iterdir()) == ["anim.png", "first.png"]


def test_degrade_writes_a_gif_as_png_and_refuses_two_inputs_for_one_file(photos, tmp_path):
    _gif(photos / "c.gif", [read_image(photos / "a.jpg").rgb])
    out = tmp_path / "lq"
    result = runner.invoke(app, ["degrade", str(photos), "-o", str(out), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.*") if p.suffix != ".jsonl") == [
        "a.jpg",
        "b.png",
        "c.png",
    ]
    _gif(photos / "b.gif", [read_image(photos / "a.jpg").rgb])
    clash = runner.invoke(
        app, ["degrade", str(photos), "-o", str(tmp_path / "lq2"), "--size", "64"]
    )
    assert clash.exit_code == 2 and "would both be written to" in clash.stderr
