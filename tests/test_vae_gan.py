"""The VQ first stage as VQGAN trains it: adaptive adversarial weight, the discriminator's own
optimizer settings and clipping, required LPIPS, and resumes that never drop a loss term."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drbfr_cli.errors import DrbfrError
from drbfr_cli.nets.autoencoder import VQConfig
from drbfr_cli.presets import PatchConfig, VAEConfig, VAELossConfig
from drbfr_cli.train import loop as loop_module
from drbfr_cli.train import vae as vae_module
from drbfr_cli.train.batches import fixed_batch
from drbfr_cli.train.loop import LoopConfig, ParamGroup, train
from drbfr_cli.train.losses import adaptive_adversarial_weight, generator_adversarial_loss
from drbfr_cli.train.vae import VAETask, VAETaskConfig

LOSS = VAELossConfig(
    quantize_after=100, disc_weight=0.5, disc_start=1, disc_channels=8, disc_layers=2
)
GAN = VAEConfig(
    image_size=16,
    network=VQConfig(block_out_channels=(8, 16), norm_num_groups=4, num_codes=32),
    data=PatchConfig(patch_size=16, face_sides=(16, 24)),
    loss=LOSS,
    scale_samples=8,
)
PLAIN = replace(GAN, loss=replace(LOSS, disc_weight=0.0))
LOOP = {"batch_size": 4, "lr": 1e-3, "log_every": 1, "checkpoint_every": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _faces() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(4)]


def _task(model: VAEConfig = GAN, **settings: object) -> VAETask:
    config = VAETaskConfig(model=model, data="synthetic", preset="test", **settings)
    return VAETask(config, faces=_faces())


def test_adaptive_weight_is_the_ratio_of_last_layer_gradient_norms() -> None:
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    a, b = torch.tensor([[3.0, 0.0], [0.0, 4.0]]), torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    rec, adv = (w * a).sum(), (w * b).sum() ** 2  # d rec/dw = a; d adv/dw = 2 (w.b) b
    expected = 5.0 / (2 * abs(float((w * b).sum().detach())) * 3.0 + 1e-4)
    weight = adaptive_adversarial_weight(rec, adv, w)
    assert not weight.requires_grad
    assert float(weight) == pytest.approx(expected, rel=1e-6)
    flat = adaptive_adversarial_weight((w * a).sum(), (w * 0).sum(), w)  # no adversarial gradient
    assert float(flat) == 1e4  # 5 / 1e-4, clamped


def test_the_vae_step_uses_the_adaptive_weight_after_disc_start() -> None:
    task = _task()
    modules = task.modules()
    batch = fixed_batch(task.dataset(), 4, 0)
    before = task.compute_loss(modules, batch, 1)  # step 1 = disc_start: no adversarial term yet
    assert "adversarial" not in before.terms and "disc" not in before.terms
    terms = task.compute_loss(modules, batch, 2).terms
    # the same quantities recomputed by hand (no quantization before step 100: deterministic)
    image = modules["vae"](batch["image"], quantize=False).image
    rec = F.l1_loss(image, batch["image"]) + F.mse_loss(image, batch["image"])
    logits = modules["discriminator"](batch["image"], image)
    adv = generator_adversarial_loss(logits.fake_for_generator)
    layer = modules["vae"].last_layer
    (g_rec,) = torch.autograd.grad(rec, layer, retain_graph=True)
    (g_adv,) = torch.autograd.grad(adv, layer)
    expected = 0.5 * min(float(g_rec.norm() / (g_adv.norm() + 1e-4)), 1e4)
    assert terms["adversarial_weight"] == pytest.approx(expected, rel=1e-4)
    assert terms["adversarial"] == pytest.approx(float(adv.detach()), rel=1e-5)


def test_discriminator_has_its_own_betas_and_clipping(tmp_path: Path) -> None:
    task = _task()
    groups = task.param_groups()
    assert [(g.name, g.modules, g.betas) for g in groups] == [
        ("autoencoder", ("vae",), (0.9, 0.999)),
        ("discriminator", ("discriminator",), (0.5, 0.9)),
    ]
    train(task, LoopConfig(steps=2, **LOOP), tmp_path / "run")
    log = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert "grad_norm_discriminator" in log[-1] and log[-1]["grad_norm_discriminator"] > 0
    state = torch.load(
        tmp_path / "run" / "checkpoints" / "step_0000002" / "state.pt", weights_only=True
    )
    betas = [tuple(g["betas"]) for g in state["optimizer"]["param_groups"]]
    assert betas == [(0.9, 0.999), (0.5, 0.9)]


def test_each_group_is_clipped_to_its_own_limit() -> None:
    first, second = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    first.grad, second.grad = torch.tensor([6.0, 8.0]), torch.tensor([0.0, 4.0])
    session = SimpleNamespace(
        accelerator=SimpleNamespace(unscale_gradients=lambda: None),
        loop=SimpleNamespace(grad_clip=1.0),
        groups=[
            (ParamGroup("g", ("a",)), [first]),
            (ParamGroup("d", ("b",), grad_clip=5.0), [second]),
        ],
    )
    norms = loop_module._clip_groups(session)
    assert norms == {"grad_norm": pytest.approx(10.0), "grad_norm_d": pytest.approx(4.0)}
    assert float(first.grad.norm()) == pytest.approx(1.0, rel=1e-4)
    assert second.grad.tolist() == [0.0, 4.0]  # under its own limit: untouched


def test_missing_vgg16_is_a_one_line_error_and_no_perceptual_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DRBFR_HOME", str(tmp_path))
    model = replace(PLAIN, loss=replace(PLAIN.loss, perceptual_weight=1.0))
    with pytest.raises(DrbfrError) as error:
        _task(model, weights_dir=str(tmp_path))
    message = str(error.value)
    assert "vgg16" in message and "--no-perceptual" in message and "\n" not in message
    task = _task(model, weights_dir=str(tmp_path), perceptual=False)
    assert task.lpips is None and task.config()["perceptual"] is False


def _fake_lpips(monkeypatch: pytest.MonkeyPatch) -> None:
    class Distance(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a - b).abs().mean(dim=(1, 2, 3))

    monkeypatch.setattr(vae_module, "load_lpips", lambda *args, **kwargs: Distance())


def test_resume_refuses_to_drop_or_add_a_loss_term(tmp_path: Path, monkeypatch) -> None:
    _fake_lpips(monkeypatch)
    lpips = replace(GAN, loss=replace(LOSS, perceptual_weight=1.0))
    run = tmp_path / "gan"
    train(_task(lpips), LoopConfig(steps=2, **LOOP), run)
    cases = [(_task(lpips, perceptual=False), "perceptual: True -> False")]
    cases.append((_task(replace(lpips, loss=replace(lpips.loss, disc_weight=0.0))), "disc_weight"))
    for task, reason in cases:
        with pytest.raises(DrbfrError) as error:
            train(task, LoopConfig(steps=4, **LOOP), run, resume=True)
        assert reason in str(error.value) and "\n" not in str(error.value)
    train(_task(lpips), LoopConfig(steps=3, **LOOP), run, resume=True)  # same settings resume


def test_resume_of_a_checkpoint_without_the_discriminator_fails(tmp_path: Path) -> None:
    run = tmp_path / "plain"
    train(_task(PLAIN), LoopConfig(steps=2, **LOOP), run)
    config_file = run / "checkpoints" / "step_0000002" / "config.json"
    config = json.loads(config_file.read_text())  # its settings now claim a discriminator
    config["task_config"]["model"]["loss"]["disc_weight"] = GAN.loss.disc_weight
    config_file.write_text(json.dumps(config))
    with pytest.raises(DrbfrError) as error:
        train(_task(GAN), LoopConfig(steps=4, **LOOP), run, resume=True)
    message = str(error.value)
    assert "['vae']" in message and "['discriminator', 'vae']" in message and "\n" not in message
