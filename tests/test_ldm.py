"""LDRM (Eqs. 8-10), `train ldm`, bundles and `drbfr export` on small frozen DRM and VAE runs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from typer.testing import CliRunner

from drbfr_cli import doctor
from drbfr_cli.bundle import DEFAULT_NAME, load_bundle, resolve_bundle, shipped_bundles_dir
from drbfr_cli.choices import Precision
from drbfr_cli.cli.main import app
from drbfr_cli.diffusion.pipeline import Condition, LDRMDenoiser, restore_faces
from drbfr_cli.diffusion.sampling import (
    FIDELITY_START_T,
    SamplingConfig,
    SamplingOverrides,
    restore_latents,
)
from drbfr_cli.diffusion.schedule import NoiseSchedule, make_scheduler
from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import write_image
from drbfr_cli.nets import ldrm as ldrm_net
from drbfr_cli.nets.autoencoder import VQConfig
from drbfr_cli.nets.drm import DRMConfig
from drbfr_cli.nets.ldrm import (
    LDRM,
    GaussianPriorSkip,
    LDRMConfig,
    TimeModulation,
    timestep_embedding,
)
from drbfr_cli.presets import (
    LDMConfig,
    PatchConfig,
    VAEConfig,
    VAELossConfig,
    ldm_config_from_preset,
    with_patch_size,
)
from drbfr_cli.restore.restorer import BundleRestorer, load_restorer
from drbfr_cli.train.drm import DRMTask, DRMTaskConfig
from drbfr_cli.train.ldm import LDMTask, LDMTaskConfig, load_ldm
from drbfr_cli.train.loop import LoopConfig, train
from drbfr_cli.train.vae import VAETask, VAETaskConfig, train_vae

runner = CliRunner()
SMALL_DRM = DRMConfig(
    face_size=64, crop_size=32, patch_size=16, encoder_channels=(8, 16), tokens=2, token_dim=16,
    generator_channels=(8, 16), projection_dim=16,
)  # fmt: skip
SMALL_VAE = VAEConfig(
    image_size=32, scale_samples=16,
    network=VQConfig(block_out_channels=(16, 16), norm_num_groups=8, num_codes=64),
    data=PatchConfig(patch_size=32, face_sides=(32, 48)), loss=VAELossConfig(quantize_after=4),
)  # fmt: skip
SMALL_LDM = LDMConfig(
    data=PatchConfig(patch_size=32, face_sides=(32, 48), color_augment=True),
    network=LDRMConfig(
        block_out_channels=(16, 32), attention_levels=(False, True), head_dim=8, norm_num_groups=8,
        time_embedding_dim=32,
    ),
    sampling=SamplingConfig(steps=4),
)  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread_per_worker():
    """Two pytest workers share two cores: one torch thread each."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight smooth random colour images (no ../shared needed for these unit-level runs)."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for i in range(8):
        low = rng.random((4, 4, 3)).astype(np.float32)
        image = np.kron(low, np.ones((16, 16, 1), dtype=np.float32))
        write_image(root / f"face{i}.png", np.clip(image + 0.05 * rng.random(image.shape), 0, 1))
    return root


