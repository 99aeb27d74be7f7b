"""`--bg-upsampler auto`: Lanczos on a CPU with one note estimating what Real-ESRGAN would take,
Real-ESRGAN on CUDA / MPS; an explicit `realesrgan` still runs it on a CPU. Through the real CLI
on real photos, with the real Real-ESRGAN x4plus weights of ../shared/weights."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import torch
from typer.testing import CliRunner

from drbfr_cli.choices import Background
from drbfr_cli.cli.main import app
from drbfr_cli.imaging import read_image, write_image
from drbfr_cli.restore.background import realesrgan_cpu_minutes
from drbfr_cli.restore.tools import ToolChoices, input_megapixels, resolve_background
from tests.test_restore_cli import small_copies

runner = CliRunner()
NOTE = "note: on a CPU the background is upscaled with Lanczos: Real-ESRGAN"
X4PLUS = "RealESRGAN_x4plus_ncnn.pth"
"""The real x4plus network in the official key layout (../shared/weights/README.md)."""


@pytest.fixture
def x4plus(register_weights, shared_weights_dir: Path) -> Path:
    """The registry's realesrgan-x4plus, found as the shared file."""
    register_weights("realesrgan-x4plus", shared_weights_dir / X4PLUS)
    return shared_weights_dir


def restore(inputs: Path, out: Path, weights: Path, *extra: str):
    return runner.invoke(app, [
        "restore", str(inputs), "-o", str(out), "--weights-dir", str(weights),
        "--model", "identity", "--device", "cpu", *extra,
    ])  # fmt: skip


def settings(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())["settings"]


def test_auto_on_a_cpu_is_lanczos_with_one_note_and_an_estimate(
    real_lq_whole_dir, shared_weights_dir, tmp_path
):
    folder = tmp_path / "in"
    small_copies(real_lq_whole_dir / "Blake_Lively.jpg", folder, ["a.jpg", "b.jpg"], 0.5)
    out = tmp_path / "out"
    result = restore(folder, out, shared_weights_dir, "--upscale", "4")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith(NOTE)]
    megapixels = 2 * 350 * 232 / 1e6
    minutes = realesrgan_cpu_minutes(megapixels, 4.0, torch.get_num_threads())
    assert notes == [
        f"{NOTE} (`--bg-upsampler realesrgan`) would take about {minutes:.0f} min for these "
        f"{megapixels:.1f} MP of input on {torch.get_num_threads()} threads"
    ]
    assert settings(out)["background"] == "LanczosUpsampler"
    assert read_image(out / "restored_imgs" / "a.jpg").size == (4 * 350, 4 * 232)


def test_an_explicit_realesrgan_still_runs_on_a_cpu(real_lq_whole_dir, x4plus, tmp_path):
    small = cv2.resize(read_image(real_lq_whole_dir / "Blake_Lively.jpg").rgb, (48, 32),
                       interpolation=cv2.INTER_AREA)  # fmt: skip
    write_image(tmp_path / "in" / "tiny.png", small)
    out = tmp_path / "out"
    args = ["--bg-upsampler", "realesrgan", "--upscale", "4", "--no-face", "keep"]
    result = restore(tmp_path / "in", out, x4plus, *args)
    assert result.exit_code == 0, result.output
    assert NOTE not in result.stderr
    assert settings(out)["background"] == "SpandrelUpsampler"
    assert settings(out)["bg_network_scale"] == 4
    assert read_image(out / "restored_imgs" / "tiny.png").size == (192, 128)


@pytest.mark.parametrize("device", ["cuda:0", "mps"])
def test_auto_on_a_gpu_picks_realesrgan_when_its_weights_are_there(device, x4plus):
    notes: list[str] = []
    choices = ToolChoices(device=device, weights_dir=x4plus)
    assert resolve_background(choices, 4.0, notes.append, 2.5) is Background.REALESRGAN
    assert notes == []
    # x2 output uses the x2plus network, which is not in the shared folder: Lanczos, said once
    assert resolve_background(choices, 2.0, notes.append) is Background.LANCZOS
    assert len(notes) == 1 and "realesrgan-x2plus not found" in notes[0]


def test_explicit_choices_are_kept_on_every_device(shared_weights_dir):
    for device in ("cpu", "cuda:0", "mps"):
        for kind in (Background.REALESRGAN, Background.LANCZOS, Background.NONE):
            choices = ToolChoices(device=device, background=kind, weights_dir=shared_weights_dir)
            assert resolve_background(choices, 2.0, pytest.fail) is kind


def test_the_estimate_follows_pixels_network_and_threads(real_lq_whole_dir):
    # The measured case: a 1297 x 1920 photo at x2 took about 19 minutes on 2 threads.
    assert realesrgan_cpu_minutes(1297 * 1920 / 1e6, 2.0, 2) == pytest.approx(19, abs=0.5)
    assert realesrgan_cpu_minutes(1.0, 4.0, 2) > 3 * realesrgan_cpu_minutes(1.0, 2.0, 2)
    assert realesrgan_cpu_minutes(1.0, 2.0, 4) == pytest.approx(
        realesrgan_cpu_minutes(1.0, 2.0, 2) / 2
    )
    photo = real_lq_whole_dir / "00.jpg"
    assert input_megapixels([photo]) == pytest.approx(1297 * 1920 / 1e6)
    assert input_megapixels([photo] * 10, most=2) == pytest.approx(10 * 1297 * 1920 / 1e6)
