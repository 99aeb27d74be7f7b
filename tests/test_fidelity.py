"""The fidelity network F (nets/fidelity.py): its start as the identity, `drbfr train fidelity`
on real faces through the CLI, and a bundle that carries F as its low-frequency reference."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from drbfr_cli.benchmark.random_bundle import random_bundle
from drbfr_cli.bundle import load_bundle, read_manifest, read_part
from drbfr_cli.cli.main import app
from drbfr_cli.degradations import DegradationRanges
from drbfr_cli.diffusion.pipeline import transfer_low_frequencies
from drbfr_cli.diffusion.sampling import SamplingConfig
from drbfr_cli.errors import DrbfrError
from drbfr_cli.nets.fidelity import FidelityConfig, FidelityNet, fidelity_output
from drbfr_cli.presets import fidelity_config_from_preset
from drbfr_cli.train.batches import fixed_batch
from drbfr_cli.train.checkpoint import FINAL, CheckpointContent, write_folder
from drbfr_cli.train.export import fidelity_part, source_name
from drbfr_cli.train.fidelity import FidelityTask, FidelityTaskConfig, load_fidelity
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()
SHIPPED = PROJECT_ROOT / "models" / "bundles" / "drbfr-small"


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_f_starts_as_the_identity_and_learns_away_from_it() -> None:
    torch.manual_seed(0)
    net = FidelityNet(FidelityConfig(channels=(8, 16, 24), blocks=(1, 1, 2)))
    y = torch.rand(2, 3, 64, 48) * 2 - 1
    assert torch.equal(net(y), y)
    loss = (net(y) - torch.zeros_like(y)).abs().mean()
    loss.backward()
    assert float(net.head.weight.grad.abs().sum()) > 0  # the zero head still gets a gradient


def test_the_flip_ensemble_is_the_mean_of_f_and_its_mirror() -> None:
    torch.manual_seed(0)
    net = FidelityNet(FidelityConfig(channels=(8, 16), blocks=(1, 1)))
    for p in net.parameters():  # away from the identity, which any flip leaves unchanged
        torch.nn.init.normal_(p, std=0.2)
    y = torch.rand(2, 3, 32, 24) * 2 - 1
    with torch.no_grad():
        plain, ensembled = fidelity_output(net, y), fidelity_output(net, y, flip=True)
        mirrored = fidelity_output(net, y.flip(-1), flip=True)
        expected = ((net(y) + net(y.flip(-1)).flip(-1)) / 2).clamp(-1, 1)
    torch.testing.assert_close(plain, net(y).clamp(-1, 1))
    torch.testing.assert_close(ensembled, expected)
    torch.testing.assert_close(mirrored, ensembled.flip(-1))  # flip-equivariant, unlike F
    assert not torch.allclose(fidelity_output(net, y.flip(-1)), plain.flip(-1), atol=1e-3)


def test_f_refuses_sides_that_its_levels_cannot_halve() -> None:
    net = FidelityNet(FidelityConfig(channels=(8, 16), blocks=(1, 1)))
    assert net.config.multiple == 4
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.zeros(1, 3, 64, 66))


def test_the_small_preset_restores_512_px_faces() -> None:
    model, train = fidelity_config_from_preset("small")
    assert 512 % model.network.multiple == 0 and model.data.patch_size % 8 == 0
    assert train["ema_decay"] and train["batch_size"] >= 8
    assert 0 < model.mild_fraction < 1 and 0 < train["cooldown_steps"] < train["steps"]
    mild, wide = model.mild_degradations, model.degradations
    assert mild.blur[1] < wide.blur[1] and mild.scale[1] < wide.scale[1]


def test_the_mild_fraction_of_pairs_comes_from_the_mild_ranges(hq_dir: Path) -> None:
    faces = str(hq_dir)
    model, _ = fidelity_config_from_preset("tiny")
    clean = DegradationRanges(blur=(0.0, 0.0), scale=(1.0, 1.0), noise=(0.0, 0.0), jpeg=(100, 100))
    harsh = DegradationRanges(blur=(2.0, 3.0), scale=(3.0, 4.0), noise=(10.0, 20.0), jpeg=(60, 70))
    errors = {}
    for fraction in (0.0, 1.0):
        mixed = replace(model, degradations=harsh, mild_degradations=clean, mild_fraction=fraction)
        task = FidelityTask(FidelityTaskConfig(model=mixed, data=faces, preset="tiny", seed=3))
        batch = fixed_batch(task.dataset(), 8, seed=3)
        errors[fraction] = float((batch["lq"] - batch["hq"]).abs().mean())
    assert errors[1.0] < 0.01 < 0.04 < errors[0.0]  # JPEG at 100 alone vs the harsh ranges


@pytest.fixture(scope="module")
def trained_run(hq_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fidelity")
    for face in sorted(hq_dir.glob("*.png"))[:8]:
        (root / "faces").mkdir(exist_ok=True)
        shutil.copy(face, root / "faces" / face.name)
    run = root / "run"
    args = ["train", "fidelity", "--preset", "tiny", "--data", str(root / "faces"), "-o", str(run)]
    quick = ["--steps", "80", "--log-every", "10", "--checkpoint-every", "40"]
    result = runner.invoke(app, [*args, *quick, "--sample-every", "80", "--workers", "0"])
    assert result.exit_code == 0, result.output
    return run


def test_training_raises_the_gain_over_the_input(trained_run: Path) -> None:
    log = _log(trained_run)
    assert [entry["step"] for entry in log] == list(range(10, 90, 10))
    first = np.mean([entry["psnr_gain"] for entry in log[:2]])  # dB above the LQ input
    last = np.mean([entry["psnr_gain"] for entry in log[-2:]])
    assert last > first + 0.15 and last > 0.3
    assert (trained_run / "samples").is_dir() and any((trained_run / "samples").iterdir())
    network, saved = load_fidelity(trained_run)
    assert saved["stage"] == "fidelity" and network.config.channels == (8, 16)
    faces = trained_run.parent / "faces"
    model, _ = fidelity_config_from_preset("tiny")  # pairs of another seed than training's
    task = FidelityTask(FidelityTaskConfig(model=model, data=str(faces), preset="tiny", seed=9))
    batch = fixed_batch(task.dataset(), 32, seed=9)
    with torch.no_grad():
        restored = network(batch["lq"])
    assert (restored - batch["hq"]).abs().mean() < 0.97 * (batch["lq"] - batch["hq"]).abs().mean()


def test_a_run_of_another_stage_is_refused_in_one_line(tmp_path: Path) -> None:
    other = tmp_path / "vae-run"
    content = CheckpointContent(
        weights={"vae": {"w": torch.zeros(1)}}, ema={}, config={"task_config": {"stage": "vae"}}
    )
    write_folder(other / FINAL, content)
    out = tmp_path / "x"
    result = runner.invoke(
        app, ["export", "--from-bundle", str(SHIPPED), "--fidelity", str(other), "-o", str(out)]
    )
    assert result.exit_code != 0 and "not a fidelity run (stage 'vae')" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_bundle_names_its_sources_by_run_not_by_path() -> None:
    assert source_name("/tmp/h/run_small2") == "run_small2"
    assert source_name("/work/runs/fid/step_0005200") == "fid/step_0005200"
    assert source_name("/w/fid/checkpoints/step_0000040") == "fid/checkpoints/step_0000040"
    assert source_name(Path("/w/fid/final")) == "fid/final"
    assert source_name("") == ""  # no VQ first stage
    assert all(not name.startswith("/") for name in read_manifest(SHIPPED)["sources"].values())


def test_export_needs_exactly_one_source(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "-o", str(tmp_path / "b")])
    assert result.exit_code != 0 and "exactly one of --ldm" in result.output
    result = runner.invoke(
        app, ["export", "--from-bundle", str(SHIPPED), "-o", str(tmp_path / "b")]
    )
    assert result.exit_code != 0 and "needs --fidelity" in result.output
    assert not (tmp_path / "b").exists()


def test_repack_adds_f_to_the_shipped_bundle(
    trained_run: Path, shared_weights_dir: Path, tmp_path: Path
) -> None:
    """repack: the shipped parts byte for byte with F replaced, stored in fp16 as the bundle's
    other parts; the loaded bundle holds the run's EMA weights."""
    out = tmp_path / "bundle"
    args = ["export", "--from-bundle", str(SHIPPED), "--fidelity", str(trained_run), "-o", str(out)]
    result = runner.invoke(
        app, [*args, "--weights-dir", str(shared_weights_dir), "--low-freq", "1.5"]
    )
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # the console wraps long lines
    assert "fidelity network on" in printed and "low-freq sigma 1.5" in printed
    before, after = read_manifest(SHIPPED), read_manifest(out)
    for file, sha in before["files"].items():
        if file == "fidelity.safetensors":  # the shipped F, replaced
            continue
        assert (
            after["files"][file] == sha
            and (out / file).read_bytes() == (SHIPPED / file).read_bytes()
        )
    assert after["fidelity"]["network"]["channels"] == [8, 16]
    assert after["fidelity"]["weights"] == "ema"
    expected = {**before["sampling"], "low_freq_sigma": 1.5, "use_fidelity": True}
    assert after["sampling"] == {"fidelity_flip": True, **expected}
    assert after["sources"]["fidelity"] == trained_run.name  # a name, not this machine's path

    bundle = load_bundle(out, weights_dir=shared_weights_dir)
    f, _ = load_fidelity(trained_run)
    for key, value in f.state_dict().items():  # fp16 storage of the EMA weights
        torch.testing.assert_close(bundle.fidelity.state_dict()[key], value.half().float())


