"""Sampling of the latent restoration model (paper Eq. 8) over diffusers schedulers.

The network predicts eps in z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps (DDPM Eq. 4). Three
ways to use it, all pure functions of (denoiser, latents, seeds, schedule, config):

- DR-BFR: start from pure noise z_T and run the whole schedule (`start_t = 1`);
- DiffBFR IRM: start from the LQ latent noised to t_s = start_t * T and run only the steps
  below t_s (truncated sampling: fewer steps, more fidelity to the input);
- DiffBFR TEM: noise the restored latent to a small t = tem_t * T and denoise it again with the
  condition dropped (the unconditional model), to polish texture.

`samples` > 1 averages that many independent restorations of each face: a Monte-Carlo estimate
of the posterior mean E[z_0 | y], the restoration of least expected squared error (highest
PSNR), at the cost of sharpness and of `samples` times the network calls.

Every random draw for item i comes from a generator seeded by seeds[i] (or a key derived from
it), so an item's result never depends on the batch it is in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from drbfr_cli.diffusion.sampling_config import (  # noqa: F401  (re-exported for callers)
    FIDELITY_LOW_FREQ,
    FIDELITY_START_T,
    SamplingConfig,
    SamplingOverrides,
    fidelity_sampling,
)

# diffusers takes seconds to import: it loads where a scheduler is made. The configs live in
# sampling_config.py, free of torch, so that the CLI checks SamplingOverrides at once.
if TYPE_CHECKING:
    from diffusers import SchedulerMixin

    from drbfr_cli.diffusion.schedule import NoiseSchedule

_VARIANCE_STREAM = 1
"""Key of the DDIM eta > 0 noise of `sample` (its start noise is seeded by the seed itself)."""
_TEXTURE_START_STREAM = 2
"""Key of the noise that `texture_pass` adds to the restored latent."""
_TEXTURE_VARIANCE_STREAM = 3
"""Key of the DDIM eta > 0 noise of `texture_pass`."""
_SAMPLE_STREAM = 4
"""Key of the seeds of the restorations after the first when `samples` > 1."""


class Denoiser(Protocol):
    """An eps-prediction network with its conditions (LQ latent, DR tokens) already bound."""

    def __call__(
        self, latents: torch.Tensor, timesteps: torch.Tensor, *, conditional: bool
    ) -> torch.Tensor:
        """eps_theta(z_t, t): latents [B, C, H, W], timesteps int64 [B] -> [B, C, H, W].

        conditional=False drops the condition (the unconditional model of condition dropout).
        """
        ...


def _set_steps(scheduler: SchedulerMixin, steps: int) -> None:
    """set_timesteps(steps), dropping the t = -1 that trailing spacing appends for some step
    counts (61, 103, ...: a float `arange` overshoot), which would index abar_{T-1}."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    if bool((timesteps >= 0).all()):
        return
    valid = timesteps[timesteps >= 0]
    if isinstance(scheduler, DPMSolverMultistepScheduler):
        scheduler.set_timesteps(timesteps=valid.tolist())
    else:
        scheduler.timesteps = valid


def _keep_tail(scheduler: SchedulerMixin, count: int) -> torch.Tensor:
    """The last `count` timesteps; multistep solvers are told where the run begins."""
    begin = len(scheduler.timesteps) - count
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return scheduler.timesteps[begin:]


def run_timesteps(scheduler: SchedulerMixin, steps: int, start_t: float) -> torch.Tensor:
    """Timesteps of a run: the `steps`-step schedule's tail with t <= start_t (T - 1), >= 1 step."""
    _set_steps(scheduler, steps)
    last_t = start_t * (scheduler.config.num_train_timesteps - 1)
    count = int((scheduler.timesteps <= last_t).sum())
    return _keep_tail(scheduler, max(count, 1))


