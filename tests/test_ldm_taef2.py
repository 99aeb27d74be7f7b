"""The LDRM on the pretrained TAEF2 first stage: training on latent crops encoded where the
items are made, export by registry name, and a bundle that resolves TAEF2 like any weight."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from drbfr_cli.bundle import load_bundle
from drbfr_cli.diffusion.pipeline import restore_faces
from drbfr_cli.diffusion.sampling import SamplingConfig, SamplingOverrides, run_timesteps
from drbfr_cli.diffusion.schedule import make_scheduler
from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import write_image
from drbfr_cli.nets.drm import DRMConfig
from drbfr_cli.nets.fidelity import fidelity_output
from drbfr_cli.nets.ldrm import LDRMConfig
from drbfr_cli.presets import LDMConfig, PatchConfig, ldm_config_from_preset
from drbfr_cli.restore.restorer import load_restorer
from drbfr_cli.train.drm import DRMTask, DRMTaskConfig
from drbfr_cli.train.export import export_bundle
from drbfr_cli.train.fidelity import load_frozen_fidelity
from drbfr_cli.train.ldm import (
    LatentPairs,
    LDMTask,
    LDMTaskConfig,
    ReplayPairs,
    load_ldm,
    training_t_end,
)
from drbfr_cli.train.loop import LoopConfig, train
from tests.conftest import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "models" / "bundles" / "drbfr-small"

SMALL_DRM = DRMConfig(
    face_size=64, crop_size=32, patch_size=16, encoder_channels=(8, 16), tokens=2, token_dim=16,
    generator_channels=(8, 16), projection_dim=16,
)  # fmt: skip
TAEF2_LDM = LDMConfig(
    first_stage="taef2",
    data=PatchConfig(patch_size=64, face_sides=(64, 96)),
    network=LDRMConfig(
        block_out_channels=(16, 32), attention_levels=(False, True), head_dim=8, norm_num_groups=8,
        time_embedding_dim=32, prior_skip=True,
    ),
    sampling=SamplingConfig(steps=4, start_t=0.5),
    train_t_max=0.5,
)  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread_per_worker():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_weights_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("taef2")
    rng = np.random.default_rng(1)
    for i in range(6):
        low = rng.random((6, 6, 3)).astype(np.float32)
        write_image(root / "faces" / f"f{i}.png", np.kron(low, np.ones((16, 16, 1), np.float32)))
    faces = root / "faces"
    loop = {"batch_size": 2, "lr": 1e-3, "log_every": 1, "checkpoint_every": 100}
    train(DRMTask(DRMTaskConfig(model=SMALL_DRM, data=str(faces), preset="t")),
          LoopConfig(steps=2, **loop), root / "drm")  # fmt: skip
    config = LDMTaskConfig(
        model=TAEF2_LDM, data=str(faces), preset="t", drm=str(root / "drm"),
        weights_dir=str(shared_weights_dir),
    )  # fmt: skip
    train(LDMTask(config), LoopConfig(steps=3, ema_decay=0.5, **loop), root / "ldm")
    return {"faces": faces, "ldm": root / "ldm", "root": root}


def test_items_carry_the_latents_of_their_patches(runs: dict[str, Path], shared_weights_dir):
    config = LDMTaskConfig(
        model=TAEF2_LDM, data=str(runs["faces"]), preset="t", drm=str(runs["root"] / "drm"),
        weights_dir=str(shared_weights_dir),
    )  # fmt: skip
    task = LDMTask(config)
    dataset = task.dataset()
    assert isinstance(dataset, LatentPairs)
    item = dataset[3]
    assert item["z0"].shape == (32, 8, 8) and item["f_lq"].shape == (32, 8, 8)
    encode = task.parts.first_stage.encode
    torch.testing.assert_close(item["z0"], encode(item["hq"][None])[0])
    torch.testing.assert_close(item["f_lq"], encode(item["lq"][None])[0])


def test_with_f_the_ldrm_learns_on_f_of_each_patch(runs: dict[str, Path], shared_weights_dir):
    """`train ldm --fidelity BUNDLE`: each item's lq, and so f_LQ and E_DR's input, is the
    flip-averaged F of the plain item's lq (what restore feeds the LDRM with that F)."""
    base = LDMTaskConfig(
        model=TAEF2_LDM, data=str(runs["faces"]), preset="t", drm=str(runs["root"] / "drm"),
        weights_dir=str(shared_weights_dir),
    )  # fmt: skip
    plain, cleaned = LDMTask(base), LDMTask(replace(base, fidelity=str(SHIPPED)))
    assert cleaned.config()["fidelity"] == str(SHIPPED) and plain.config()["fidelity"] is None
    network = load_frozen_fidelity(SHIPPED)
    assert not any(p.requires_grad for p in network.parameters())
    raw, item = plain.dataset()[3], cleaned.dataset()[3]
    torch.testing.assert_close(item["hq"], raw["hq"])
    with torch.no_grad():
        expected = fidelity_output(network, raw["lq"][None], flip=True)[0]
    torch.testing.assert_close(item["lq"], expected)
    assert float((item["lq"] - raw["lq"]).abs().mean()) > 1e-3
    encode = cleaned.parts.first_stage.encode
    torch.testing.assert_close(item["f_lq"], encode(item["lq"][None])[0])
    with pytest.raises(DrbfrError, match="carries no fidelity network"):
        load_frozen_fidelity(export_bundle(runs["ldm"], runs["root"] / "no_f_bundle"))


