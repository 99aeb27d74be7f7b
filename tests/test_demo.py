"""`drbfr demo`: the whole method at toy scale, offline, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.demo import HELD_OUT, before_after_page, skimage_faces
from drbfr_cli.imaging import read_image

runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_demo_faces_come_from_scikit_image_offline() -> None:
    faces, astronaut = skimage_faces()
    assert len(faces) == 100 and faces[0].shape == (25, 25, 3)
    assert astronaut.shape == (180, 180, 3) and 0.0 <= astronaut.min() < astronaut.max() <= 1.0


def test_the_page_escapes_paths_and_says_it_is_a_demo() -> None:
    page = before_after_page([("lq/a<b>.png", "r.png", "h.png")], "tiny & brief")
    assert "a&lt;b&gt;.png" in page and "tiny &amp; brief" in page
    assert "not a quality showcase" in page


def test_demo_trains_restores_and_writes_the_page(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = ["demo", "-o", str(out), "--drm-steps", "2", "--vae-steps", "4", "--ldm-steps", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text()
    restored = sorted((out / "restored" / "restored_imgs").glob("*.png"))
    assert len(restored) == HELD_OUT
    for image in restored:
        assert image.name in page
        assert read_image(image).rgb.shape == (512, 512, 3)
    manifest = json.loads((out / "bundle" / "bundle.json").read_text())
    assert manifest["face_size"] == 64
    lq = read_image(out / "lq" / restored[0].name).rgb
    assert not np.array_equal(lq, read_image(restored[0]).rgb)  # the model changed the face
    again = runner.invoke(app, args)  # never over a non-empty folder
    assert again.exit_code == 2 and "not empty" in again.output
