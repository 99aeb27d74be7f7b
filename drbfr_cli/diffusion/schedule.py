"""The one noise schedule: DDPM betas, the forward process, and the diffusers schedulers on it.

Training noises latents with `NoiseSchedule.add_noise` (DDPM Eq. 4) and sampling runs the
schedulers `make_scheduler` builds from the same object, so the two cannot disagree (a test
checks `add_noise` against the scheduler's own). The schedule is data: networks never own it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, SchedulerMixin

from drbfr_cli.choices import Sampler


@dataclass(frozen=True)
class NoiseSchedule:
    """The training noise schedule (DDPM betas), stored with the LDM checkpoint."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: Literal["linear", "scaled_linear"] = "scaled_linear"
    """linear: betas evenly spaced; scaled_linear: sqrt(betas) evenly spaced (Stable Diffusion)."""

    def __post_init__(self) -> None:
        if self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(
                f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}"
            )
        if self.beta_schedule not in ("linear", "scaled_linear"):
            raise ValueError(
                f"beta_schedule must be 'linear' or 'scaled_linear', got {self.beta_schedule!r}"
            )

    def alphas_cumprod(self) -> torch.Tensor:
        """abar_t = prod_{s <= t} (1 - beta_s) for t = 0 .. T-1, float64 [T] (DDPM Eq. 4)."""
        n = self.num_train_timesteps
        if self.beta_schedule == "linear":
            betas = torch.linspace(self.beta_start, self.beta_end, n, dtype=torch.float64)
        else:
            lo, hi = self.beta_start**0.5, self.beta_end**0.5
            betas = torch.linspace(lo, hi, n, dtype=torch.float64) ** 2
        return torch.cumprod(1.0 - betas, dim=0)

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps (DDPM Eq. 4), for timesteps t [B]."""
        abar = self.abar_at(t)[:, None, None, None]
        return abar.sqrt() * z0 + (1 - abar).sqrt() * noise

    def abar_at(self, t: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """abar_t for timesteps t [B], as float32 values cast to `dtype`, on t's device."""
        return self.alphas_cumprod().float().to(t.device)[t].to(dtype)


def make_scheduler(schedule: NoiseSchedule, sampler: Sampler) -> SchedulerMixin:
    """A fresh scheduler on `schedule` (schedulers are stateful: one per sampling run).

    Both use trailing timestep spacing, so the first step sits at t = T - 1 (pure noise).
    """
    common = {
        "num_train_timesteps": schedule.num_train_timesteps,
        "beta_start": schedule.beta_start,
        "beta_end": schedule.beta_end,
        "beta_schedule": schedule.beta_schedule,
        "prediction_type": "epsilon",
        "timestep_spacing": "trailing",
    }
    if sampler == Sampler.DDIM:
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True)
    if sampler == Sampler.DPMSOLVER:
        return DPMSolverMultistepScheduler(
            **common, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
        )
    raise ValueError(f"unknown sampler {sampler!r}")