def test_a_taef2_bundle_names_its_first_stage_and_restores_like_memory(
    runs: dict[str, Path], shared_weights_dir: Path, tmp_path: Path
) -> None:
    out = export_bundle(runs["ldm"], tmp_path / "bundle")
    files = sorted(p.name for p in out.iterdir())
    assert "vae.safetensors" not in files and "bundle.json" in files
    manifest = json.loads((out / "bundle.json").read_text())
    record = manifest["first_stage"]
    assert record["kind"] == "taef2" and record["encoder"]["name"] == "taef2-encoder"
    assert len(record["latent"]["mean"]) == 32 and manifest["face_size"] == 512
    bundle = load_bundle(out, weights_dir=shared_weights_dir)
    ldrm, _ = load_ldm(runs["ldm"])
    lq = torch.rand(1, 3, 512, 512) * 2 - 1
    sampling = SamplingConfig(steps=2, start_t=0.5)
    expected = restore_faces(
        ldrm, bundle.parts, lq, seeds=[3], schedule=TAEF2_LDM.schedule, sampling=sampling
    )
    got = bundle.restore(lq, [3], sampling)
    assert got.shape == lq.shape and torch.allclose(got, expected, atol=1e-5)


def test_a_taef2_bundle_without_its_weights_offline_is_one_line(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = export_bundle(runs["ldm"], tmp_path / "bundle")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DRBFR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRBFR_OFFLINE", "1")
    with pytest.raises(DrbfrError, match="taef2-encoder") as caught:
        load_bundle(out)
    assert "\n" not in str(caught.value)


def test_the_small_preset_is_taef2_at_512_px() -> None:
    small = ldm_config_from_preset("small")[0]
    assert small.first_stage == "taef2" and small.data.patch_size % 8 == 0
    assert small.train_t_max == small.sampling.start_t == 0.5


def test_training_draws_only_the_timesteps_that_truncated_sampling_uses(
    runs: dict[str, Path], shared_weights_dir: Path
) -> None:
    config = LDMTaskConfig(
        model=TAEF2_LDM, data=str(runs["faces"]), preset="t", drm=str(runs["root"] / "drm"),
        weights_dir=str(shared_weights_dir),
    )  # fmt: skip
    task = LDMTask(config)
    drawn: list[torch.Tensor] = []

    def denoiser(z_t, t, f_lq, f_dr, keep, abar):
        drawn.append(t)
        return torch.zeros_like(z_t, requires_grad=True)

    n = 512
    batch = {
        "hq": torch.zeros(n, 3, 64, 64), "lq": torch.zeros(n, 3, 64, 64),
        "z0": torch.zeros(n, 32, 8, 8), "f_lq": torch.zeros(n, 32, 8, 8),
    }  # fmt: skip
    torch.manual_seed(0)
    task.compute_loss({"ldrm": denoiser}, batch, step=0)
    t = drawn[0]
    assert int(t.min()) >= 0 and int(t.max()) == training_t_end(1000, 0.5) - 1 == 500
    scheduler = make_scheduler(TAEF2_LDM.schedule, TAEF2_LDM.sampling.sampler)
    used = run_timesteps(scheduler, 10, TAEF2_LDM.sampling.start_t)
    assert int(used.max()) <= 500


def test_a_bundle_refuses_sampling_beyond_its_trained_noise_levels(
    runs: dict[str, Path], shared_weights_dir: Path, tmp_path: Path
) -> None:
    out = export_bundle(runs["ldm"], tmp_path / "bundle")
    assert json.loads((out / "bundle.json").read_text())["train_t_max"] == 0.5
    load_restorer(
        str(out),
        device="cpu",
        sampling=SamplingOverrides(start_t=0.5),
        weights_dir=shared_weights_dir,
    )
    with pytest.raises(DrbfrError, match=r"trained for start_t <= 0\.5") as caught:
        load_restorer(
            str(out),
            device="cpu",
            sampling=SamplingOverrides(start_t=0.8),
            weights_dir=shared_weights_dir,
        )
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="beyond the trained"):
        LDMConfig(sampling=SamplingConfig(start_t=0.8), train_t_max=0.5)


