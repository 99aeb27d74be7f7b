"""Gray stays gray: RGB files with R = G = B (how most black-and-white scans are stored) through
`drbfr restore` (whole and --aligned), `drbfr align` and `drbfr degrade`, on real faces.

The restorer tints every face, as a model trained on colour faces does to gray ones; gray-ness
is decided from the pixels (imaging.is_gray), per image and per face crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.imaging import GRAY_TOLERANCE, is_gray, read_image, to_uint8, write_image
from drbfr_cli.restore import tools

runner = CliRunner()

TINT = torch.tensor([1.08, 0.97, 0.85]).view(1, 3, 1, 1)
GRAY_BOX = (286, 11, 506, 231)
"""x0, y0, x1, y1 in example.jpg: the middle face and all its 512 px crop covers, made gray."""
FACE_BOXES = {
    "left": (58, 72, 144, 184),
    "middle": (353, 62, 446, 200),
    "right": (615, 61, 714, 181),
}
"""YuNet's face boxes in real_lq/whole/example.jpg (input pixels, rounded)."""


class TintingRestorer:
    """Warms every face up: gray in, colour out, like a model that learned skin tones."""

    face_size = 128

    def restore(self, faces: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        return (faces * TINT).clamp(0.0, 1.0)


@pytest.fixture
def tinting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "build_restorer", lambda choices: TintingRestorer())


def _run(*args: str | Path):
    return runner.invoke(app, [*map(str, args)])


def channel_difference(path: Path) -> int:
    """Largest |R - G| or |G - B| of the file's 8-bit pixels."""
    rgb = to_uint8(read_image(path).rgb).astype(int)
    return int(
        max(np.abs(rgb[..., 0] - rgb[..., 1]).max(), np.abs(rgb[..., 1] - rgb[..., 2]).max())
    )


def rgb_gray(rgb: np.ndarray) -> np.ndarray:
    """Three equal channels (the BT.601 luma), as a scanner saves a black-and-white photo."""
    return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


@pytest.fixture
def gray_crops(shared_dir: Path, real_lq_aligned_dir: Path, tmp_path: Path) -> Path:
    """Four faces512/val faces saved as RGB-gray PNG and JPEG, and the two real aligned crops that
    already are RGB-gray; a colour face beside them."""
    folder = tmp_path / "crops"
    faces = sorted((shared_dir / "data" / "faces512" / "val").glob("*.jpg"))[:4]
    for index, path in enumerate(faces):
        ext = ".png" if index % 2 else ".jpg"
        write_image(folder / f"gray_{index}{ext}", rgb_gray(read_image(path).rgb), quality=90)
    for name in ("Julia_Roberts_crop.png", "Paris_Hilton_crop.png"):
        write_image(folder / name, read_image(real_lq_aligned_dir / name).rgb)
    write_image(folder / "colour.png", read_image(faces[0]).rgb)
    for path in folder.iterdir():  # the inputs are RGB files, not gray ones
        assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).ndim == 3
    return folder


def test_is_gray_allows_one_level_and_no_more() -> None:
    rng = np.random.default_rng(0)
    gray = np.repeat(rng.random((64, 48, 1), dtype=np.float32), 3, axis=2)
    assert is_gray(gray)
    one_level = gray + rng.integers(0, 2, gray.shape).astype(np.float32) / 255.0
    assert is_gray(one_level)
    two_levels = gray.copy()
    two_levels[40, 7, 1] += 2.0 / 255.0
    assert not is_gray(two_levels) and GRAY_TOLERANCE < 2.0 / 255.0


def test_rgb_gray_files_read_as_gray_with_equal_channels(gray_crops: Path) -> None:
    for path in gray_crops.iterdir():
        image = read_image(path)
        assert image.grayscale == (path.stem != "colour"), path
        if image.grayscale:
            assert np.array_equal(image.rgb[..., 0], image.rgb[..., 2])


def test_restore_aligned_keeps_rgb_gray_crops_gray(gray_crops: Path, tmp_path: Path, tinting):
    out = tmp_path / "out"
    result = _run("restore", gray_crops, "-o", out, "--aligned", "--save-faces")
    assert result.exit_code == 0, result.output
    outputs = sorted((out / "restored_imgs").iterdir())
    assert len(outputs) == 7
    for path in outputs:
        difference = channel_difference(path)
        assert (difference == 0) == (path.stem != "colour"), (path.name, difference)
    for path in sorted((out / "restored_faces").iterdir()):
        assert (channel_difference(path) == 0) == (not path.stem.startswith("colour")), path


