"""The sampling configs: SamplingConfig (what a bundle samples with), SamplingOverrides (what a
user changes) and the --fidelity W mapping. Free of torch, so the CLI validates options before
any heavy import; `drbfr_cli.diffusion.sampling` (the samplers) re-exports them."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from drbfr_cli.choices import Sampler


@dataclass(frozen=True)
class SamplingConfig:
    """How `restore_latents` samples; every field is validated on construction."""

    sampler: Sampler = Sampler.DDIM
    steps: int = 20
    """Steps of the full schedule; a truncated start runs only its tail."""
    start_t: float = 1.0
    """1: from pure noise (DR-BFR); < 1: from the LQ latent noised to start_t * T (DiffBFR)."""
    tem_t: float = 0.0
    """DiffBFR texture pass: renoise the result to tem_t * T, denoise unconditionally; 0: off."""
    tem_steps: int = 4
    """Network calls of the texture pass (when tem_t > 0)."""
    guidance_scale: float = 1.0
    """eps = eps_u + g (eps_c - eps_u); 1: conditional only, 0: unconditional only."""
    eta: float = 0.0
    """DDIM stochasticity (DDIM Eq. 16): 0 deterministic, 1 DDPM-like; DDIM only."""
    samples: int = 1
    """Restorations averaged per face (posterior mean; 1: a single sample, as in the paper)."""
    low_freq_sigma: float = 0.0
    """After decoding, the restored face's frequencies below a Gaussian of this sigma (pixels
    of the face) are replaced by the LQ input's, or by F's output (diffusion/pipeline.py);
    0: off."""
    use_fidelity: bool = True
    """Restore F(y), the bundle's fidelity network's output, when it has one (pipeline.py);
    False restores the input y itself. Bundles without F ignore it."""
    fidelity_flip: bool = True
    """F(y) averaged with the mirror of F of the mirrored face (nets/fidelity.py): one more
    F call per face, a little higher PSNR."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "sampler", Sampler(self.sampler))
        except ValueError:
            choices = ", ".join(s.value for s in Sampler)
            raise ValueError(f"sampler must be one of {choices}, got {self.sampler!r}") from None
        if min(self.steps, self.tem_steps, self.samples) < 1:
            raise ValueError(
                f"steps, tem_steps and samples must be >= 1, got {self.steps}, "
                f"{self.tem_steps} and {self.samples}"
            )
        if not 0 < self.start_t <= 1:
            raise ValueError(f"start_t must lie in (0, 1], got {self.start_t}")
        if not 0 <= self.tem_t < 1:
            raise ValueError(f"tem_t must lie in [0, 1) (0: no texture pass), got {self.tem_t}")
        if not self.guidance_scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if not self.eta >= 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")
        if not self.low_freq_sigma >= 0:
            raise ValueError(f"low_freq_sigma must be >= 0, got {self.low_freq_sigma}")
        if self.eta > 0 and self.sampler != Sampler.DDIM:
            raise ValueError(f"eta > 0 needs the ddim sampler, got {self.sampler.value}")


FIDELITY_START_T = (1.0, 0.2)
"""start_t at --fidelity 0 (most generative: from pure noise, for a denoiser trained on every
noise level) and 1 (most faithful); linear between."""
FIDELITY_LOW_FREQ = (3.0, 1.5)
"""low_freq_sigma (px) at --fidelity 0 and 1: below it the face's frequencies are F's. Chosen on
the tuning faces (BENCHMARKS.md, "Perception"): from pure noise, sigma 2-3 keeps F's structure
while the denoiser draws the detail (sigma 8, a colour fix only, lost 0.5 dB for no LPIPS)."""


def fidelity_sampling(weight: float) -> dict[str, float]:
    """The sampling knobs behind `--fidelity W`, W in [0, 1] (CodeFormer's -w convention: 0
    the most generative, 1 the most faithful): a lower truncated start keeps more of F's
    estimate (DiffBFR), a wider low-frequency transfer more of its shading."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fidelity must lie in [0, 1], got {weight}")

    def between(ends: tuple[float, float]) -> float:
        return round(ends[0] + weight * (ends[1] - ends[0]), 4)

    return {"start_t": between(FIDELITY_START_T), "low_freq_sigma": between(FIDELITY_LOW_FREQ)}


@dataclass(frozen=True)
class SamplingOverrides:
    """The sampling fields a user chose; None keeps the bundle's (SamplingConfig's fields).

    Each value is checked on construction (ValueError), before any bundle is read; `apply`
    puts them on a bundle's defaults, where what depends on those (eta with the bundle's
    sampler) is checked, and the bundle checks its trained noise levels (Bundle.check_sampling).
    """

    sampler: Sampler | None = None
    steps: int | None = None
    start_t: float | None = None
    tem_t: float | None = None
    tem_steps: int | None = None
    guidance_scale: float | None = None
    eta: float | None = None
    samples: int | None = None
    low_freq_sigma: float | None = None
    use_fidelity: bool | None = None
    fidelity_flip: bool | None = None

    def __post_init__(self) -> None:
        checked = self.apply(SamplingConfig())  # the ranges, on the defaults
        if self.sampler is not None:
            object.__setattr__(self, "sampler", checked.sampler)

    def given(self) -> dict[str, Any]:
        """The fields set (not None)."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }

    def apply(self, base: SamplingConfig) -> SamplingConfig:
        """`base` with the fields set here (ValueError when the result is invalid)."""
        return replace(base, **self.given())

    def with_fidelity(self, weight: float | None) -> SamplingOverrides:
        """`fidelity_sampling(weight)` under these overrides, whose fields set win; unchanged
        when weight is None."""
        if weight is None:
            return self
        return replace(SamplingOverrides(**fidelity_sampling(weight)), **self.given())
