"""NIQE against its peer implementation; PSNR/SSIM against scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from drbfr_cli.errors import DrbfrError
from drbfr_cli.metrics.fidelity import FidelityConfig, psnr, ssim
from drbfr_cli.metrics.matlab_resize import imresize
from drbfr_cli.metrics.niqe import gaussian_window, niqe, niqe_rgb, pristine_model

# basicsr (XPixelGroup/BasicSR, basicsr/metrics/niqe.py, `calculate_niqe(img, crop_border=0)`,
# convert_to='y') gives 3.0646 on scikit-image's astronaut(): the peer value NIQE must reproduce.
BASICSR_ASTRONAUT_NIQE = 3.0646


def _basicsr_luma(rgb_uint8: np.ndarray) -> np.ndarray:
    """Y as basicsr computes it: BGR float32 / 255, bgr2ycbcr(y_only) in float, * 255, rounded."""
    bgr = rgb_uint8[..., ::-1].astype(np.float32) / 255.0
    y = (bgr @ np.array([24.966, 128.553, 65.481]) + 16.0) / 255.0
    return np.round(y.astype(np.float32) * 255.0)


def test_niqe_astronaut_matches_basicsr():
    value = niqe(_basicsr_luma(skdata.astronaut()))
    assert value == pytest.approx(BASICSR_ASTRONAUT_NIQE, abs=2e-3)


def test_niqe_rgb_path_matches_basicsr():
    rgb = skdata.astronaut().astype(np.float32) / 255.0
    assert niqe_rgb(rgb) == pytest.approx(BASICSR_ASTRONAUT_NIQE, abs=2e-3)


def test_niqe_ranks_blur_and_noise_worse():
    gray = _basicsr_luma(skdata.astronaut())
    rng = np.random.default_rng(0)
    noisy = np.clip(gray + rng.normal(0, 25, gray.shape), 0, 255)
    blurry = imresize(imresize(gray, 0.25), 4.0)
    clean = niqe(gray)
    assert niqe(noisy) > clean + 1.0
    assert niqe(blurry) > clean + 1.0


def test_niqe_model_and_window_shapes():
    model = pristine_model()
    assert model.mean.shape == (36,) and model.cov.shape == (36, 36)
    np.testing.assert_allclose(model.cov, model.cov.T)
    assert model.mean[0] == pytest.approx(2.60131368)
    window = gaussian_window()
    assert window.sum() == pytest.approx(1.0) and window[3, 3] == window.max()


def test_niqe_too_small_is_a_user_error():
    with pytest.raises(DrbfrError, match="96x96"):
        niqe(np.zeros((50, 200)))


def test_imresize_halves_a_linear_ramp_exactly_inside():
    ramp = np.tile(np.arange(64, dtype=np.float64), (64, 1))
    half = imresize(ramp, 0.5)
    assert half.shape == (32, 32)
    # away from the mirrored border the cubic kernel reproduces a ramp: mean of pixel pairs
    np.testing.assert_allclose(half[:, 4:-4], np.tile(np.arange(8, 56, 2) + 0.5, (32, 1)))


def _pairs(seed: int = 0):
    rng = np.random.default_rng(seed)
    for shape in [(48, 64, 3), (33, 40, 3)]:
        gt = rng.random(shape).astype(np.float32)
        gt = (gt + np.roll(gt, 1, 0) + np.roll(gt, 1, 1)) / 3  # some spatial structure
        restored = np.clip(gt + rng.normal(0, 0.05, shape), 0, 1).astype(np.float32)
        yield restored, gt


@pytest.mark.parametrize("crop", [0, 4])
def test_psnr_ssim_rgb_equal_scikit_image(crop):
    config = FidelityConfig(crop_border=crop)
    for restored, gt in _pairs():
        a, b = restored.astype(np.float64), gt.astype(np.float64)
        if crop:
            a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
        ref_psnr = peak_signal_noise_ratio(b, a, data_range=1.0)
        ref_ssim = structural_similarity(
            b,
            a,
            data_range=1.0,
            channel_axis=2,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert psnr(restored, gt, config) == pytest.approx(ref_psnr, abs=1e-3)
        assert ssim(restored, gt, config) == pytest.approx(ref_ssim, abs=1e-3)


def test_psnr_ssim_y_channel_equal_scikit_image():
    config = FidelityConfig(y_channel=True)
    weights = np.array([65.481, 128.553, 24.966])
    for restored, gt in _pairs(1):
        ya = (restored.astype(np.float64) @ weights + 16.0) / 255.0
        yb = (gt.astype(np.float64) @ weights + 16.0) / 255.0
        ref_psnr = peak_signal_noise_ratio(yb, ya, data_range=1.0)
        ref_ssim = structural_similarity(
            yb, ya, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert psnr(restored, gt, config) == pytest.approx(ref_psnr, abs=1e-3)
        assert ssim(restored, gt, config) == pytest.approx(ref_ssim, abs=1e-3)


def test_psnr_size_mismatch_and_oversized_crop_are_user_errors():
    a = np.zeros((32, 32, 3), np.float32)
    with pytest.raises(DrbfrError, match="size mismatch"):
        psnr(a, np.zeros((32, 30, 3), np.float32), FidelityConfig())
    with pytest.raises(DrbfrError, match="crop-border"):
        ssim(a, a, FidelityConfig(crop_border=16))
