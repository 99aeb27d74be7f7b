"""Measures the bench/ scripts report, checked on images whose answer is known."""

from __future__ import annotations

from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def script(name: str) -> ModuleType:
    """A bench/ script (no .py suffix) loaded as a module; its main() does not run."""
    loader = SourceFileLoader(name.replace("-", "_"), str(BENCH / name))
    spec = spec_from_loader(loader.name, loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize("sigma", [3.0, 8.0, 15.0])
def test_noise_sigma_reads_the_noise_of_a_smooth_face_and_not_its_edges(sigma: float) -> None:
    """hard-cases' noise_sigma: Gaussian noise of a known level on a smooth ramp with a hard
    edge is read within 5 %; the clean image reads near 0, whatever its edges."""
    hard_cases = script("hard-cases")
    ramp = np.linspace(40.0, 200.0, 256)[None, :, None] * np.ones((256, 1, 3))
    ramp[:, 128:] *= 0.6  # a hard edge
    noisy = ramp + np.random.default_rng(0).normal(0.0, sigma, ramp.shape)
    assert hard_cases.noise_sigma(noisy) == pytest.approx(sigma, rel=0.05)
    assert hard_cases.noise_sigma(ramp) < 0.05 * sigma


def test_hf_rms_is_zero_for_a_match_and_counts_only_fine_differences() -> None:
    hard_cases = script("hard-cases")
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 255, (64, 64, 3)).astype(np.uint8)
    assert hard_cases.hf_rms(gt, gt) == 0.0
    shifted = (gt.astype(np.int16) + 20).clip(0, 255).astype(np.uint8)  # a flat offset
    assert hard_cases.hf_rms(shifted, gt) < hard_cases.hf_rms(np.roll(gt, 1, axis=1), gt)
