"""The physics of Eq. (11): each step measured, not only shapes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from skimage import data

from drbfr_cli.degradations import (
    DegradationParams,
    DegradationRanges,
    add_gaussian_noise,
    degrade,
    downsample,
    gaussian_blur,
    jpeg_compress,
    resize_to,
    sample_mixed_params,
    sample_params,
)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """A natural 512x512 RGB photo (scikit-image), float32 in [0, 1]."""
    return data.astronaut().astype(np.float32) / 255.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def high_frequency_share(image: np.ndarray, cutoff: float = 0.25) -> float:
    """Share of spectral power above `cutoff` cycles/pixel (Hann-windowed, mean removed)."""
    gray = image.mean(axis=2)
    height, width = gray.shape
    window = np.outer(np.hanning(height), np.hanning(width))
    power = np.abs(np.fft.fft2((gray - gray.mean()) * window)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij")
    return float(power[np.hypot(fy, fx) > cutoff].sum() / power.sum())


def blockiness(image: np.ndarray) -> float:
    """Mean jump across 8x8 block borders over the mean jump inside blocks (1.0: no blocks)."""
    gray = image.mean(axis=2)
    dx, dy = np.abs(np.diff(gray, axis=1)), np.abs(np.diff(gray, axis=0))
    border = dx[:, 7::8].mean() + dy[7::8].mean()
    inside = np.delete(dx, np.s_[7::8], axis=1).mean() + np.delete(dy, np.s_[7::8], axis=0).mean()
    return float(border / inside)


def test_blur_high_frequency_energy_falls_monotonically(astronaut: np.ndarray) -> None:
    sigmas = [0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    shares = [high_frequency_share(gaussian_blur(astronaut, s)) for s in sigmas]
    assert all(a > b for a, b in itertools.pairwise(shares)), shares
    assert shares[-1] < 1e-3 * shares[0]


def test_blur_preserves_mean_and_is_identity_at_zero(astronaut: np.ndarray) -> None:
    assert gaussian_blur(astronaut, 0.0) is astronaut
    assert abs(gaussian_blur(astronaut, 5.0).mean() - astronaut.mean()) < 2e-3


@pytest.mark.parametrize("delta", [2.0, 5.0, 10.0, 20.0])
def test_noise_std_on_flat_image_matches_delta(delta: float) -> None:
    flat = np.full((256, 256, 3), 0.5, np.float32)
    noisy = add_gaussian_noise(flat, delta, np.random.default_rng(7))
    measured = float(noisy.std() * 255.0)
    assert abs(measured - delta) <= 0.10 * delta, measured
    assert abs(float(noisy.mean()) - 0.5) < 1e-3


def test_noise_is_reproducible_for_a_generator_seed() -> None:
    flat = np.full((16, 16, 3), 0.5, np.float32)
    first = add_gaussian_noise(flat, 10.0, np.random.default_rng(3))
    np.testing.assert_array_equal(first, add_gaussian_noise(flat, 10.0, np.random.default_rng(3)))
    assert not np.array_equal(first, add_gaussian_noise(flat, 10.0, np.random.default_rng(4)))


@pytest.mark.parametrize(
    ("r", "expected"), [(1.0, (512, 512)), (2.0, (256, 256)), (8.0, (64, 64)), (0.8, (640, 640))]
)
def test_downsample_sizes(astronaut: np.ndarray, r: float, expected: tuple[int, int]) -> None:
    assert downsample(astronaut, r).shape[:2] == expected
    assert resize_to(downsample(astronaut, r), (512, 512)).shape == astronaut.shape


def test_downsample_loses_detail_in_proportion_to_r(astronaut: np.ndarray) -> None:
    scores = [
        psnr(resize_to(downsample(astronaut, r), (512, 512)), astronaut) for r in (1.5, 2, 4, 8)
    ]
    assert all(a > b for a, b in itertools.pairwise(scores)), scores


def test_mildest_settings_are_close_to_identity(astronaut: np.ndarray) -> None:
    params = DegradationParams(sigma=0.1, r=1.0, delta=0.0, q=100)
    assert psnr(degrade(astronaut, params, np.random.default_rng(0)), astronaut) > 40.0


def test_jpeg_q60_shows_8x8_block_artefacts(astronaut: np.ndarray) -> None:
    smooth = gaussian_blur(astronaut, 1.0)
    original, q100, q60 = (
        blockiness(smooth),
        blockiness(jpeg_compress(smooth, 100)),
        blockiness(jpeg_compress(smooth, 60)),
    )
    assert abs(original - 1.0) < 0.05
    assert q100 < 1.05
    assert q60 > 1.25 and q60 > q100 + 0.2


def test_jpeg_quality_orders_fidelity(astronaut: np.ndarray) -> None:
    scores = [psnr(jpeg_compress(astronaut, q), astronaut) for q in (100, 90, 75, 60)]
    assert all(a > b for a, b in itertools.pairwise(scores)), scores


def test_full_degradation_keeps_size_and_range(astronaut: np.ndarray) -> None:
    params = DegradationParams(sigma=3.0, r=4.0, delta=15.0, q=60)
    lq = degrade(astronaut[:500, :300], params, np.random.default_rng(0))
    assert lq.shape == (500, 300, 3) and lq.dtype == np.float32
    assert lq.min() >= 0.0 and lq.max() <= 1.0
    assert psnr(lq, astronaut[:500, :300]) < 25.0


def test_harsher_parameters_degrade_more(astronaut: np.ndarray) -> None:
    mild = DegradationParams(sigma=0.5, r=1.2, delta=2.0, q=95)
    harsh = DegradationParams(sigma=6.0, r=6.0, delta=18.0, q=60)
    rng = np.random.default_rng
    assert (
        psnr(degrade(astronaut, mild, rng(0)), astronaut)
        > psnr(degrade(astronaut, harsh, rng(0)), astronaut) + 5
    )


def test_sampler_stays_in_ranges_and_is_seeded() -> None:
    ranges = DegradationRanges()
    draws = [sample_params(np.random.default_rng(seed), ranges) for seed in range(500)]
    assert all(
        0.1 <= d.sigma <= 10 and 0.8 <= d.r <= 8 and 0 <= d.delta <= 20 and 60 <= d.q <= 100
        for d in draws
    )
    assert all(isinstance(d.q, int) for d in draws)
    assert {d.q for d in draws} >= {60, 100}  # integer endpoints are reachable
    assert sample_params(np.random.default_rng(1), ranges) == draws[1]


def test_mixed_sampler_draws_the_mild_ranges_for_their_fraction() -> None:
    wide = DegradationRanges(blur=(5.0, 6.0), scale=(5.0, 6.0), noise=(0.0, 0.0), jpeg=(90, 90))
    mild = DegradationRanges(blur=(0.1, 1.0), scale=(1.0, 2.0), noise=(0.0, 0.0), jpeg=(90, 90))
    draws = [sample_mixed_params(np.random.default_rng(s), wide, mild, 0.3) for s in range(2000)]
    mild_share = np.mean([d.sigma <= 1.0 for d in draws])
    assert abs(mild_share - 0.3) < 0.04
    assert all((d.sigma <= 1.0) == (d.r <= 2.0) for d in draws)  # one range set per draw
    for seed in range(20):  # fraction 0 draws no extra number: the stream of sample_params
        rng = np.random.default_rng(seed)
        assert sample_mixed_params(rng, wide, mild, 0.0) == sample_params(
            np.random.default_rng(seed), wide
        )
    assert all(
        sample_mixed_params(np.random.default_rng(s), wide, mild, 1.0).sigma <= 1.0
        for s in range(50)
    )


def test_sampler_ranges_are_overridable_and_validated() -> None:
    ranges = DegradationRanges(
        blur=(1.0, 1.0), scale=(2.0, 2.0), noise=(5.0, 5.0), jpeg=(70.0, 70.0)
    )
    assert sample_params(np.random.default_rng(0), ranges) == DegradationParams(
        sigma=1.0, r=2.0, delta=5.0, q=70
    )
    with pytest.raises(ValueError, match="lo <= hi"):
        DegradationRanges(blur=(3.0, 1.0))
    with pytest.raises(ValueError, match="JPEG quality"):
        DegradationRanges(jpeg=(0.0, 101.0))