@pytest.fixture(scope="module")
def frozen_runs(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("frozen")
    loop = {"batch_size": 4, "lr": 1e-3, "log_every": 2, "checkpoint_every": 100}
    drm_task = DRMTask(DRMTaskConfig(model=SMALL_DRM, data=str(faces_dir), preset="test"))
    train(drm_task, LoopConfig(steps=2, **loop), root / "drm")
    vae_task = VAETask(VAETaskConfig(model=SMALL_VAE, data=str(faces_dir), preset="test"))
    train_vae(vae_task, LoopConfig(steps=6, **loop), root / "vae")
    return root / "drm", root / "vae"


def _ldm_task(faces_dir: Path, frozen: tuple[Path, Path], **settings: object) -> LDMTask:
    drm, vae = frozen
    config = LDMTaskConfig(
        model=SMALL_LDM, data=str(faces_dir), preset="test", drm=str(drm), vae=str(vae), **settings
    )
    return LDMTask(config)


def test_the_training_step_noises_latents_as_the_sampling_scheduler_does(
    faces_dir: Path, frozen_runs: tuple[Path, Path]
) -> None:
    """compute_loss feeds the network z_t = the diffusers scheduler's add_noise(z_0, eps, t)."""
    task = _ldm_task(faces_dir, frozen_runs)
    ldrm, seen = task.modules()["ldrm"], {}
    hook = ldrm.register_forward_pre_hook(lambda _, args: seen.update(z_t=args[0], t=args[1]))
    batch = next(iter(torch.utils.data.DataLoader(task.dataset(), batch_size=4)))
    torch.manual_seed(5)
    task.compute_loss(task.modules(), batch, step=1)
    hook.remove()
    z0 = task.parts.first_stage.encode(batch["hq"])
    torch.manual_seed(5)  # the step draws eps, then t, from torch's global generator
    noise = torch.randn_like(z0)
    t = torch.randint(0, SMALL_LDM.schedule.num_train_timesteps, (z0.shape[0],))
    scheduler = make_scheduler(SMALL_LDM.schedule, SMALL_LDM.sampling.sampler)
    assert torch.equal(seen["t"], t)
    torch.testing.assert_close(seen["z_t"], scheduler.add_noise(z0, noise, t))


@pytest.fixture(scope="module")
def ldm_run(faces_dir: Path, frozen_runs: tuple[Path, Path], tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ldm") / "run"
    loop = LoopConfig(
        steps=40, batch_size=8, lr=2e-3, warmup_steps=2, log_every=5, ema_decay=0.9,
        checkpoint_every=100, sample_every=40,
    )  # fmt: skip
    train(_ldm_task(faces_dir, frozen_runs), loop, run)
    return run


# ---------------------------------------------------------------------------------------------
# The network


def _small_ldrm(**changes: object) -> LDRM:
    torch.manual_seed(0)
    config = LDRMConfig(
        latent_channels=3, dr_tokens=2, dr_width=16, block_out_channels=(16, 32),
        attention_levels=(False, True), head_dim=8, norm_num_groups=8, time_embedding_dim=32,
        **changes,
    )  # fmt: skip
    return LDRM(config).eval()


def test_timestep_embedding_is_the_sinusoid_the_shipped_weights_learned_on() -> None:
    """[cos(t w_k), sin(t w_k)], w_k = 10000^(-k / 64) for dim 128 (the shipped LDRM's): the
    formula written out, so the weights stay valid whatever the library does."""
    t = torch.tensor([0, 1, 250, 999])
    freqs = 10000.0 ** (-torch.arange(64, dtype=torch.float64) / 64)
    angles = t.double()[:, None] * freqs[None]
    expected = torch.cat([angles.cos(), angles.sin()], dim=1).float()
    got = timestep_embedding(t, 128)
    assert got.shape == (4, 128)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_time_modulation_starts_as_the_identity_and_depends_on_t() -> None:
    modulation = TimeModulation(32, 16)
    dr, t = torch.randn(3, 2, 16), torch.tensor([0, 500, 999])
    assert torch.equal(modulation(dr, t), dr)  # alpha = 1, beta = 0 at initialisation
    torch.nn.init.normal_(modulation.mlp[-1].weight)
    out = modulation(dr, t)
    assert not torch.allclose(out[0], out[2])  # Eq. (10): alpha_t, beta_t vary with t


def test_dropped_conditions_are_ignored_and_kept_ones_are_used() -> None:
    model = _small_ldrm()
    with torch.no_grad():
        model.null_dr.normal_()
    z, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 700])
    lq_a, lq_b = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    dr_a, dr_b = torch.randn(2, 2, 16), torch.randn(2, 2, 16)
    drop = torch.zeros(2, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(model(z, t, lq_a, dr_a, drop), model(z, t, lq_b, dr_b, drop))
        assert not torch.allclose(model(z, t, lq_a, dr_a), model(z, t, lq_b, dr_a))
        assert not torch.allclose(model(z, t, lq_a, dr_a), model(z, t, lq_a, dr_b))
        assert model(z, t, lq_a, dr_a).shape == z.shape


def test_dr_none_never_reads_the_dr() -> None:
    model = _small_ldrm(use_dr=False)
    z, t, lq = torch.randn(2, 3, 8, 8), torch.tensor([3, 400]), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(z, t, lq, torch.randn(2, 2, 16)), model(z, t, lq, None))


