"""Sampling loops with dummy denoisers: exact recoveries, closed forms, call counts, seeds."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from drbfr_cli.choices import Sampler
from drbfr_cli.diffusion.sampling import (
    SamplingConfig,
    guided_eps,
    item_noise,
    restore_latents,
    run_timesteps,
    sample,
    texture_pass,
    texture_timesteps,
)
from drbfr_cli.diffusion.schedule import NoiseSchedule, make_scheduler

SCHEDULE = NoiseSchedule()
T = SCHEDULE.num_train_timesteps
SHAPE = (2, 3, 8, 8)
SEEDS = [11, 12]
SAMPLERS = list(Sampler)


def latents(seed: int, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def abar(t: torch.Tensor) -> torch.Tensor:
    """abar_t broadcast over NCHW, float64."""
    return SCHEDULE.alphas_cumprod()[t.long().cpu()].view(-1, 1, 1, 1)


class Counting:
    """eps = 0.1 z, recording every call as (timesteps, conditional)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], bool]] = []

    def __call__(self, z: torch.Tensor, t: torch.Tensor, *, conditional: bool) -> torch.Tensor:
        assert t.dtype == torch.int64 and t.shape == (z.shape[0],)
        self.calls.append((t.tolist(), conditional))
        return 0.1 * z