def test_restore_whole_rgb_gray_photo_stays_gray(
    real_lq_whole_dir: Path, shared_weights_dir: Path, tmp_path: Path, tinting
):
    photo = read_image(real_lq_whole_dir / "Blake_Lively.jpg").rgb
    small = cv2.resize(photo, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    write_image(tmp_path / "in" / "gray.jpg", rgb_gray(small), quality=95)
    write_image(tmp_path / "in" / "colour.jpg", small, quality=95)
    out = tmp_path / "out"
    args = ("--weights-dir", shared_weights_dir, "--detector", "yunet", "--bg-upsampler", "lanczos")
    result = _run("restore", tmp_path / "in", "-o", out, *args)
    assert result.exit_code == 0, result.output
    assert channel_difference(out / "restored_imgs" / "gray.jpg") == 0
    assert channel_difference(out / "restored_imgs" / "colour.jpg") > 30


def test_a_black_and_white_face_inside_a_colour_photo_comes_back_gray(
    real_lq_whole_dir: Path, shared_weights_dir: Path, tmp_path: Path, tinting
):
    photo = read_image(real_lq_whole_dir / "example.jpg").rgb
    x0, y0, x1, y1 = GRAY_BOX
    photo[y0:y1, x0:x1] = rgb_gray(np.ascontiguousarray(photo[y0:y1, x0:x1]))
    write_image(tmp_path / "in" / "pasted.png", photo)
    out = tmp_path / "out"
    args = ("--weights-dir", shared_weights_dir, "--detector", "yunet", "--bg-upsampler", "lanczos")
    result = _run("restore", tmp_path / "in", "-o", out, "--upscale", "2", *args)
    assert result.exit_code == 0, result.output
    restored = to_uint8(read_image(out / "restored_imgs" / "pasted.png").rgb).astype(int)
    before = cv2.resize(photo, None, fx=2, fy=2, interpolation=cv2.INTER_LANCZOS4)
    for name, (bx0, by0, bx1, by1) in FACE_BOXES.items():
        face = restored[2 * by0 : 2 * by1, 2 * bx0 : 2 * bx1]
        difference = np.abs(face - np.roll(face, 1, axis=2)).max()
        if name == "middle":
            assert difference == 0
        else:  # the colour faces were restored (tinted) and stay colour
            red_shift = (
                face[..., 0].mean()
                - to_uint8(before[2 * by0 : 2 * by1, 2 * bx0 : 2 * bx1])[..., 0].mean()
            )
            assert difference > 30 and red_shift > 3, name
    # the whole gray area, less the border that Lanczos (4 input pixels each side) blends
    region = restored[2 * y0 + 8 : 2 * y1 - 8, 2 * x0 + 8 : 2 * x1 - 8]
    assert np.abs(region - np.roll(region, 1, axis=2)).max() == 0


def test_align_and_degrade_keep_rgb_gray_gray(
    real_lq_whole_dir: Path, shared_weights_dir: Path, gray_crops: Path, tmp_path: Path
):
    photo = read_image(real_lq_whole_dir / "rfpp_06.png").rgb
    write_image(tmp_path / "photos" / "gray.jpg", rgb_gray(photo), quality=95)
    aligned = tmp_path / "aligned"
    args = ("--weights-dir", shared_weights_dir, "--size", "256")
    result = _run("align", tmp_path / "photos", "-o", aligned, *args)
    assert result.exit_code == 0, result.output
    crops = sorted(aligned.glob("*.png"))
    assert len(crops) == 2 and all(channel_difference(p) == 0 for p in crops)
    lq = tmp_path / "lq"
    result = _run(
        "degrade", gray_crops, "-o", lq, "--size", "128", "--seed", "3", "--noise", "5,20"
    )
    assert result.exit_code == 0, result.output
    for path in sorted(p for p in lq.iterdir() if p.suffix != ".jsonl"):
        difference = channel_difference(path)
        assert (difference == 0) == (path.stem != "colour"), (path.name, difference)