def texture_timesteps(scheduler: SchedulerMixin, tem_t: float, tem_steps: int) -> torch.Tensor:
    """Timesteps of the texture pass: exactly `tem_steps` of them, the first near tem_t * T
    (0 < tem_t < 1).

    They are the tail of the trailing schedule of n = round(tem_steps / tem_t) steps, whose
    spacing T / n puts its tem_steps-th last timestep at about tem_t * T.
    """
    total = scheduler.config.num_train_timesteps
    _set_steps(scheduler, min(total, max(tem_steps, round(tem_steps / tem_t))))
    return _keep_tail(scheduler, min(tem_steps, len(scheduler.timesteps)))


def network_calls(schedule: NoiseSchedule, config: SamplingConfig) -> int:
    """Denoiser calls per face of `restore_latents` with `config`: the truncated run's steps
    (twice each under guidance other than 0 and 1) plus the texture pass's `tem_steps`, once
    per averaged sample."""
    from drbfr_cli.diffusion.schedule import make_scheduler

    per_step = 1 if config.guidance_scale in (0, 1) else 2
    scheduler = make_scheduler(schedule, config.sampler)
    calls = per_step * len(run_timesteps(scheduler, config.steps, config.start_t))
    if config.tem_t > 0:
        scheduler = make_scheduler(schedule, config.sampler)
        calls += len(texture_timesteps(scheduler, config.tem_t, config.tem_steps))
    return calls * config.samples


def _derived_seeds(seeds: Sequence[int], *key: int) -> list[int]:
    """One independent 64-bit seed per item for the random stream named by `key`."""
    return [
        int(np.random.SeedSequence(seed % 2**64, spawn_key=key).generate_state(1, np.uint64)[0])
        for seed in seeds
    ]