class _CountingPairs(torch.utils.data.Dataset):
    """Each item made holds its serial number (a new encoding each call); counts them."""

    def __init__(self) -> None:
        self.made = 0

    def __len__(self) -> int:
        return 10_000

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        self.made += 1
        return {"z0": torch.full((2,), float(self.made)), "index": torch.tensor(index)}


def _take(dataset: ReplayPairs, count: int) -> list[float]:
    stream = iter(dataset)
    return [float(next(stream)["z0"][0]) for _ in range(count)]


def test_replay_pairs_serve_each_encoded_pair_about_reuse_times() -> None:
    pairs = _CountingPairs()
    replay = ReplayPairs(pairs, reuse=8, pool_size=64)
    items = _take(replay, 2000)
    warm = ReplayPairs.WARM
    assert items[:warm] == [float(i) for i in range(1, warm + 1)]  # warm-up: all fresh
    made_after_warm = pairs.made - warm
    assert made_after_warm == pytest.approx((2000 - warm) / 8, abs=2)
    assert len(set(items)) == pairs.made  # every fresh pair is handed out


def test_replay_pairs_draw_only_from_the_pool_of_recent_pairs() -> None:
    replay = ReplayPairs(_CountingPairs(), reuse=4, pool_size=8)
    stream = iter(replay)
    seen_fresh: list[float] = []
    for _ in range(400):
        item = float(next(stream)["z0"][0])
        if item not in seen_fresh:
            seen_fresh.append(item)
        else:  # a reused item is among the last pool_size + a few fresh ones
            assert item in seen_fresh[-40:]
    assert len(seen_fresh) > 400 / 4 - 10


def test_replay_pairs_are_reproducible_from_the_torch_seed() -> None:
    def run(seed: int) -> list[float]:
        torch.manual_seed(seed)
        return _take(ReplayPairs(_CountingPairs(), reuse=3, pool_size=16), 200)

    assert run(5) == run(5)
    assert run(5) != run(6)
    with pytest.raises(ValueError, match="at least 1"):
        ReplayPairs(_CountingPairs(), reuse=0, pool_size=4)


def test_the_small_face_preset_reuses_pairs_and_trains_every_noise_level(
    runs: dict[str, Path], shared_weights_dir: Path
) -> None:
    model, _ = ldm_config_from_preset("small-face")
    assert model.train_t_max == 1.0 and model.pair_reuse > 1 and model.sampling.samples == 1
    small, _ = ldm_config_from_preset("small")
    assert model.network == small.network  # --init-from drbfr-small fits
    config = LDMTaskConfig(
        model=replace(TAEF2_LDM, pair_reuse=4, pair_pool=8), data=str(runs["faces"]),
        preset="t", drm=str(runs["root"] / "drm"), weights_dir=str(shared_weights_dir),
    )  # fmt: skip
    dataset = LDMTask(config).dataset()
    assert isinstance(dataset, ReplayPairs) and dataset.reuse == 4
    item = next(iter(dataset))
    encode = LDMTask(config).parts.first_stage.encode
    torch.testing.assert_close(item["z0"], encode(item["hq"][None])[0])


def test_export_takes_f_from_the_bundle_the_ldrm_trained_behind(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """`export --ldm RUN --fidelity BUNDLE`: the new bundle carries BUNDLE's F unchanged."""
    bundle = export_bundle(runs["ldm"], tmp_path / "with_f", fidelity_run=SHIPPED)
    manifest = json.loads((bundle / "bundle.json").read_text())
    shipped = json.loads((SHIPPED / "bundle.json").read_text())
    assert manifest["fidelity"] == shipped["fidelity"]
    assert manifest["sources"]["fidelity"] == SHIPPED.name
    ours, theirs = load_frozen_fidelity(bundle), load_frozen_fidelity(SHIPPED)
    for (name, a), (_, b) in zip(
        ours.state_dict().items(), theirs.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    no_f = export_bundle(runs["ldm"], tmp_path / "no_f")
    with pytest.raises(DrbfrError, match="carries no fidelity network"):
        export_bundle(runs["ldm"], tmp_path / "again", fidelity_run=no_f)