def _prior_check(prior: GaussianPriorSkip, mean: float, var: float, keep: bool, t: int) -> None:
    """Draw z_0 ~ N(mean, var), noise it to t (DDPM Eq. 4): the prior's eps must be E[eps | z_t]
    (jointly Gaussian: linear, so the regression of eps on it has slope 1 and intercept 0)."""
    n = 200_000
    generator = torch.Generator().manual_seed(t)
    z0 = mean + var**0.5 * torch.randn(n, 1, 1, 1, generator=generator)
    eps = torch.randn(n, 1, 1, 1, generator=generator)
    abar = NoiseSchedule().alphas_cumprod()[t].float()
    z_t = abar.sqrt() * z0 + (1 - abar).sqrt() * eps
    lq = torch.full_like(z0, mean if keep else 0.0)
    with torch.no_grad():
        pred = prior(z_t, torch.full((n,), float(abar)), lq, torch.full((n,), keep)).flatten()
    eps = eps.flatten()
    slope = float(((pred - pred.mean()) * (eps - eps.mean())).mean() / pred.var())
    assert abs(slope - 1) < 0.02 and abs(float((eps - pred).mean())) < 0.01, (t, slope)


def test_prior_skip_is_the_gaussian_posterior_mean_of_eps() -> None:
    prior = GaussianPriorSkip()
    with torch.no_grad():
        prior.log_var.fill_(np.log(0.09))
    for t in (20, 300, 900):
        _prior_check(prior, mean=0.7, var=0.09, keep=True, t=t)  # around f_LQ, learned v
        _prior_check(prior, mean=0.0, var=1.0, keep=False, t=t)  # dropped: N(0, I)


def test_prior_skip_starts_as_the_prior_and_a_sure_prior_returns_the_lq_latent() -> None:
    model = _small_ldrm(prior_skip=True)
    z, t, lq = torch.randn(2, 3, 8, 8), torch.tensor([10, 700]), torch.randn(2, 3, 8, 8)
    keep = torch.tensor([True, False])
    abar = NoiseSchedule().abar_at(t)
    with torch.no_grad():
        assert torch.equal(
            model(z, t, lq, torch.randn(2, 2, 16), keep, abar), model.prior(z, abar, lq, keep)
        )
        model.prior.log_var.fill_(-30.0)  # v ~ 0: z_0 is f_LQ for sure
    denoiser = LDRMDenoiser(model, Condition(lq, torch.randn(2, 2, 16)), NoiseSchedule())
    for start_t in (1.0, 0.4):
        config = SamplingConfig(steps=10, start_t=start_t)
        out = restore_latents(denoiser, lq, [0, 1], NoiseSchedule(), config)
        assert torch.allclose(out, lq, atol=1e-4), start_t
    with pytest.raises(ValueError, match="abar_t"):
        model(z, t, lq, None, keep)


# ---------------------------------------------------------------------------------------------
# Training


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_training_lowers_the_eps_loss_and_keeps_an_ema(ldm_run: Path) -> None:
    log = _log(ldm_run)
    assert [entry["step"] for entry in log] == list(range(5, 45, 5))
    first, last = (
        np.mean([e["eps_mse"] for e in log[:2]]),
        np.mean([e["eps_mse"] for e in log[-2:]]),
    )
    assert last < 0.8 * first, (first, last)
    config = json.loads((ldm_run / "final" / "config.json").read_text())
    assert config["ema"] and config["task_config"]["network"]["dr_width"] == SMALL_DRM.token_dim
    assert (ldm_run / "samples").is_dir()


def test_frozen_parts_do_not_change(faces_dir: Path, frozen_runs: tuple[Path, Path]) -> None:
    task = _ldm_task(faces_dir, frozen_runs)
    before = {k: v.clone() for k, v in task.parts.encoder.state_dict().items()}
    vae_before = {k: v.clone() for k, v in task.parts.first_stage.model.state_dict().items()}
    train(task, LoopConfig(steps=3, batch_size=4, lr=1e-2), faces_dir.parent / "ldm_frozen")
    for name, value in task.parts.encoder.state_dict().items():
        assert torch.equal(value, before[name])
    for name, value in task.parts.first_stage.model.state_dict().items():
        assert torch.equal(value, vae_before[name]), name


