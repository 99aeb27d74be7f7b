"""Background upsamplers: Real-ESRGAN loading through the registry and spandrel, tiling, Lanczos."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from spandrel.architectures.ESRGAN import ESRGAN

from drbfr_cli import weights
from drbfr_cli.errors import DrbfrError
from drbfr_cli.restore.background import (
    LanczosUpsampler,
    SpandrelUpsampler,
    build_upsampler,
    load_realesrgan,
    upscale_tiled,
)


def _x2plus(num_blocks: int = 23) -> ESRGAN:
    """RRDBNet with the Real-ESRGAN x2plus hyper-parameters (64 features, 23 blocks, growth 32,
    pixel-unshuffle by 2 then x4 upsampling), randomly initialised."""
    torch.manual_seed(0)
    return ESRGAN(
        in_nc=12, out_nc=3, num_filters=64, num_blocks=num_blocks, scale=4, shuffle_factor=2
    )


def _release_layout(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The key layout of the Real-ESRGAN release files (BasicSR RRDBNet names, in params_ema)."""
    names = {"model.0": "conv_first", "model.3": "conv_up1", "model.6": "conv_up2"}
    names |= {"model.8": "conv_hr", "model.10": "conv_last"}
    blocks = len({key.split(".")[3] for key in state if ".RDB" in key})
    names[f"model.1.sub.{blocks}"] = "conv_body"
    renamed = {}
    for key, value in state.items():
        match = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", key)
        if match:
            block, rdb, conv, kind = match.groups()
            renamed[f"body.{block}.rdb{rdb}.conv{conv}.{kind}"] = value
        else:
            prefix, kind = key.rsplit(".", 1)
            renamed[f"{names[prefix]}.{kind}"] = value
    return {"params_ema": renamed}


@pytest.fixture(scope="module")
def x2plus() -> ESRGAN:
    return _x2plus()


def test_release_layout_x2plus_loads_through_the_registry(tmp_path, register_weights, x2plus):
    path = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save(_release_layout(x2plus.state_dict()), path)
    register_weights("realesrgan-x2plus", path)
    upsampler = build_upsampler("realesrgan", 2, tile=0, weights_dir=tmp_path)
    assert isinstance(upsampler, SpandrelUpsampler) and upsampler.descriptor.scale == 2
    loaded = upsampler.descriptor.model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in x2plus.state_dict().items())
    image = np.random.default_rng(0).random((9, 14, 3), dtype=np.float32)
    out = upsampler(image)
    assert out.shape == (18, 28, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_tiled_equals_untiled_for_the_random_x2plus(x2plus):
    descriptor = load_realesrgan(x2plus.state_dict(), name="test")
    image = np.random.default_rng(1).random((37, 45, 3), dtype=np.float32)
    whole = SpandrelUpsampler(descriptor=descriptor, scale=2, tile=0)(image)
    tiled = SpandrelUpsampler(descriptor=descriptor, scale=2, tile=16, overlap=16)(image)
    assert whole.shape == tiled.shape == (74, 90, 3)
    assert whole.std() > 0.05  # the random network is not flat: equality means something
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)


def test_tiling_is_exact_when_the_overlap_covers_the_receptive_field():
    def box3(x: torch.Tensor) -> torch.Tensor:  # receptive radius 1, scale 2
        blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
        return torch.nn.functional.interpolate(blurred, scale_factor=2, mode="nearest")

    image = torch.rand(1, 3, 23, 31)
    whole = box3(image)
    for tile, overlap in [(8, 1), (5, 2), (64, 0)]:
        tiled = upscale_tiled(box3, image, scale=2, tile=tile, overlap=overlap)
        assert torch.equal(tiled, whole)
    seams = upscale_tiled(box3, image, scale=2, tile=8, overlap=0)
    assert not torch.equal(seams, whole)  # without context the tiles do show


def test_x4_network_and_fractional_scales(tmp_path, register_weights):
    torch.manual_seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=1, scale=4)
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save(_release_layout(net.state_dict()), path)
    register_weights("realesrgan-x4plus", path)
    image = np.random.default_rng(2).random((10, 12, 3), dtype=np.float32)
    assert build_upsampler("realesrgan", 4, 0, tmp_path)(image).shape == (40, 48, 3)
    assert build_upsampler("realesrgan", 3, 0, tmp_path)(image).shape == (30, 36, 3)


def test_corrupt_realesrgan_weights_are_refused(tmp_path, register_weights, x2plus):
    path = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save(x2plus.state_dict(), path)
    register_weights("realesrgan-x2plus", path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(weights.WeightsCorruptError, match="corrupt"):
        build_upsampler("realesrgan", 2, weights_dir=tmp_path)


def test_a_non_esrgan_checkpoint_is_refused():
    with pytest.raises(weights.WeightsCorruptError, match="not a Real-ESRGAN checkpoint"):
        load_realesrgan({"conv.weight": torch.zeros(3, 3, 1, 1)}, name="realesrgan-x2plus")


def test_missing_realesrgan_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DRBFR_HOME", raising=False)
    with pytest.raises(weights.WeightsMissingError, match="drbfr weights fetch realesrgan-x2plus"):
        build_upsampler("realesrgan", 2, weights_dir=tmp_path / "none")


def test_lanczos_upsampler(real_lq_whole_dir: Path):
    from drbfr_cli.imaging import read_image

    image = read_image(real_lq_whole_dir / "example.jpg").rgb
    out = build_upsampler("lanczos", 2)(image)
    assert out.shape == (900, 1600, 3) and out.min() >= 0.0 and out.max() <= 1.0
    down = out.reshape(450, 2, 800, 2, 3).mean(axis=(1, 3))
    assert float(np.abs(down - image).mean()) < 0.01
    assert LanczosUpsampler(scale=1.5)(image).shape == (675, 1200, 3)


def test_none_is_a_plain_resize_and_exact_at_scale_one(real_lq_whole_dir: Path):
    from drbfr_cli.imaging import read_image

    image = read_image(real_lq_whole_dir / "example.jpg").rgb
    assert np.array_equal(build_upsampler("none", 1)(image), image)
    out = build_upsampler("none", 2)(image)
    assert out.shape == (900, 1600, 3)
    assert float(np.abs(out - LanczosUpsampler(scale=2)(image)).mean()) < 0.01


def test_bad_choices_are_one_line_errors():
    with pytest.raises(DrbfrError, match="unknown background upsampler 'bicubic'"):
        build_upsampler("bicubic", 2)
    with pytest.raises(DrbfrError, match="upscale must be positive"):
        build_upsampler("lanczos", 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_on_cuda_matches_fp32(x2plus):
    descriptor = load_realesrgan(x2plus.state_dict(), name="test")
    image = np.random.default_rng(3).random((40, 48, 3), dtype=np.float32)
    full = SpandrelUpsampler(descriptor=descriptor, scale=2, tile=0, device="cuda")(image)
    descriptor = load_realesrgan(x2plus.state_dict(), name="test")
    half = SpandrelUpsampler(descriptor=descriptor, scale=2, tile=16, device="cuda", half=True)
    assert half.dtype == torch.float16
    np.testing.assert_allclose(half(image), full, atol=2e-2)
