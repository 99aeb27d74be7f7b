"""The memory budget: an absurd --upscale is refused in one line; an image whose estimated peak
exceeds --max-memory fails alone, before it is decoded, and the good image beside it is
restored; a MemoryError in a stage fails that image, never the run. Real files, real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.imaging import write_image
from drbfr_cli.restore import finish, memory, prepare
from drbfr_cli.restore.memory import estimate_peak, parse_memory
from tests.test_restore_cli import small_copies

runner = CliRunner()


def _restore(weights: Path, *args: str | Path):
    options = ["--weights-dir", str(weights), "--detector", "yunet", "--model", "identity"]
    return runner.invoke(app, ["restore", *map(str, args), *options, "--bg-upsampler", "lanczos"])


@pytest.fixture
def photos(real_lq_whole_dir: Path, tmp_path: Path) -> Path:
    """A small real photo and a 4000 x 3000 one (12 MP)."""
    folder = tmp_path / "in"
    small_copies(real_lq_whole_dir / "Blake_Lively.jpg", folder, ["a_small.jpg"], 0.35)
    write_image(folder / "b_big.png", np.full((3000, 4000, 3), 0.5, dtype=np.float32))
    return folder


def _statuses(out: Path) -> dict[str, str]:
    images = json.loads((out / "report.json").read_text())["images"]
    return {r["relative"]: r["status"] for r in images}


def test_an_absurd_upscale_is_one_line_exit_2(photos, shared_weights_dir, tmp_path):
    result = _restore(shared_weights_dir, photos, "-o", tmp_path / "out", "--upscale", "100")
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: --upscale 100 is over the maximum of 16\n"
    assert not (tmp_path / "out").exists()


def test_an_image_over_the_budget_fails_alone_before_decoding(
    photos, shared_weights_dir, tmp_path, monkeypatch
):
    decoded: list[str] = []
    read = prepare.read_image
    monkeypatch.setattr(
        prepare, "read_image", lambda p, **k: decoded.append(p.name) or read(p, **k)
    )
    out = tmp_path / "out"
    result = _restore(shared_weights_dir, photos, "-o", out, "--max-memory", "500M")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {photos / 'b_big.png'}: needs about 2.3 GB of memory at --upscale 2, over the "
        "budget of 0.5 GB (--max-memory); use a smaller --upscale, free memory or raise "
        "--max-memory"
    ]
    assert decoded == ["a_small.jpg"]  # the big one was never decoded
    assert _statuses(out) == {"a_small.jpg": "ok", "b_big.png": "failed"}
    ok = _restore(shared_weights_dir, photos, "-o", out, "--max-memory", "3G", "--upscale", "1")
    assert ok.exit_code == 0
    assert _statuses(out) == {"a_small.jpg": "skipped", "b_big.png": "no_face"}  # a gray canvas


def test_a_memory_error_in_a_stage_fails_that_image_only(
    photos, shared_weights_dir, tmp_path, monkeypatch
):
    compose = finish.compose

    def short_of_memory(image, faces, tools, options):
        if image.rgb.shape[0] == 3000:
            raise MemoryError("Unable to allocate 137 MiB for an array")
        return compose(image, faces, tools, options)

    monkeypatch.setattr(finish, "compose", short_of_memory)
    out = tmp_path / "out"
    result = _restore(shared_weights_dir, photos, "-o", out, "--max-memory", "none")
    assert result.exit_code == 1, result.output
    assert f"error: {photos / 'b_big.png'}: out of memory (Unable to allocate" in result.stderr
    assert _statuses(out) == {"a_small.jpg": "ok", "b_big.png": "failed"}


def test_the_estimate_and_the_sizes() -> None:
    # Measured (BENCHMARKS.md): a 43 MP JPEG at --upscale 2 peaked 8.12 GiB over the process.
    assert 8.12 < estimate_peak(8032, 5354, 2.0) / (1 << 30) < 9.0
    assert estimate_peak(1000, 1000, 2.0, network_scale=4.0) > estimate_peak(1000, 1000, 2.0)
    assert estimate_peak(4000, 3000, 9.0, aligned=True) == estimate_peak(
        4000, 3000, 1.0, aligned=True
    )
    assert parse_memory("12G") == 12 << 30 and parse_memory("800m") == 800 << 20
    assert parse_memory("1.5GB") == 3 << 29 and parse_memory("none") is None
    assert parse_memory("auto") == memory.available_memory()


def test_a_bad_max_memory_is_one_line(photos, tmp_path):
    result = runner.invoke(app, ["restore", str(photos), "-o", str(tmp_path / "o"),
                                 "--max-memory", "lots"])  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --max-memory: 'lots' is not auto, none or a size")


def test_max_pixels_0_is_one_line_exit_2(photos, tmp_path):
    result = runner.invoke(app, ["restore", str(photos), "-o", str(tmp_path / "o"),
                                 "--max-pixels", "0"])  # fmt: skip
    assert result.exit_code == 2 and not (tmp_path / "o").exists()
    assert result.stderr == "error: --max-pixels 0: every image would fail; give at least 1\n"
