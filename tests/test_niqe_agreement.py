"""`drbfr restore --metrics niqe` and `drbfr eval` give the same NIQE for the same files.

Restore scores each face on the pixels of the file it writes (8-bit, gray, JPEG as written);
eval reads those files; both score with `metrics.niqe.niqe_rgb`. Real faces, a restorer whose
output is not on the 8-bit grid (as a model's is not).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import pytest
import torch
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.imaging import read_image, write_image
from drbfr_cli.restore import tools

runner = CliRunner()


class GammaRestorer:
    """Brightens midtones: values off the 8-bit grid, as a model's output is."""

    face_size = 256

    def restore(self, faces: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        return faces.pow(0.8)


@pytest.fixture(autouse=True)
def gamma(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "build_restorer", lambda choices: GammaRestorer())


def _eval_niqe(folder: Path, out: Path) -> dict[str, float]:
    result = runner.invoke(
        app, ["eval", "--restored", str(folder), "--metrics", "niqe", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    with (out / "metrics.csv").open() as handle:
        return {row["image"]: float(row["niqe"]) for row in csv.DictReader(handle)}


def _report(out: Path) -> list[dict]:
    return json.loads((out / "report.json").read_text())["images"]


def test_restore_aligned_and_eval_agree_on_niqe(
    shared_dir: Path, real_lq_aligned_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(real_lq_aligned_dir / "200_00101_02_org.png", folder)
    shutil.copy(real_lq_aligned_dir / "Paris_Hilton_crop.png", folder)  # RGB-gray
    face = sorted((shared_dir / "data" / "faces512" / "val").glob("*.jpg"))[0]
    shutil.copy(face, folder / "generated.jpg")  # a JPEG output, q 95
    gray = cv2.cvtColor(read_image(face).rgb[::2, ::2], cv2.COLOR_RGB2GRAY)
    write_image(folder / "scan.png", cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB))  # 256 px RGB-gray
    out = tmp_path / "out"
    args = ["restore", str(folder), "-o", str(out), "--aligned", "--metrics", "niqe"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    evaluated = _eval_niqe(out / "restored_imgs", tmp_path / "eval")
    assert len(evaluated) == 4
    for record in _report(out):
        restored = record["faces"][0]["niqe_restored"]
        assert restored == pytest.approx(evaluated[record["relative"]], abs=1e-4), record


def test_restore_faces_and_eval_agree_on_niqe(
    real_lq_whole_dir: Path, shared_weights_dir: Path, tmp_path: Path
) -> None:
    from tests.test_restore_cli import small_copies

    small_copies(real_lq_whole_dir / "Blake_Lively.jpg", tmp_path / "in", ["a.jpg"])
    out = tmp_path / "out"
    args = ["restore", str(tmp_path / "in"), "-o", str(out), "--metrics", "niqe", "--save-faces"]
    args += ["--weights-dir", str(shared_weights_dir), "--detector", "yunet"]
    result = runner.invoke(app, [*args, "--bg-upsampler", "lanczos"])
    assert result.exit_code == 0, result.output
    faces = _report(out)[0]["faces"]
    assert len(faces) == 2
    restored = _eval_niqe(out / "restored_faces", tmp_path / "eval_restored")
    cropped = _eval_niqe(out / "cropped_faces", tmp_path / "eval_cropped")
    for face in faces:
        name = f"a_{face['index']:02d}.jpg"
        assert face["niqe_restored"] == pytest.approx(restored[name], abs=1e-4)
        assert face["niqe_input"] == pytest.approx(cropped[name], abs=1e-4)