def test_resume_is_bit_exact(faces_dir: Path, frozen_runs: tuple[Path, Path], tmp_path) -> None:
    loop = {"batch_size": 4, "lr": 1e-3, "log_every": 2, "checkpoint_every": 2}
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(_ldm_task(faces_dir, frozen_runs), LoopConfig(steps=4, **loop), whole)
    train(_ldm_task(faces_dir, frozen_runs), LoopConfig(steps=2, **loop), split)
    train(_ldm_task(faces_dir, frozen_runs), LoopConfig(steps=4, **loop), split, resume=True)
    assert _log(whole) == [{**a, "elapsed": b["elapsed"], "images_per_s": b["images_per_s"]}
                           for a, b in zip(_log(split), _log(whole), strict=True)]  # fmt: skip
    a, b = load_ldm(whole, ema=False)[0], load_ldm(split, ema=False)[0]
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_preset_and_vae_of_other_sizes_are_refused(
    faces_dir: Path, frozen_runs: tuple[Path, Path]
) -> None:
    drm, vae = frozen_runs
    wrong = LDMTaskConfig(
        model=LDMConfig(data=PatchConfig(patch_size=64, face_sides=(64, 64))),
        data=str(faces_dir), preset="x",
        drm=str(drm), vae=str(vae),
    )  # fmt: skip
    with pytest.raises(DrbfrError, match="32 px faces"):
        LDMTask(wrong)


def test_patch_size_changes_only_the_training_crop() -> None:
    """`train ldm --patch-size 256` trains the small preset on 256 px crops of the same faces,
    with everything else the preset's; a crop larger than the faces is a one-line error."""
    small, _ = ldm_config_from_preset("small")
    larger = with_patch_size(small, 256)
    assert larger.data.patch_size == 256 != small.data.patch_size
    assert replace(larger, data=small.data) == small
    with pytest.raises(DrbfrError, match="exceeds the preset's smallest face side"):
        with_patch_size(small, small.data.face_sides[0] + 8)
    args = ["train", "ldm", "--preset", "small", "--patch-size", "1024", "--data", "x"]
    result = runner.invoke(app, [*args, "--drm", "x", "-o", "y"])
    assert result.exit_code != 0 and "smallest face side (448 px)" in result.output
    assert "Traceback" not in result.output


def test_warmup_and_cooldown_options_set_the_learning_rate_schedule() -> None:
    """`train ldm --warmup-steps W --cooldown-steps C` replace the preset's schedule (a fine-tune
    that decays over the whole run); a cool-down longer than the run is a one-line error."""
    from drbfr_cli.cli.train import loop_config
    from drbfr_cli.train.loop import lr_factor

    _, defaults = ldm_config_from_preset("small-face")
    loop = loop_config(defaults, steps=200, warmup_steps=10, cooldown_steps=200)
    assert (loop.warmup_steps, loop.cooldown_steps, loop.lr) == (10, 200, defaults["lr"])
    factor = lr_factor(loop)
    assert factor(4) == pytest.approx(0.5) and factor(100) == pytest.approx(0.5)
    assert factor(199) == pytest.approx(0.005)
    assert loop_config(defaults).cooldown_steps == defaults.get("cooldown_steps", 0)
    args = ["train", "ldm", "--preset", "small-face", "--steps", "10", "--cooldown-steps", "11"]
    result = runner.invoke(app, [*args, "--data", "x", "--drm", "x", "-o", "y"])
    assert result.exit_code == 2 and "cooldown_steps must lie in [0, steps=10]" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# Bundles


