"""The low-frequency transfer after decoding (diffusion/pipeline.py): its Gaussian against
OpenCV's, what it keeps and what it replaces, and its place in the restore chain."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from drbfr_cli.benchmark.random_bundle import random_bundle
from drbfr_cli.diffusion.pipeline import gaussian_blur, transfer_low_frequencies
from drbfr_cli.diffusion.sampling import SamplingConfig


@pytest.mark.parametrize("sigma", [0.7, 2.0, 8.0])
def test_gaussian_blur_matches_opencv(sigma: float) -> None:
    image = np.random.default_rng(0).random((70, 90, 3), dtype=np.float32)
    ours = gaussian_blur(torch.from_numpy(image).permute(2, 0, 1)[None], sigma)
    reference = cv2.GaussianBlur(image, (0, 0), sigma)  # BORDER_REFLECT_101
    np.testing.assert_allclose(ours[0].permute(1, 2, 0).numpy(), reference, atol=2e-6)


def test_gaussian_blur_keeps_a_constant_on_an_image_smaller_than_its_kernel() -> None:
    flat = torch.full((1, 3, 9, 12), 0.25)
    torch.testing.assert_close(gaussian_blur(flat, 8.0), flat)


def test_transfer_replaces_shading_and_keeps_detail() -> None:
    """restored = lq + a smooth shading error + fine detail: the transfer removes the shading
    and keeps the detail."""
    size = 128
    rng = np.random.default_rng(1)
    lq = torch.from_numpy(rng.uniform(-0.5, 0.5, (1, 3, size, size)).astype(np.float32))
    lq = gaussian_blur(lq, 3.0)  # a smooth input, as a blurred face
    ramp = torch.linspace(-0.2, 0.2, size)
    shading = (ramp[None, :] + ramp[:, None])[None, None].expand(1, 3, size, size)
    checker = ((torch.arange(size)[:, None] + torch.arange(size)[None, :]) % 2) * 0.2 - 0.1
    detail = checker[None, None].expand(1, 3, size, size).float()
    fixed = transfer_low_frequencies(lq + shading + detail, lq, sigma=8.0)
    inner = (slice(None), slice(None), slice(24, -24), slice(24, -24))  # away from the borders
    error = fixed - lq
    assert float(error[inner].mean().abs()) < 1e-3  # the shading is gone
    assert float((error - detail)[inner].abs().max()) < 0.02  # the detail is kept
    before = float(shading[inner].abs().mean())
    after = float((error - detail)[inner].abs().mean())
    assert after < before / 20


def test_transfer_is_identity_when_restored_is_the_input() -> None:
    lq = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(transfer_low_frequencies(lq, lq, 4.0), lq)


def test_negative_sigma_is_refused() -> None:
    with pytest.raises(ValueError, match="low_freq_sigma"):
        SamplingConfig(low_freq_sigma=-1.0)


def test_restore_applies_the_transfer_to_the_decoded_faces() -> None:
    """Bundle.restore with low_freq_sigma is the transfer applied to its sigma-0 result."""
    bundle = random_bundle("tiny", seed=2)
    faces = torch.rand(2, 3, bundle.face_size, bundle.face_size) * 2 - 1
    plain = bundle.restore(faces, [0, 1], SamplingConfig(steps=2))
    fixed = bundle.restore(faces, [0, 1], SamplingConfig(steps=2, low_freq_sigma=3.0))
    torch.testing.assert_close(fixed, transfer_low_frequencies(plain, faces, 3.0))
    assert not torch.allclose(fixed, plain)