def item_noise(
    shape: tuple[int, ...],
    seeds: Sequence[int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """N(0, I) noise [len(seeds), *shape]; item i is drawn on the CPU from a generator seeded
    seeds[i], so it is the same in any batch and on any device."""
    items = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    noise = torch.stack(items) if items else torch.empty(0, *shape)
    return noise.to(device=device, dtype=dtype)


def guided_eps(
    denoiser: Denoiser, latents: torch.Tensor, t: torch.Tensor, scale: float
) -> torch.Tensor:
    """Classifier-free guidance: eps = eps_u + scale (eps_c - eps_u) (Ho & Salimans 2022,
    Eq. 6, with scale = 1 + w). Scale 1 needs only the conditional call, scale 0 only the
    unconditional one."""
    if scale == 1:
        return denoiser(latents, t, conditional=True)
    eps_u = denoiser(latents, t, conditional=False)
    if scale == 0:
        return eps_u
    return eps_u + scale * (denoiser(latents, t, conditional=True) - eps_u)


def _step(
    scheduler: SchedulerMixin,
    eps: torch.Tensor,
    t: int,
    z: torch.Tensor,
    *,
    eta: float,
    noise: torch.Tensor | None,
    last: bool,
) -> torch.Tensor:
    """z_t -> z_{t-1}. DDIM's last step targets abar = 1, where z_{t-1} is its x0 estimate
    (DDIM Eq. 12, no noise); it is taken from there since diffusers stops at t = 0 instead for
    some step counts (7, 13, ...: its previous timestep is t - T // steps)."""
    from diffusers import DDIMScheduler

    if not isinstance(scheduler, DDIMScheduler):
        return scheduler.step(eps, t, z).prev_sample
    out = scheduler.step(eps, t, z, eta=eta, variance_noise=noise)
    return out.pred_original_sample if last else out.prev_sample


def _denoise(
    denoiser: Denoiser,
    scheduler: SchedulerMixin,
    z: torch.Tensor,
    timesteps: torch.Tensor,
    seeds: Sequence[int],
    *,
    guidance_scale: float,
    eta: float,
    stream: int,
) -> torch.Tensor:
    """Run `scheduler` over `timesteps` from z (at timesteps[0]) down to z_0."""
    for i, t in enumerate(timesteps.tolist()):
        last = i == len(timesteps) - 1
        t_batch = torch.full((z.shape[0],), t, dtype=torch.int64, device=z.device)
        eps = guided_eps(denoiser, scheduler.scale_model_input(z, t), t_batch, guidance_scale)
        noise = None
        if eta > 0:
            step_seeds = _derived_seeds(seeds, stream, t)
            noise = item_noise(z.shape[1:], step_seeds, device=z.device, dtype=z.dtype)
        z = _step(scheduler, eps, t, z, eta=eta, noise=noise, last=last)
    return z


def _check_seeds(latents: torch.Tensor, seeds: Sequence[int]) -> None:
    if len(seeds) != latents.shape[0]:
        raise ValueError(f"{latents.shape[0]} latents but {len(seeds)} seeds")


@torch.no_grad()
def sample(
    denoiser: Denoiser,
    lq_latents: torch.Tensor,
    seeds: Sequence[int],
    schedule: NoiseSchedule,
    config: SamplingConfig,
) -> torch.Tensor:
    """z_0 for each item (the shape, device and dtype of `lq_latents`, the scaled VAE latents
    of the LQ faces).

    start_t = 1: from z_T = noise (DR-BFR). start_t < 1: from z_{t_s} = sqrt(abar) z_LQ +
    sqrt(1 - abar) noise (DDPM Eq. 4 on the LQ latent; DiffBFR truncated sampling).
    """
    from drbfr_cli.diffusion.schedule import make_scheduler

    _check_seeds(lq_latents, seeds)
    scheduler = make_scheduler(schedule, config.sampler)
    timesteps = run_timesteps(scheduler, config.steps, config.start_t)
    noise = item_noise(
        lq_latents.shape[1:], seeds, device=lq_latents.device, dtype=lq_latents.dtype
    )
    if config.start_t == 1:
        z = noise * scheduler.init_noise_sigma
    else:
        z = scheduler.add_noise(lq_latents, noise, timesteps[:1].repeat(len(seeds)))
    return _denoise(
        denoiser,
        scheduler,
        z,
        timesteps,
        seeds,
        guidance_scale=config.guidance_scale,
        eta=config.eta,
        stream=_VARIANCE_STREAM,
    )


@torch.no_grad()
def texture_pass(
    denoiser: Denoiser,
    latents: torch.Tensor,
    seeds: Sequence[int],
    schedule: NoiseSchedule,
    config: SamplingConfig,
) -> torch.Tensor:
    """DiffBFR TEM: renoise `latents` to about tem_t * T (DDPM Eq. 4, fresh noise) and run
    tem_steps steps of the unconditional model down to z_0. tem_t = 0: `latents` unchanged."""
    from drbfr_cli.diffusion.schedule import make_scheduler

    _check_seeds(latents, seeds)
    if config.tem_t == 0:
        return latents
    scheduler = make_scheduler(schedule, config.sampler)
    timesteps = texture_timesteps(scheduler, config.tem_t, config.tem_steps)
    noise_seeds = _derived_seeds(seeds, _TEXTURE_START_STREAM)
    noise = item_noise(latents.shape[1:], noise_seeds, device=latents.device, dtype=latents.dtype)
    z = scheduler.add_noise(latents, noise, timesteps[:1].repeat(len(seeds)))
    return _denoise(
        denoiser,
        scheduler,
        z,
        timesteps,
        seeds,
        guidance_scale=0.0,
        eta=config.eta,
        stream=_TEXTURE_VARIANCE_STREAM,
    )


@torch.no_grad()
def restore_latents(
    denoiser: Denoiser,
    lq_latents: torch.Tensor,
    seeds: Sequence[int],
    schedule: NoiseSchedule,
    config: SamplingConfig,
) -> torch.Tensor:
    """Restored latents: `sample`, then `texture_pass` (when config.tem_t > 0); with
    config.samples = K > 1, the mean of K such restorations (posterior mean, see the module
    docstring), the first seeded as a single one, the others by derived seeds."""
    total = torch.zeros_like(lq_latents)
    for k in range(config.samples):
        draw_seeds = seeds if k == 0 else _derived_seeds(seeds, _SAMPLE_STREAM, k)
        restored = sample(denoiser, lq_latents, draw_seeds, schedule, config)
        total += texture_pass(denoiser, restored, draw_seeds, schedule, config)
    return total / config.samples
