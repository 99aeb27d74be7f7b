"""`drbfr demo`: the shipped model on scikit-image's astronaut and real photos, through the CLI
(reduced sampling, so it runs in about a minute)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.demo import astronaut
from drbfr_cli.imaging import read_image

runner = CliRunner()


def test_the_astronaut_comes_from_scikit_image_offline() -> None:
    photo = astronaut()
    assert photo.shape == (512, 512, 3) and 0.0 <= photo.min() < photo.max() <= 1.0


def test_demo_restores_the_astronaut_and_extra_photos(
    real_lq_whole_dir: Path, shared_weights_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "demo"
    args = ["demo", "-o", str(out), "--weights-dir", str(shared_weights_dir), "--extra",
            str(real_lq_whole_dir.parent), "--extra-count", "1", "--steps", "2", "--samples", "1",
            "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text()
    assert "Lanczos" in page and "drbfr-small" in page
    whole = sorted((out / "restored" / "whole" / "restored_imgs").rglob("*.*"))
    aligned = sorted((out / "restored" / "aligned" / "restored_imgs").rglob("*.*"))
    assert sorted(p.name for p in whole) == ["00.jpg", "astronaut.png"]
    assert {"astronaut_moderate.png", "astronaut_strong.png"} <= {p.name for p in aligned}
    assert len(aligned) == 3  # the two degraded astronauts and one extra aligned face
    for image in whole + aligned:  # the gallery of both runs links every restored image
        assert f'src="{image.relative_to(out)}"' in page
    assert page.count('alt="original"') == 2  # the degraded astronauts beside the original
    astronaut_out = read_image(out / "restored" / "whole" / "restored_imgs" / "astronaut.png")
    assert astronaut_out.rgb.shape == (1024, 1024, 3)  # x2 background
    strong = out / "inputs" / "aligned" / "astronaut_strong.png"
    restored = read_image(out / "restored" / "aligned" / "restored_imgs" / strong.name).rgb
    assert restored.shape == (512, 512, 3)
    assert not np.array_equal(read_image(strong).rgb, restored)  # the model changed the face
    again = runner.invoke(app, args)  # never over a non-empty folder
    assert again.exit_code == 2 and "not empty" in again.output


def test_demo_refuses_an_extra_folder_without_photos(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["demo", "-o", str(tmp_path / "d"), "--extra",
                                 str(tmp_path / "empty")])  # fmt: skip
    assert result.exit_code == 2
    assert "needs a whole/ or aligned/ subfolder" in result.output