def test_init_from_starts_from_a_bundle_or_a_run(trained_run: Path, tmp_path: Path) -> None:
    model, _ = fidelity_config_from_preset("tiny")
    faces = str(trained_run.parent / "faces")
    ema, _ = load_fidelity(trained_run)
    task = FidelityTask(
        FidelityTaskConfig(model=model, data=faces, preset="tiny", init_from=str(trained_run))
    )
    for key, value in ema.state_dict().items():
        torch.testing.assert_close(task.modules()["fidelity"].state_dict()[key], value)
    small, _ = fidelity_config_from_preset("small")
    with pytest.raises(DrbfrError, match="do not fit"):  # the tiny F into the small preset
        FidelityTask(
            FidelityTaskConfig(model=small, data=faces, preset="small", init_from=str(trained_run))
        )
    shipped = FidelityTask(
        FidelityTaskConfig(model=small, data=faces, preset="small", init_from=str(SHIPPED))
    )  # the shipped bundle's F starts a small run
    weights = shipped.modules()["fidelity"].state_dict()
    stored = read_part(SHIPPED, read_manifest(SHIPPED), "fidelity")
    torch.testing.assert_close(weights["head.weight"], stored["head.weight"])
    with pytest.raises(DrbfrError, match="carries no fidelity network"):
        bundle = tmp_path / "b"
        bundle.mkdir()
        manifest = {k: v for k, v in read_manifest(SHIPPED).items() if k != "fidelity"}
        (bundle / "bundle.json").write_text(json.dumps(manifest))
        FidelityTask(
            FidelityTaskConfig(model=model, data=faces, preset="tiny", init_from=str(bundle))
        )