class Oracle(Counting):
    """Knows z_0: eps = (z_t - sqrt(abar_t) x0) / sqrt(1 - abar_t), inverting DDPM Eq. 4."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x0 = x0

    def __call__(self, z: torch.Tensor, t: torch.Tensor, *, conditional: bool) -> torch.Tensor:
        super().__call__(z, t, conditional=conditional)
        a = abar(t)
        return ((z - a.sqrt() * self.x0) / (1 - a).sqrt()).to(z.dtype)


def zero_eps(z: torch.Tensor, t: torch.Tensor, *, conditional: bool) -> torch.Tensor:
    return torch.zeros_like(z)


def per_item(z: torch.Tensor, t: torch.Tensor, *, conditional: bool) -> torch.Tensor:
    """Nonlinear, condition- and time-dependent, each item on its own."""
    shift = 0.3 if conditional else -0.2
    return torch.tanh(z + shift) * (t.view(-1, 1, 1, 1) / T) + 0.05 * z**2


def config(**kwargs) -> SamplingConfig:
    return SamplingConfig(**kwargs)


def test_noise_schedule_matches_diffusers() -> None:
    for kind in ("linear", "scaled_linear"):
        schedule = NoiseSchedule(beta_schedule=kind)
        ours = schedule.alphas_cumprod()
        assert ours.shape == (T,) and bool((ours[1:] < ours[:-1]).all())
        theirs = make_scheduler(schedule, Sampler.DDIM).alphas_cumprod.double()
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_training_noising_is_the_schedulers_add_noise(sampler: Sampler) -> None:
    """Training (NoiseSchedule.add_noise) and sampling (the diffusers scheduler) noise alike, at
    the timesteps a sampling run uses (DPM-Solver's add_noise indexes its own step grid)."""
    for kind in ("linear", "scaled_linear"):
        schedule = NoiseSchedule(beta_schedule=kind)
        scheduler = make_scheduler(schedule, sampler)
        scheduler.set_timesteps(20)
        t = scheduler.timesteps[[0, 5, 12, 19]]
        z0, noise = latents(1, (4, 3, 8, 8)), latents(2, (4, 3, 8, 8))
        theirs = scheduler.add_noise(z0, noise, t)
        torch.testing.assert_close(schedule.add_noise(z0, noise, t), theirs)


def test_item_noise_does_not_depend_on_the_batch() -> None:
    batch = item_noise((3, 8, 8), [5, 6, 7], dtype=torch.float64)
    assert batch.shape == (3, 3, 8, 8) and batch.dtype == torch.float64
    alone = item_noise((3, 8, 8), [6], dtype=torch.float64)
    assert torch.equal(batch[1], alone[0])
    assert not torch.equal(batch[0], batch[1])


@pytest.mark.parametrize("steps", [20, 7, 61])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_run_timesteps(sampler: Sampler, steps: int) -> None:
    full = run_timesteps(make_scheduler(SCHEDULE, sampler), steps, 1.0)
    assert len(full) == steps and full[0] == T - 1 and int(full.min()) >= 0
    assert bool((full[1:] < full[:-1]).all())
    half = run_timesteps(make_scheduler(SCHEDULE, sampler), steps, 0.5)
    assert torch.equal(half, full[full <= 0.5 * (T - 1)])
    assert len(run_timesteps(make_scheduler(SCHEDULE, sampler), steps, 1e-6)) == 1


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_texture_timesteps(sampler: Sampler) -> None:
    for tem_t, tem_steps in [(0.1, 4), (0.3, 4), (0.05, 1), (0.25, 7)]:
        ts = texture_timesteps(make_scheduler(SCHEDULE, sampler), tem_t, tem_steps)
        assert len(ts) == tem_steps
        assert abs(int(ts[0]) - tem_t * T) <= T / round(tem_steps / tem_t) / 2 + 1


def test_ddim_is_deterministic_per_seed() -> None:
    lq, cfg = latents(0), config(steps=10)
    first = sample(per_item, lq, SEEDS, SCHEDULE, cfg)
    assert torch.equal(first, sample(per_item, lq, SEEDS, SCHEDULE, cfg))
    other = sample(per_item, lq, [13, 14], SCHEDULE, cfg)
    assert not torch.allclose(first, other)


def test_ddim_eta_adds_seeded_noise() -> None:
    lq, cfg = latents(0), config(steps=10, eta=1.0)
    first = sample(per_item, lq, SEEDS, SCHEDULE, cfg)
    assert torch.equal(first, sample(per_item, lq, SEEDS, SCHEDULE, cfg))
    assert not torch.allclose(first, sample(per_item, lq, SEEDS, SCHEDULE, replace(cfg, eta=0.0)))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_call_counts(sampler: Sampler) -> None:
    def calls(**kwargs) -> list[tuple[list[int], bool]]:
        denoiser = Counting()
        sample(denoiser, latents(0), SEEDS, SCHEDULE, config(sampler=sampler, steps=20, **kwargs))
        return denoiser.calls

    full = calls()
    assert len(full) == 20 and all(conditional for _, conditional in full)
    assert full[0][0] == [T - 1, T - 1]
    truncated = calls(start_t=0.5)
    expected = len(run_timesteps(make_scheduler(SCHEDULE, sampler), 20, 0.5))
    assert len(truncated) == expected == 10
    assert max(t for ts, _ in truncated for t in ts) <= 0.5 * T
    guided = calls(guidance_scale=2.0)
    assert len(guided) == 40 and sum(conditional for _, conditional in guided) == 20
    assert len(calls(start_t=0.5, guidance_scale=3.0)) == 20
    unconditional = calls(guidance_scale=0.0)
    assert len(unconditional) == 20 and not any(conditional for _, conditional in unconditional)


def test_guided_eps_combines_the_two_predictions() -> None:
    z, t = latents(1), torch.full((2,), 500)
    eps_c, eps_u = per_item(z, t, conditional=True), per_item(z, t, conditional=False)
    torch.testing.assert_close(guided_eps(per_item, z, t, 1.0), eps_c)
    torch.testing.assert_close(guided_eps(per_item, z, t, 0.0), eps_u)
    torch.testing.assert_close(guided_eps(per_item, z, t, 2.5), eps_u + 2.5 * (eps_c - eps_u))


@pytest.mark.parametrize("steps", [20, 7, 61])
@pytest.mark.parametrize("start_t", [1.0, 0.4])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_oracle_denoiser_recovers_x0(sampler: Sampler, start_t: float, steps: int) -> None:
    x0, lq = latents(1), latents(2)
    cfg = config(sampler=sampler, steps=steps, start_t=start_t)
    out = sample(Oracle(x0), lq, SEEDS, SCHEDULE, cfg)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_zero_denoiser_closed_form(sampler: Sampler) -> None:
    """With eps = 0 both solvers keep z_t / sqrt(abar_t) constant: z_0 = z_start / sqrt(abar)."""
    noise = item_noise(SHAPE[1:], SEEDS, dtype=torch.float64)
    lq_a, lq_b = latents(3), latents(4)
    full = config(sampler=sampler, steps=20)
    out_a = sample(zero_eps, lq_a, SEEDS, SCHEDULE, full)
    assert torch.equal(out_a, sample(zero_eps, lq_b, SEEDS, SCHEDULE, full))
    expected = noise / abar(torch.tensor([T - 1])).sqrt()
    torch.testing.assert_close(out_a.double(), expected, rtol=1e-4, atol=1e-4)

    truncated = replace(full, start_t=0.3)
    t_s = run_timesteps(make_scheduler(SCHEDULE, sampler), 20, 0.3)[:1]
    out = sample(zero_eps, lq_a, SEEDS, SCHEDULE, truncated)
    expected = lq_a.double() + ((1 - abar(t_s)) / abar(t_s)).sqrt() * noise
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out, sample(zero_eps, lq_b, SEEDS, SCHEDULE, truncated))


