"""Smaller edges of `drbfr restore` (and `align`, `eval --model`) on real faces: no inputs,
a missing path in a stdin list, the settings and precision a report records, gray+alpha
inputs, and alpha dropped by --ext jpg."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.faces.detect import DetectorKind
from drbfr_cli.imaging import read_image, to_uint8
from drbfr_cli.restore.tools import ToolChoices, resolve_detector
from tests.test_restore_cli import IDENTITY

runner = CliRunner()


def _invoke(*args: str | Path, input: str | None = None):
    return runner.invoke(app, list(map(str, args)), input=input)


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.fixture
def faces(real_lq_aligned_dir: Path, tmp_path: Path) -> Path:
    """Two real aligned faces."""
    folder = tmp_path / "faces"
    folder.mkdir()
    for path in sorted(real_lq_aligned_dir.glob("*.png"))[:2]:
        shutil.copy(path, folder / path.name)
    return folder


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith(f"error: {text}") and result.stderr.count("\n") == 1


def test_an_empty_folder_or_empty_stdin_is_a_one_line_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    _one_line_error(_invoke("restore", empty, "-o", out, *IDENTITY), "no images found")
    _one_line_error(_invoke("restore", "-", "-o", out, *IDENTITY, input=""), "no images found")
    _one_line_error(_invoke("align", empty, "-o", out), "no images found")
    _one_line_error(_invoke("align", "-", "-o", out, input="\n"), "no images found in stdin")


def test_a_missing_path_in_a_stdin_list_fails_alone(faces: Path, tmp_path: Path) -> None:
    names = sorted(p.name for p in faces.iterdir())
    missing = tmp_path / "gone.png"
    listed = f"{faces / names[0]}\n{missing}\n{faces / names[1]}\n"
    out = tmp_path / "out"
    result = _invoke("restore", "-", "-o", out, "--aligned", *IDENTITY, input=listed)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"error: {missing}: file not found" in result.stderr
    statuses = {r["relative"]: r["status"] for r in _report(out)["images"]}
    assert statuses == {names[0]: "ok", "gone.png": "failed", names[1]: "ok"}


def test_eval_with_a_model_records_its_settings(faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ("eval", "--model", "identity", "--lq", faces, "--gt", faces, "--metrics", "psnr",
            "--out", out, "--batch-size", "2")  # fmt: skip
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    settings = _report(out / "restored")["settings"]
    assert settings["model"] == "identity" and settings["aligned"] is True
    assert settings["batch_size"] == 2 and settings["precision"] == "fp32"


def test_the_report_records_the_precision_that_ran(faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _invoke("restore", faces, "-o", out, "--aligned", "--precision", "auto", *IDENTITY)
    assert result.exit_code == 0, result.output
    assert _report(out)["settings"]["precision"] == "fp32"  # auto on a CPU


def _gray_alpha_face(source: Path, target: Path) -> np.ndarray:
    """A real face as an 8-bit gray+alpha (LA) PNG; returns its alpha in [0, 1]."""
    gray = to_uint8(read_image(source).rgb.mean(axis=2))
    alpha = np.tile(np.linspace(0, 255, gray.shape[1]).astype(np.uint8), (gray.shape[0], 1))
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.stack([gray, alpha], axis=2), mode="LA").save(target)
    return alpha / 255.0


def test_gray_alpha_input_comes_back_gray_alpha(
    real_lq_aligned_dir: Path, real_lq_whole_dir: Path, shared_weights_dir: Path, tmp_path: Path
) -> None:
    face = sorted(real_lq_aligned_dir.glob("*.png"))[0]
    alpha = _gray_alpha_face(face, tmp_path / "aligned" / "face.png")
    out = tmp_path / "out"
    result = _invoke("restore", tmp_path / "aligned", "-o", out, "--aligned", *IDENTITY)
    assert result.exit_code == 0, result.output
    with Image.open(out / "restored_imgs" / "face.png") as written:
        assert written.mode == "LA"
        assert np.abs(np.asarray(written)[:, :, 1] / 255.0 - alpha).max() < 0.01
    _gray_alpha_face(real_lq_whole_dir / "Blake_Lively.jpg", tmp_path / "whole" / "photo.png")
    result = _invoke("restore", tmp_path / "whole", "-o", out, "--weights-dir",
                     shared_weights_dir, "--detector", "yunet", *IDENTITY)  # fmt: skip
    assert result.exit_code == 0, result.output
    with Image.open(out / "restored_imgs" / "photo.png") as written:
        assert written.mode == "LA"


def test_ext_jpg_drops_alpha_with_a_note(faces: Path, tmp_path: Path) -> None:
    rgb = read_image(sorted(faces.iterdir())[0]).rgb
    alpha = np.full((*rgb.shape[:2], 1), 200, np.uint8)
    rgba = np.concatenate([to_uint8(rgb), alpha], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(faces / "with_alpha.png")
    out = tmp_path / "out"
    result = _invoke("restore", faces, "-o", out, "--aligned", "--ext", "jpg", *IDENTITY)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "transparency" in line]
    assert len(notes) == 1 and notes[0].startswith("note:") and "with_alpha.png" in notes[0]
    assert read_image(out / "restored_imgs" / "with_alpha.jpg").alpha is None


def test_missing_detector_weights_offline_name_the_detectors_that_are_there(
    real_lq_whole_dir: Path, shared_weights_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """RetinaFace-R50, asked for, is not in the weights folder and cannot be fetched: one line
    that says where to put it and which detectors' weights are already there. Without
    --detector, the run takes the detector that is there, says so once, and records it."""
    monkeypatch.setenv("DRBFR_OFFLINE", "1")
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    shutil.copy(shared_weights_dir / "face_detection_yunet_2023mar.onnx", weights_dir)
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sorted(real_lq_whole_dir.iterdir())[0], photos)
    common = (*IDENTITY, "--weights-dir", weights_dir, "--no-gallery")
    result = _invoke("restore", photos, "-o", tmp_path / "out", *common, "--detector", "retinaface")
    assert result.exit_code == 2, result.output
    error = result.output.strip().splitlines()[-1]
    assert "retinaface-resnet50" in error and "or use --detector yunet (found)" in error
    assert "Traceback" not in result.output
    result = _invoke("restore", photos, "-o", tmp_path / "default", *common)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "detected with yunet" in line]
    assert len(notes) == 1 and "retinaface-resnet50 not found" in notes[0]
    report = json.loads((tmp_path / "default" / "report.json").read_text())
    assert report["settings"]["detector"] == "yunet"
    assert report["images"][0]["status"] == "ok" and report["images"][0]["faces"]


def test_the_default_detector_is_the_best_one_present(shared_weights_dir: Path) -> None:
    """The shared folder holds RetinaFace-mobile and YuNet, not RetinaFace-R50: the default is
    RetinaFace-mobile; an explicit choice is kept as it is."""
    notes: list[str] = []
    choices = ToolChoices(weights_dir=shared_weights_dir)
    assert resolve_detector(choices, notes.append) is DetectorKind.RETINAFACE_MOBILE
    assert len(notes) == 1
    chosen = ToolChoices(weights_dir=shared_weights_dir, detector=DetectorKind.RETINAFACE)
    assert resolve_detector(chosen, notes.append) is DetectorKind.RETINAFACE
    assert len(notes) == 1