def test_export_takes_the_trained_weights_when_asked(trained_run: Path) -> None:
    ema_entry, ema_state = fidelity_part(trained_run, 512)
    entry, state = fidelity_part(trained_run, 512, ema=False)
    assert (ema_entry["weights"], entry["weights"]) == ("ema", "trained")
    trained, _ = load_fidelity(trained_run, ema=False)
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(state[key], value)
    assert any(not torch.equal(ema_state[k], state[k]) for k in state)
    with pytest.raises(DrbfrError, match="multiples of 4"):
        fidelity_part(trained_run, 510)


def test_restore_with_f_restores_f_of_the_input(trained_run: Path) -> None:
    """Bundle.restore with F is the F-less bundle's restoration of F(lq): conditions and the
    low-frequency reference both come from F's output; the result differs from restoring lq."""
    plain_bundle = random_bundle("tiny", seed=3)
    f, _ = load_fidelity(trained_run)
    with_f = replace(plain_bundle, fidelity=f)
    size = plain_bundle.face_size
    lq = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        cleaned = fidelity_output(f, lq, flip=True)
        unflipped = fidelity_output(f, lq)
    assert not torch.allclose(cleaned, lq) and not torch.allclose(cleaned, unflipped)
    one_call = SamplingConfig(steps=2, fidelity_flip=False)  # --no-fidelity-flip
    torch.testing.assert_close(
        with_f.restore(lq, [5, 6], one_call), plain_bundle.restore(unflipped, [5, 6], one_call)
    )
    for sampling in (SamplingConfig(steps=2), SamplingConfig(steps=2, low_freq_sigma=3.0)):
        got = with_f.restore(lq, [5, 6], sampling)
        torch.testing.assert_close(got, plain_bundle.restore(cleaned, [5, 6], sampling))
        assert not torch.allclose(got, plain_bundle.restore(lq, [5, 6], sampling))
    without = SamplingConfig(steps=2, low_freq_sigma=3.0, use_fidelity=False)  # --no-fidelity-net
    torch.testing.assert_close(
        with_f.restore(lq, [5, 6], without), plain_bundle.restore(lq, [5, 6], without)
    )
    fixed = SamplingConfig(steps=2, low_freq_sigma=3.0)
    raw = with_f.restore(lq, [5, 6], SamplingConfig(steps=2))
    torch.testing.assert_close(
        with_f.restore(lq, [5, 6], fixed), transfer_low_frequencies(raw, cleaned, 3.0)
    )