@pytest.fixture(scope="module")
def bundle_dir(ldm_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    result = runner.invoke(app, ["export", "--ldm", str(ldm_run), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "bundle:" in result.output
    return out


def test_bundle_round_trip_restores_like_the_in_memory_model(
    bundle_dir: Path, ldm_run: Path, faces_dir: Path, frozen_runs: tuple[Path, Path]
) -> None:
    files = sorted(p.name for p in bundle_dir.iterdir())
    assert files == [
        "bundle.json", "drm_encoder.safetensors", "ldrm.ema.safetensors", "ldrm.safetensors",
        "vae.safetensors",
    ]  # fmt: skip
    bundle = load_bundle(bundle_dir)
    ldrm, _ = load_ldm(ldm_run)  # EMA weights, as the bundle
    parts = _ldm_task(faces_dir, frozen_runs).parts
    lq = torch.rand(3, 3, 32, 32) * 2 - 1
    sampling = SamplingConfig(steps=4)
    expected = restore_faces(
        ldrm, parts, lq, seeds=[1, 2, 3], schedule=SMALL_LDM.schedule, sampling=sampling
    )
    got = bundle.restore(lq, [1, 2, 3], sampling)
    assert got.shape == lq.shape and torch.allclose(got, expected, atol=1e-5)
    restorer = BundleRestorer(bundle, torch.device("cpu"), None, sampling)
    faces = (lq + 1) / 2
    restored = restorer.restore(faces, [1, 2, 3])
    assert restorer.face_size == 32 and restored.dtype == torch.float32
    assert torch.allclose(restored, ((expected + 1) / 2).clamp(0, 1), atol=1e-5)
    # a face restores the same in any batch
    alone = restorer.restore(faces[1:2], [2])
    assert torch.allclose(alone, restored[1:2], atol=1e-5)


HALF_TOLERANCE = 0.02
"""Largest |difference| (in [-1, 1]) between a half bundle's restorations and its fp32 twin's."""


def test_a_shipping_bundle_is_half_size_and_restores_like_the_fp32_one_on_cpu(
    bundle_dir: Path, ldm_run: Path, tmp_path: Path
) -> None:
    """--half --ema-only: float16 files, the EMA denoiser alone; loaded as float32 on the CPU,
    it restores within HALF_TOLERANCE of the float32 bundle (whose EMA it is)."""
    out = tmp_path / "ship"
    args = ["export", "--ldm", str(ldm_run), "-o", str(out), "--half", "--ema-only"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "bundle.json", "drm_encoder.safetensors", "ldrm.safetensors", "vae.safetensors",
    ]  # fmt: skip
    manifest = json.loads((out / "bundle.json").read_text())
    assert (manifest["dtype"], manifest["denoiser"]) == ("float16", "ema")
    stored = safetensors.torch.load_file(out / "ldrm.safetensors")
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    for part in ("drm_encoder", "ldrm", "vae"):
        fp32_part = "ldrm.ema" if part == "ldrm" else part
        fp32_size = (bundle_dir / f"{fp32_part}.safetensors").stat().st_size
        assert (out / f"{part}.safetensors").stat().st_size < 0.55 * fp32_size, part
    half, full = load_bundle(out), load_bundle(bundle_dir)
    assert {p.dtype for p in half.ldrm.parameters()} == {torch.float32}
    assert {p.dtype for p in half.parts.encoder.parameters()} == {torch.float32}
    lq = torch.rand(3, 3, 32, 32) * 2 - 1
    sampling = SamplingConfig(steps=4, samples=2)
    got, expected = half.restore(lq, [1, 2, 3], sampling), full.restore(lq, [1, 2, 3], sampling)
    assert got.dtype == torch.float32
    assert 0 < float((got - expected).abs().max()) < HALF_TOLERANCE


def test_a_prior_skip_run_learns_its_prior_and_its_bundle_restores_like_memory(
    faces_dir: Path, frozen_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    model = replace(SMALL_LDM, network=replace(SMALL_LDM.network, prior_skip=True))
    drm, vae = frozen_runs
    config = LDMTaskConfig(
        model=model, data=str(faces_dir), preset="test", drm=str(drm), vae=str(vae)
    )
    loop = LoopConfig(steps=6, batch_size=4, lr=2e-3, warmup_steps=1, log_every=3, ema_decay=0.5)
    train(LDMTask(config), loop, tmp_path / "run")
    ldrm, _ = load_ldm(tmp_path / "run")
    initial = 2 * np.log(ldrm_net.PRIOR_STD_INIT)
    assert float(ldrm.prior.log_var) != pytest.approx(initial)  # v is learned
    result = runner.invoke(
        app, ["export", "--ldm", str(tmp_path / "run"), "-o", str(tmp_path / "b")]
    )
    assert result.exit_code == 0, result.output
    lq, sampling = torch.rand(2, 3, 32, 32) * 2 - 1, SamplingConfig(steps=4, start_t=0.5)
    parts = LDMTask(config).parts
    expected = restore_faces(
        ldrm, parts, lq, seeds=[4, 5], schedule=model.schedule, sampling=sampling
    )
    got = load_bundle(tmp_path / "b").restore(lq, [4, 5], sampling)
    assert torch.allclose(got, expected, atol=1e-5)


def test_init_from_starts_a_run_from_a_bundle_or_a_run(
    bundle_dir: Path, ldm_run: Path, faces_dir: Path, frozen_runs: tuple[Path, Path]
) -> None:
    expected = load_bundle(bundle_dir).ldrm.state_dict()  # the EMA weights
    for source in (bundle_dir, ldm_run):
        task = _ldm_task(faces_dir, frozen_runs, init_from=str(source))
        for name, value in task.modules()["ldrm"].state_dict().items():
            assert torch.equal(value, expected[name]), (source, name)
    other = replace(SMALL_LDM, network=replace(SMALL_LDM.network, block_out_channels=(8, 16)))
    drm, vae = frozen_runs
    config = LDMTaskConfig(
        model=other, data=str(faces_dir), preset="x", drm=str(drm), vae=str(vae),
        init_from=str(bundle_dir),
    )  # fmt: skip
    with pytest.raises(DrbfrError, match="does not fit"):
        LDMTask(config)


def test_a_bundle_stands_in_for_the_drm_run(
    bundle_dir: Path, faces_dir: Path, frozen_runs: tuple[Path, Path]
) -> None:
    """`train ldm --drm BUNDLE` freezes the bundle's E_DR: training continues from a shipped
    model whose DRM run is gone."""
    from_run = _ldm_task(faces_dir, frozen_runs)
    _, vae = frozen_runs
    config = LDMTaskConfig(
        model=SMALL_LDM, data=str(faces_dir), preset="test", drm=str(bundle_dir), vae=str(vae)
    )
    from_bundle = LDMTask(config)
    expected = load_bundle(bundle_dir).parts.encoder.state_dict()
    got = from_bundle.parts.encoder.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[name], expected[name]) for name in got)
    assert from_bundle.parts.drm_config == from_run.parts.drm_config
    assert not any(p.requires_grad for p in from_bundle.parts.encoder.parameters())
    with pytest.raises(DrbfrError, match="no trained weights"):
        LDMTask(replace(config, drm=str(faces_dir)))


def test_export_takes_a_bundle_as_the_drm(ldm_run: Path, bundle_dir: Path, tmp_path: Path) -> None:
    """A run trained with `--drm BUNDLE` exports with that bundle's E_DR (its DRM run may be
    gone): `export --drm BUNDLE` stores the bundle's encoder unchanged."""
    out = tmp_path / "again"
    result = runner.invoke(
        app, ["export", "--ldm", str(ldm_run), "--drm", str(bundle_dir), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    expected = load_bundle(bundle_dir).parts.encoder.state_dict()
    got = load_bundle(out).parts.encoder.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[name], expected[name]) for name in got)
    assert json.loads((out / "bundle.json").read_text())["sources"]["drm"] == bundle_dir.name


def test_doctor_restores_one_face_with_a_named_bundle(bundle_dir: Path) -> None:
    finding = doctor.check_restore(str(bundle_dir))
    assert finding.level is doctor.Level.OK and "one 32 px face" in finding.detail
    result = runner.invoke(app, ["doctor", "--model", str(bundle_dir)])
    assert result.exit_code == 0 and "all checks passed" in result.output


def test_restorer_options_override_the_bundle_defaults(bundle_dir: Path) -> None:
    restorer = load_restorer(
        str(bundle_dir), device="cpu", sampling=SamplingOverrides(steps=2, start_t=0.5, tem_t=None)
    )
    assert (restorer.sampling.steps, restorer.sampling.start_t) == (2, 0.5)
    assert restorer.sampling.tem_t == SMALL_LDM.sampling.tem_t
    with pytest.raises(DrbfrError, match="CUDA device"):
        load_restorer(str(bundle_dir), device="cuda") if not torch.cuda.is_available() else (
            pytest.skip("CUDA present: the missing-CUDA message cannot be shown")
        )


def _copy(bundle_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle_dir, target)
    return target


def test_a_missing_part_is_a_one_line_error(bundle_dir: Path, tmp_path: Path) -> None:
    broken = _copy(bundle_dir, tmp_path)
    (broken / "vae.safetensors").unlink()
    with pytest.raises(DrbfrError, match=r"vae\.safetensors is missing"):
        load_bundle(broken)


def test_a_corrupt_part_is_a_one_line_error(bundle_dir: Path, tmp_path: Path) -> None:
    broken = _copy(bundle_dir, tmp_path)
    data = bytearray((broken / "ldrm.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (broken / "ldrm.safetensors").write_bytes(bytes(data))
    with pytest.raises(DrbfrError, match="sha256"):
        load_bundle(broken, ema=False)


def test_mismatched_parts_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    broken = _copy(bundle_dir, tmp_path)
    manifest = json.loads((broken / "bundle.json").read_text())
    manifest["drm"]["model"]["token_dim"] = 32
    (broken / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(DrbfrError, match="parts disagree"):
        load_bundle(broken)


def test_export_refuses_a_drm_the_ldm_was_not_trained_on(
    ldm_run: Path, faces_dir: Path, tmp_path: Path
) -> None:
    other = DRMConfig(**{**SMALL_DRM.__dict__, "token_dim": 8})
    train(
        DRMTask(DRMTaskConfig(model=other, data=str(faces_dir), preset="test")),
        LoopConfig(steps=1, batch_size=4, lr=1e-3),
        tmp_path / "drm2",
    )
    result = runner.invoke(
        app,
        [
            "export",
            "--ldm",
            str(ldm_run),
            "--drm",
            str(tmp_path / "drm2"),
            "-o",
            str(tmp_path / "b"),
        ],
    )
    assert result.exit_code == 2
    assert "parts disagree" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "b").exists()


def test_no_bundle_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DRBFR_HOME", str(tmp_path / "home"))
    with pytest.raises(DrbfrError) as error:
        resolve_bundle("no-such-bundle")
    message = str(error.value)
    assert "\n" not in message and "drbfr-small" in message and "drbfr export" in message
    assert str(shipped_bundles_dir()) in message  # the shipped folder is searched last
    with pytest.raises(DrbfrError, match="no such bundle folder"):
        load_bundle(tmp_path / "nowhere")


def test_the_default_is_a_users_default_then_drbfr_small_from_the_first_folder(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --model: a `default` bundle of the cache folders (as before drbfr-small shipped),
    else `drbfr-small` from --weights-dir, $DRBFR_HOME/bundles, ~/.cache, then models/bundles."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DRBFR_HOME", str(tmp_path / "home"))
    assert resolve_bundle(None) == shipped_bundles_dir() / DEFAULT_NAME
    own = tmp_path / "home" / "bundles" / DEFAULT_NAME
    shutil.copytree(bundle_dir, own)
    assert resolve_bundle(None) == own
    given = tmp_path / "given"
    shutil.copytree(bundle_dir, given / DEFAULT_NAME)
    assert resolve_bundle(None, given) == given / DEFAULT_NAME
    legacy = tmp_path / ".cache" / "drbfr" / "bundles" / "default"
    shutil.copytree(bundle_dir, legacy)
    assert resolve_bundle(None, given) == legacy
    assert resolve_bundle(DEFAULT_NAME, given) == given / DEFAULT_NAME


def test_restore_real_photos_with_a_bundle(
    bundle_dir: Path, real_lq_whole_dir: Path, shared_weights_dir: Path, tmp_path: Path
) -> None:
    """The whole job with a real (small, briefly trained) bundle: detect, align, DR + VAE +
    sampling, paste onto the upscaled background, report."""
    out = tmp_path / "out"
    args = ["restore", str(real_lq_whole_dir), "-o", str(out), "--model", str(bundle_dir),
            "--detector", "yunet", "--weights-dir", str(shared_weights_dir),
            "--bg-upsampler", "lanczos", "--steps", "2", "--batch-size", "8",
            "--guidance", "2", "--samples", "2", "--low-freq", "6", "--quiet"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    images = report["images"]
    assert sum(len(image["faces"]) for image in images) == 13  # YuNet counts, data README
    for image in images:
        assert image["status"] == "ok"
    assert len(list((out / "restored_imgs").iterdir())) == 5
    assert report["settings"]["sampling"]["guidance_scale"] == 2.0
    assert report["settings"]["sampling"]["samples"] == 2
    assert report["settings"]["sampling"]["low_freq_sigma"] == 6.0
    assert report["settings"]["precision"] == "fp32"  # what `auto` runs on a CPU


def test_eval_restores_with_a_bundle_and_scores_it(bundle_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for name in ("a.png", "b.png"):
        hq = np.kron(rng.random((4, 4, 3)), np.ones((128, 128, 1))).astype(np.float32)  # 512 px
        write_image(tmp_path / "gt" / name, hq)
        write_image(
            tmp_path / "lq" / name, np.clip(hq + 0.05 * rng.standard_normal(hq.shape), 0, 1)
        )
    out = tmp_path / "report"
    args = ["eval", "--model", str(bundle_dir), "--lq", str(tmp_path / "lq"), "--gt",
            str(tmp_path / "gt"), "--metrics", "psnr,ssim", "--out", str(out),
            "--steps", "2", "--low-freq", "4", "--fidelity", "1"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "restored" / "restored_imgs").iterdir()) == [
        "a.png",
        "b.png",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"]["restored"].endswith("restored_imgs")
    settings = json.loads((out / "restored" / "report.json").read_text())["settings"]
    assert settings["model"] == str(bundle_dir) and settings["sampling"]["steps"] == 2
    assert settings["sampling"]["low_freq_sigma"] == 4.0  # given explicitly: beats --fidelity
    assert settings["sampling"]["start_t"] == FIDELITY_START_T[1]
    assert settings["precision"] == "fp32" and settings["aligned"] is True
    assert summary["images"] == 2


def test_analyze_ldm_scores_lq_vae_and_each_start(
    bundle_dir: Path, faces_dir: Path, tmp_path
) -> None:
    out = tmp_path / "analysis"
    args = ["analyze", "ldm", "--model", str(bundle_dir), "--data", str(faces_dir), "-o", str(out),
            "--per-face", "1", "--start-t", "1", "--start-t", "0.5", "--steps", "2",
            "--samples", "2"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["pairs"] == 8 and summary["faces"] == 8
    assert set(summary["scores"]) == {"lq", "vae_round_trip", "start_t=1", "start_t=0.5"}
    assert summary["variants"]["start_t=0.5"]["start_t"] == 0.5
    assert summary["variants"]["start_t=0.5"]["samples"] == 2
    for scores in summary["scores"].values():
        assert 5 < scores["psnr"] < 60 and 0 < scores["ssim"] <= 1
    noise = [p["delta"] for p in summary["params"]]
    assert all(5 <= d <= 15 for d in noise)  # the default moderate ranges
    assert (out / "report.md").is_file() and (out / "restorations.png").is_file()


def test_bf16_autocast_on_cpu_restores_close_to_fp32(bundle_dir: Path) -> None:
    """The precision path that runs without a GPU: bf16 autocast (fp16 needs CUDA)."""
    fp32 = load_restorer(
        str(bundle_dir), device="cpu", precision=Precision.FP32, sampling=SamplingOverrides(steps=2)
    )
    bf16 = load_restorer(
        str(bundle_dir), device="cpu", precision=Precision.BF16, sampling=SamplingOverrides(steps=2)
    )
    assert (fp32.dtype, bf16.dtype) == (None, torch.bfloat16)
    faces = torch.rand(2, 3, 32, 32)
    a, b = fp32.restore(faces, [0, 1]), bf16.restore(faces, [0, 1])
    assert b.dtype == torch.float32 and (a - b).abs().mean() < 0.05
    with pytest.raises(DrbfrError, match="fp16 needs a GPU"):
        load_restorer(str(bundle_dir), device="cpu", precision=Precision.FP16)