def test_texture_pass_off_is_the_identity() -> None:
    z, denoiser = latents(5), Counting()
    out = texture_pass(denoiser, z, SEEDS, SCHEDULE, config(tem_t=0.0))
    assert torch.equal(out, z) and not denoiser.calls


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_texture_pass_is_unconditional_and_exact_with_an_oracle(sampler: Sampler) -> None:
    x0 = latents(6)
    oracle = Oracle(x0)
    cfg = config(sampler=sampler, tem_t=0.2, tem_steps=3, guidance_scale=4.0)
    out = texture_pass(oracle, latents(7), SEEDS, SCHEDULE, cfg)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)
    assert len(oracle.calls) == 3 and not any(conditional for _, conditional in oracle.calls)
    assert oracle.calls[0][0][0] <= 0.2 * T


def test_texture_noise_is_fresh() -> None:
    """Closed form with eps = 0 (DDIM): out = z + sqrt((1 - abar) / abar) noise_tem."""
    cfg = config(tem_t=0.2, tem_steps=2)
    out = texture_pass(zero_eps, torch.zeros(SHAPE), SEEDS, SCHEDULE, cfg)
    t_tem = texture_timesteps(make_scheduler(SCHEDULE, Sampler.DDIM), 0.2, 2)[:1]
    noise_tem = out.double() / ((1 - abar(t_tem)) / abar(t_tem)).sqrt()
    assert 0.7 < float(noise_tem.std()) < 1.3
    assert not torch.allclose(noise_tem, item_noise(SHAPE[1:], SEEDS, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 8},
        {"steps": 8, "eta": 0.7},
        {"steps": 8, "start_t": 0.6, "guidance_scale": 1.5, "tem_t": 0.2, "eta": 0.5},
        {"sampler": Sampler.DPMSOLVER, "steps": 8, "start_t": 0.6, "tem_t": 0.2},
        {"steps": 8, "start_t": 0.6, "tem_t": 0.2, "eta": 0.5, "samples": 3},
    ],
)
def test_batching_does_not_change_results(kwargs: dict) -> None:
    lq, seeds, cfg = latents(8, (3, 3, 8, 8)), [5, 6, 7], config(**kwargs)
    batch = restore_latents(per_item, lq, seeds, SCHEDULE, cfg)
    for i, seed in enumerate(seeds):
        alone = restore_latents(per_item, lq[i : i + 1], [seed], SCHEDULE, cfg)
        torch.testing.assert_close(batch[i : i + 1], alone, atol=1e-6, rtol=0)


def test_one_sample_is_the_plain_restoration() -> None:
    lq, cfg = latents(10), config(steps=8, start_t=0.6, tem_t=0.2, eta=0.5)
    single = texture_pass(
        per_item, sample(per_item, lq, SEEDS, SCHEDULE, cfg), SEEDS, SCHEDULE, cfg
    )
    assert torch.equal(restore_latents(per_item, lq, SEEDS, SCHEDULE, cfg), single)


def test_samples_average_independent_restorations() -> None:
    """The mean of K restorations: the first is the plain one, each later one is new."""
    lq, cfg = latents(10), config(steps=8, start_t=0.6, guidance_scale=1.5)
    means = [
        restore_latents(per_item, lq, SEEDS, SCHEDULE, replace(cfg, samples=k)) for k in (1, 2, 3)
    ]
    second = 2 * means[1] - means[0]
    third = 3 * means[2] - 2 * means[1]
    assert not torch.allclose(second, means[0], atol=1e-3)
    assert not torch.allclose(third, second, atol=1e-3)
    assert not torch.allclose(third, means[0], atol=1e-3)
    # each draw is a restoration of the same LQ: as close to it as the first one is
    for draw in (second, third):
        ratio = float((draw - lq).norm() / (means[0] - lq).norm())
        assert 0.8 < ratio < 1.25


def test_samples_estimate_the_posterior_mean() -> None:
    """eps = 0 from a truncated start gives z_0 = z_LQ + c noise (see the closed form above):
    the mean of K draws has noise of std c / sqrt(K) around z_LQ."""
    lq = latents(11, (4, 3, 16, 16))
    seeds = [21, 22, 23, 24]
    t_s = run_timesteps(make_scheduler(SCHEDULE, Sampler.DDIM), 20, 0.3)[:1]
    c = float(((1 - abar(t_s)) / abar(t_s)).sqrt())
    for k in (1, 16):
        cfg = config(steps=20, start_t=0.3, samples=k)
        residual = (restore_latents(zero_eps, lq, seeds, SCHEDULE, cfg) - lq) / c
        assert abs(float(residual.mean())) < 0.1 / k**0.5
        assert abs(float(residual.std()) * k**0.5 - 1) < 0.1


def test_samples_keep_the_oracle_exact() -> None:
    x0 = latents(1)
    cfg = config(steps=10, start_t=0.4, tem_t=0.2, samples=4)
    out = restore_latents(Oracle(x0), latents(2), SEEDS, SCHEDULE, cfg)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


