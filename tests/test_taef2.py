"""TAEF2 first stage: registry loading, layout, round-trip fidelity, per-channel latent stats."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from drbfr_cli import weights
from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import faces_to_tensor, read_image, tensor_to_faces
from drbfr_cli.metrics.fidelity import FidelityConfig, psnr
from drbfr_cli.nets.taef2 import (
    DECODER_WEIGHTS,
    ENCODER_WEIGHTS,
    LATENT_CHANNELS,
    TAEF2,
    ChannelLatentStats,
    TAEF2FirstStage,
    compute_latent_stats,
    load_taef2,
    read_latent_stats,
    shipped_latent_stats,
    write_latent_stats,
)
from drbfr_cli.weights import WeightsCorruptError, WeightsMissingError

FILES = {ENCODER_WEIGHTS: "taef2_encoder.pth", DECODER_WEIGHTS: "taef2_decoder.pth"}
PARAMETERS = {ENCODER_WEIGHTS: 1_338_528, DECODER_WEIGHTS: 1_338_499}
"""Counted in the published state dicts."""
ROUND_TRIP_FACES = 3
"""512 px faces in the round-trip test: about 9 s each on one core (encode + decode)."""
MIN_PSNR_DB = 35.0


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real cache or $DRBFR_HOME: only the folder a test names is searched."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DRBFR_HOME", raising=False)


@pytest.fixture(scope="module")
def first_stage(shared_weights_dir: Path) -> TAEF2FirstStage:
    return load_taef2(shared_weights_dir)


@pytest.fixture(scope="module")
def faces(shared_dir: Path) -> list[np.ndarray]:
    """A few 512 px validation faces spread over the name-sorted folder (several groups)."""
    paths = sorted((shared_dir / "data" / "faces512" / "val").glob("*.jpg"))
    step = len(paths) // ROUND_TRIP_FACES
    return [read_image(path).rgb for path in paths[::step][:ROUND_TRIP_FACES]]


@pytest.fixture(scope="module")
def small_faces(faces: list[np.ndarray]) -> torch.Tensor:
    """The same faces at 128 px, as a [-1, 1] batch (cheap to encode)."""
    small = [cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA) for face in faces]
    return faces_to_tensor(small) * 2.0 - 1.0


def _copy_shared(shared_weights_dir: Path, folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(shared_weights_dir / FILES[name], folder / FILES[name])
    return folder


# --------------------------------------------------------------------------- loading


def test_official_files_load_strictly_through_the_registry(
    first_stage: TAEF2FirstStage, shared_weights_dir: Path
) -> None:
    for name in FILES:
        assert weights.check(name, shared_weights_dir).status is weights.Status.VALID
    model = first_stage.model
    for name, half in ((ENCODER_WEIGHTS, model.encoder), (DECODER_WEIGHTS, model.decoder)):
        assert sum(p.numel() for p in half.parameters()) == PARAMETERS[name]
        official = torch.load(shared_weights_dir / FILES[name], weights_only=True)
        assert {k: v.shape for k, v in half.state_dict().items()} == {
            k: v.shape for k, v in official.items()
        }
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())
    assert not model.training


@pytest.mark.parametrize("name", list(FILES))
def test_a_corrupt_copy_is_refused(name: str, shared_weights_dir: Path, tmp_path: Path) -> None:
    folder = _copy_shared(shared_weights_dir, tmp_path / "weights", list(FILES))
    target = folder / FILES[name]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(WeightsCorruptError, match=f"{name}: .* is corrupt") as caught:
        load_taef2(folder)
    assert "\n" not in str(caught.value)


def test_a_missing_file_gives_one_line_error(shared_weights_dir: Path, tmp_path: Path) -> None:
    folder = _copy_shared(shared_weights_dir, tmp_path / "weights", [ENCODER_WEIGHTS])
    with pytest.raises(WeightsMissingError) as caught:
        load_taef2(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert "taef2_decoder.pth not found" in message
    assert f"drbfr weights fetch {DECODER_WEIGHTS}" in message


def test_a_file_of_another_layout_is_refused(tmp_path: Path, register_weights) -> None:
    other = TAEF2(latent_channels=4).encoder.state_dict()  # TAESD's latent width
    path = tmp_path / "taesd_like_encoder.pth"
    torch.save(other, path)
    register_weights(ENCODER_WEIGHTS, path)
    with pytest.raises(WeightsCorruptError, match="does not fit the TAEF2 layout") as caught:
        load_taef2(tmp_path)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- shapes


def test_latent_shape_and_image_range(first_stage: TAEF2FirstStage) -> None:
    image = torch.rand(2, 3, 64, 96) * 2.0 - 1.0
    latent = first_stage.encode(image)
    assert latent.shape == (2, LATENT_CHANNELS, 8, 12)
    decoded = first_stage.decode(latent)
    assert decoded.shape == image.shape
    assert decoded.min() >= -1.0 and decoded.max() <= 1.0


@pytest.mark.parametrize("shape", [(1, 3, 60, 64), (1, 1, 64, 64), (3, 64, 64)])
def test_inputs_it_cannot_take_give_one_line_errors(
    first_stage: TAEF2FirstStage, shape: tuple[int, ...]
) -> None:
    with pytest.raises(DrbfrError, match="TAEF2 encodes N x 3 x H x W images"):
        first_stage.encode(torch.zeros(shape))
    with pytest.raises(DrbfrError, match="TAEF2 decodes N x 32"):
        first_stage.decode(torch.zeros(1, 4, 8, 8))


# --------------------------------------------------------------------------- fidelity


@pytest.mark.slow
def test_round_trip_of_512px_faces_keeps_35_db(
    first_stage: TAEF2FirstStage, faces: list[np.ndarray]
) -> None:
    batch = faces_to_tensor(faces) * 2.0 - 1.0
    latent = first_stage.encode(batch)
    assert latent.shape == (len(faces), LATENT_CHANNELS, 64, 64)
    decoded = tensor_to_faces((first_stage.decode(latent) + 1.0) / 2.0)
    values = [psnr(out, ref, FidelityConfig()) for out, ref in zip(decoded, faces, strict=True)]
    assert np.mean(values) >= MIN_PSNR_DB, values
    assert min(values) >= MIN_PSNR_DB - 1.0, values


# --------------------------------------------------------------------------- latent statistics


def test_compute_latent_stats_is_the_per_channel_population_mean_and_std() -> None:
    generator = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.5, 1.0, 2.0])[None, :, None, None]
    latents = torch.randn(5, 3, 4, 6, generator=generator) * scale + 1.0
    whole = compute_latent_stats(latents)
    streamed = compute_latent_stats(iter(latents.split(2)))
    expected_mean = latents.double().mean((0, 2, 3))
    expected_std = latents.double().std((0, 2, 3), correction=0)
    for stats in (whole, streamed):
        assert stats.samples == 5
        np.testing.assert_allclose(stats.mean, expected_mean.numpy(), atol=1e-9)
        np.testing.assert_allclose(stats.std, expected_std.numpy(), atol=1e-9)


def test_latent_stats_refuse_degenerate_input() -> None:
    with pytest.raises(DrbfrError, match="at least one latent"):
        compute_latent_stats(iter([]))
    with pytest.raises(DrbfrError, match="N x C x h x w"):
        compute_latent_stats(torch.zeros(3, 4, 4))
    with pytest.raises(DrbfrError, match="positive stds"):
        compute_latent_stats(torch.ones(1, 2, 4, 4))


def test_normalised_latents_of_the_sample_have_zero_mean_and_unit_std(
    first_stage: TAEF2FirstStage, small_faces: torch.Tensor
) -> None:
    raw = first_stage.encode(small_faces)
    stats = compute_latent_stats(raw)
    assert stats.channels == LATENT_CHANNELS and stats.samples == small_faces.shape[0]
    normalised = TAEF2FirstStage(first_stage.model, stats).encode(small_faces).double()
    np.testing.assert_allclose(normalised.mean((0, 2, 3)).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(normalised.std((0, 2, 3), correction=0).numpy(), 1.0, atol=1e-5)


def test_normalisation_is_undone_by_decode(
    first_stage: TAEF2FirstStage, small_faces: torch.Tensor
) -> None:
    stats = ChannelLatentStats(
        mean=tuple(0.1 * c - 1.0 for c in range(LATENT_CHANNELS)),
        std=tuple(0.5 + 0.05 * c for c in range(LATENT_CHANNELS)),
        samples=1,
    )
    normalised = TAEF2FirstStage(first_stage.model, stats)
    raw_round_trip = first_stage.decode(first_stage.encode(small_faces))
    torch.testing.assert_close(
        normalised.decode(normalised.encode(small_faces)), raw_round_trip, atol=1e-5, rtol=0
    )


def test_stats_of_another_width_are_refused(first_stage: TAEF2FirstStage) -> None:
    stats = ChannelLatentStats(mean=(0.0,) * 4, std=(1.0,) * 4, samples=1)
    with pytest.raises(DrbfrError, match="need 32 channels; got 4"):
        TAEF2FirstStage(first_stage.model, stats)


def test_stats_files_round_trip_and_bad_ones_are_refused(tmp_path: Path) -> None:
    stats = ChannelLatentStats(mean=(0.25, -1.5), std=(0.5, 2.0), samples=7)
    path = tmp_path / "stats.json"
    write_latent_stats(path, stats, note="made by a test")
    assert read_latent_stats(path) == stats
    path.write_text('{"mean": [0.0], "std": [1.0]}', encoding="utf-8")
    with pytest.raises(DrbfrError, match="not a latent statistics file"):
        read_latent_stats(path)


def test_the_shipped_statistics_fit_taef2() -> None:
    stats = shipped_latent_stats()
    assert stats.channels == LATENT_CHANNELS
    assert stats.samples >= 100
    assert all(0.05 < s < 5.0 for s in stats.std)
