"""`train vae` and `analyze vae` on real faces: loss, codebook, scaling, resume, reports, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.nets.autoencoder import VQConfig
from drbfr_cli.presets import PatchConfig, VAEConfig, VAELossConfig
from drbfr_cli.train.batches import SeededItems
from drbfr_cli.train.datasets import FacePatchDataset, augment_colors, load_faces
from drbfr_cli.train.loop import LoopConfig
from drbfr_cli.train.vae import VAETask, VAETaskConfig, load_vae, train_vae

runner = CliRunner()
# A smaller geometry than the tiny preset (32 px patches), so that tests train in seconds
SMALL = VAEConfig(
    image_size=32,
    network=VQConfig(block_out_channels=(16, 32), norm_num_groups=8, num_codes=128),
    data=PatchConfig(patch_size=32, face_sides=(32, 64)),
    loss=VAELossConfig(quantize_after=20),
    scale_samples=64,
)
LOOP = {"batch_size": 8, "lr": 2e-3, "warmup_steps": 5, "log_every": 5, "checkpoint_every": 20}


@pytest.fixture(autouse=True, scope="module")
def one_thread_per_worker():
    """`make test` runs two pytest workers on two cores: one torch thread each avoids the
    oversubscription that makes small convolutions many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def split_faces(hq_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The benchmark split: every third face (index % 3 == 2) unseen, the rest to train on."""
    root = tmp_path_factory.mktemp("faces")
    for index, face in enumerate(sorted(hq_dir.glob("*.png"))):
        target = root / ("unseen" if index % 3 == 2 else "train") / face.name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(face, target)
    return root / "train", root / "unseen"


def _task(data: Path, model: VAEConfig = SMALL, **settings: object) -> VAETask:
    return VAETask(VAETaskConfig(model=model, data=str(data), preset="test", **settings))


@pytest.fixture(scope="module")
def trained_run(split_faces: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("vae") / "run"
    train_vae(_task(split_faces[0]), LoopConfig(steps=60, **LOOP), run)
    return run


def test_loss_falls_and_codebook_usage_is_logged(trained_run: Path) -> None:
    log = _log(trained_run)
    assert [entry["step"] for entry in log] == list(range(5, 65, 5))
    assert log[-1]["l1"] < 0.6 * log[0]["l1"] and log[-1]["l2"] < log[0]["l2"]
    warmup, quantized = log[:4], log[4:]  # quantization starts after step 20
    assert all("perplexity" not in entry for entry in warmup)
    for entry in quantized:
        assert entry["perplexity"] > 8 and 0.1 < entry["codes_used"] <= 1.0
        assert entry["commitment"] >= 0 and "codes_restarted" in entry


def test_scaling_factor_gives_unit_latent_std_on_training_patches(
    trained_run: Path, split_faces: tuple[Path, Path]
) -> None:
    trained = load_vae(trained_run)
    assert trained.latent is not None and trained.latent.samples == 64
    faces = load_faces(split_faces[0], SMALL.data.face_sides[1])
    dataset = SeededItems(FacePatchDataset(faces, patch_size=32, sides=(32, 64), seed=7), seed=7)
    images = torch.stack([dataset[(0, i)]["image"] for i in range(128)])  # other patches
    latents = trained.model.encode(images).detach() * trained.latent.scaling_factor
    assert abs(latents.std().item() - 1.0) < 0.1
    rebuilt = trained.model.decode(trained.model.encode(images)).detach()
    assert rebuilt.shape == images.shape and rebuilt.abs().max() < 1.5


def test_resume_continues_at_the_right_step(split_faces: tuple[Path, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_vae(_task(split_faces[0]), LoopConfig(steps=20, **LOOP), run)
    with pytest.raises(Exception, match="resume"):
        train_vae(_task(split_faces[0]), LoopConfig(steps=20, **LOOP), run)
    train_vae(_task(split_faces[0]), LoopConfig(steps=30, **LOOP), run, resume=True)
    assert [entry["step"] for entry in _log(run)] == [5, 10, 15, 20, 25, 30]
    assert load_vae(run).model.quantizer.initialised  # quantized from step 21 on


def test_cli_trains_the_tiny_preset_and_analyze_writes_its_reports(
    split_faces: tuple[Path, Path], tmp_path: Path
) -> None:
    run, report = tmp_path / "run", tmp_path / "report"
    args = ["--steps", "3", "--batch-size", "2", "--log-every", "1", "--sample-every", "3"]
    args += ["--no-perceptual"]
    trained = runner.invoke(
        app, ["train", "vae", "--data", str(split_faces[0]), "-o", str(run), *args]
    )
    assert trained.exit_code == 0, trained.output
    assert "latent scaling factor" in trained.stdout and list((run / "samples").glob("*.png"))
    saved = json.loads((run / "final" / "config.json").read_text())
    config = saved["task_config"]
    assert config["perceptual"] is False and saved["loop_config"]["mixed_precision"] == "no"
    assert (
        config["model"]["network"]["block_out_channels"] == [32, 48]
        and config["latent"]["scaling_factor"] > 0
    )
    analysed = runner.invoke(
        app,
        [
            "analyze",
            "vae",
            "--vae",
            str(run),
            "--data",
            str(split_faces[1]),
            "-o",
            str(report),
            "--patches",
            "4",
        ],
    )
    assert analysed.exit_code == 0, analysed.output
    assert (
        "LPIPS skipped" in analysed.stderr
        or "LPIPS: VGG" in json.loads((report / "analysis.json").read_text())["lpips_note"]
    )
    data = json.loads((report / "analysis.json").read_text())
    faces = data["faces"]
    assert faces["count"] == 4 and faces["size"] == 64
    assert faces["latent_values"] == 3 * 32 * 32 == faces["bicubic_values"]
    assert faces["bicubic"]["psnr"] > 20 and np.isfinite(faces["vae"]["psnr"])
    assert data["patches"]["count"] == 4
    assert (report / "report.md").read_text().startswith("# VQ autoencoder analysis")
    assert (report / "reconstructions.png").stat().st_size > 1000


def test_analyze_refuses_a_run_of_another_stage(
    trained_run: Path, split_faces: tuple[Path, Path], tmp_path: Path
) -> None:
    other = tmp_path / "run"
    shutil.copytree(trained_run, other)
    config_path = other / "final" / "config.json"
    config = json.loads(config_path.read_text())
    config["task_config"]["stage"] = "drm"
    config_path.write_text(json.dumps(config))
    result = runner.invoke(
        app,
        [
            "analyze",
            "vae",
            "--vae",
            str(other),
            "--data",
            str(split_faces[1]),
            "-o",
            str(tmp_path / "a"),
        ],
    )
    assert result.exit_code == 2 and "not a VAE run" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_analyze_refuses_corrupt_weights(
    trained_run: Path, split_faces: tuple[Path, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "run"
    shutil.copytree(trained_run, broken)
    weights = broken / "final" / "vae.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = runner.invoke(
        app,
        [
            "analyze",
            "vae",
            "--vae",
            str(broken),
            "--data",
            str(split_faces[1]),
            "-o",
            str(tmp_path / "a"),
        ],
    )
    assert (
        result.exit_code == 2 and "vae.safetensors" in result.stderr and "corrupt" in result.stderr
    )
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.output


@pytest.mark.parametrize(
    "content", [None, b"not an image"], ids=["empty-folder", "no-readable-image"]
)
def test_bad_data_folders_are_one_line_errors(tmp_path: Path, content: bytes | None) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if content is not None:
        (data / "face.png").write_bytes(content)
    result = runner.invoke(
        app, ["train", "vae", "--data", str(data), "-o", str(tmp_path / "run"), "--steps", "2"]
    )
    assert result.exit_code == 2 and str(data) in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_colour_augmentation_permutes_channels_or_turns_gray() -> None:
    rng = np.random.default_rng(0)
    patch = rng.random((8, 8, 3)).astype(np.float32)
    seen_gray, seen_orders = 0, set()
    for seed in range(200):
        out = augment_colors(patch, np.random.default_rng(seed))
        if np.allclose(out[..., 0], out[..., 1]) and np.allclose(out[..., 1], out[..., 2]):
            seen_gray += 1
            continue
        order = tuple(int(np.argmax([np.allclose(out[..., c], patch[..., k]) for k in range(3)]))
                      for c in range(3))  # fmt: skip
        assert sorted(order) == [0, 1, 2]
        seen_orders.add(order)
    assert len(seen_orders) == 6 and 5 <= seen_gray <= 40  # 10 % gray of 200 draws