def test_sampling_keeps_dtype_and_builds_no_graph() -> None:
    weight = torch.nn.Parameter(torch.tensor(0.1, dtype=torch.float64))

    def learned(z: torch.Tensor, t: torch.Tensor, *, conditional: bool) -> torch.Tensor:
        return weight * z

    lq = latents(9).double()
    out = restore_latents(learned, lq, SEEDS, SCHEDULE, config(steps=4, start_t=0.5, tem_t=0.1))
    assert out.dtype == torch.float64 and out.shape == SHAPE and not out.requires_grad


def test_seed_count_must_match_the_batch() -> None:
    with pytest.raises(ValueError, match="2 latents but 1 seeds"):
        sample(zero_eps, latents(0), [1], SCHEDULE, config())


def test_config_accepts_sampler_names() -> None:
    assert SamplingConfig(sampler="dpmsolver++").sampler is Sampler.DPMSOLVER  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps"),
        ({"tem_steps": 0}, "tem_steps"),
        ({"samples": 0}, "samples"),
        ({"start_t": 0.0}, "start_t"),
        ({"start_t": 1.5}, "start_t"),
        ({"tem_t": 1.0}, "tem_t"),
        ({"tem_t": -0.1}, "tem_t"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"eta": -0.5}, "eta"),
        ({"eta": 0.5, "sampler": Sampler.DPMSOLVER}, "ddim"),
        ({"sampler": "euler"}, "sampler must be one of ddim, dpmsolver\\+\\+"),
        ({"start_t": float("nan")}, "start_t"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"beta_schedule": "cosine"},
        {"beta_start": 0.02, "beta_end": 0.01},
        {"num_train_timesteps": 1},
    ],
)
def test_noise_schedule_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        NoiseSchedule(**kwargs)


def test_fidelity_weight_maps_to_start_and_low_frequency_between_its_ends() -> None:
    from drbfr_cli.diffusion.sampling import (
        FIDELITY_LOW_FREQ,
        FIDELITY_START_T,
        SamplingOverrides,
        fidelity_sampling,
    )

    generative, faithful = fidelity_sampling(0.0), fidelity_sampling(1.0)
    assert generative == {"start_t": FIDELITY_START_T[0], "low_freq_sigma": FIDELITY_LOW_FREQ[0]}
    assert faithful == {"start_t": FIDELITY_START_T[1], "low_freq_sigma": FIDELITY_LOW_FREQ[1]}
    middle = fidelity_sampling(0.5)
    assert middle["start_t"] == pytest.approx(sum(FIDELITY_START_T) / 2)
    assert faithful["start_t"] < middle["start_t"] < generative["start_t"]  # faithful: less noise
    for weight in (-0.1, 1.01):
        with pytest.raises(ValueError, match=r"fidelity must lie in \[0, 1\]"):
            fidelity_sampling(weight)
    options = SamplingOverrides(steps=4, start_t=None, low_freq_sigma=3.0)
    assert options.with_fidelity(None) == options
    merged = options.with_fidelity(0.0)
    assert merged.given() == {"steps": 4, "start_t": FIDELITY_START_T[0], "low_freq_sigma": 3.0}
    assert merged.apply(SamplingConfig()) == SamplingConfig(
        steps=4, start_t=FIDELITY_START_T[0], low_freq_sigma=3.0
    )


def test_sampling_overrides_check_each_value_and_change_only_what_they_set() -> None:
    from drbfr_cli.diffusion.sampling import SamplingOverrides

    bundle = SamplingConfig(sampler=Sampler.DPMSOLVER, steps=8, start_t=0.5, low_freq_sigma=2.0)
    assert SamplingOverrides().apply(bundle) == bundle
    chosen = SamplingOverrides(sampler="ddim", steps=3)
    assert chosen.sampler is Sampler.DDIM and chosen.given() == {"sampler": "ddim", "steps": 3}
    assert chosen.apply(bundle) == replace(bundle, sampler=Sampler.DDIM, steps=3)
    for bad, message in [
        ({"start_t": 1.5}, r"start_t must lie in \(0, 1\]"),
        ({"start_t": 0.0}, r"start_t must lie in \(0, 1\]"),
        ({"tem_t": 1.0}, r"tem_t must lie in \[0, 1\)"),
        ({"steps": 0}, "must be >= 1"),
        ({"samples": 0}, "must be >= 1"),
        ({"low_freq_sigma": -1.0}, "low_freq_sigma must be >= 0"),
        ({"sampler": "euler"}, "sampler must be one of"),
        ({"eta": 0.5, "sampler": "dpmsolver++"}, "eta > 0 needs the ddim sampler"),
    ]:
        with pytest.raises(ValueError, match=message):
            SamplingOverrides(**bad)
    eta = SamplingOverrides(eta=0.5)  # fine alone: the bundle's sampler decides
    with pytest.raises(ValueError, match="eta > 0 needs the ddim sampler"):
        eta.apply(bundle)
    with pytest.raises(AttributeError):
        chosen.steps = 4  # frozen
