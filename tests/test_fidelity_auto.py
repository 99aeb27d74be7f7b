"""`--fidelity auto`: each face's sampling strength from its estimated severity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from drbfr_cli.bundle import load_bundle
from drbfr_cli.cli.main import app
from drbfr_cli.degradations import DegradationParams, degrade
from drbfr_cli.diffusion.sampling import SamplingOverrides, fidelity_sampling
from drbfr_cli.imaging import faces_to_tensor, read_image, write_image
from drbfr_cli.restore.restorer import (
    AUTO_SEVERITY,
    AUTO_STEP,
    BundleRestorer,
    auto_weight,
    lowest_weight,
)

runner = CliRunner()
SHIPPED = Path(__file__).resolve().parent.parent / "models" / "bundles" / "drbfr-small"
CPU = torch.device("cpu")


def test_auto_weight_is_faithful_for_light_faces_and_generative_for_heavy_ones() -> None:
    light, heavy = AUTO_SEVERITY
    assert auto_weight(0.0) == auto_weight(light) == 1.0
    assert auto_weight(1.0) == auto_weight(heavy) == 0.0
    weights = [auto_weight(s / 100) for s in range(101)]
    assert weights == sorted(weights, reverse=True)
    assert all(abs(w / AUTO_STEP - round(w / AUTO_STEP)) < 1e-9 for w in weights)
    assert auto_weight(1.0, lowest=0.4) == 0.4
    assert auto_weight(0.5, ends=(0.4, 0.6)) == 0.5


def test_lowest_weight_keeps_start_t_within_the_trained_noise_levels() -> None:
    assert lowest_weight(1.0) == 0.0
    for t_max in (0.3, 0.5, 0.65):
        lowest = lowest_weight(t_max)
        assert fidelity_sampling(lowest)["start_t"] <= t_max + 1e-9
        assert fidelity_sampling(max(lowest - 0.05, 0.0))["start_t"] > t_max


@pytest.fixture(scope="module")
def faces(hq_dir: Path, tmp_path_factory) -> Path:
    """light.png: a real face lightly blurred; heavy.png: blurred, downscaled, noisy, JPEG 60."""
    folder = tmp_path_factory.mktemp("faces")
    hq = read_image(hq_dir / "ffhq_00000000.png").rgb
    for name, params in {
        "light": DegradationParams(sigma=0.5, r=1.0, delta=0.0, q=100),
        "heavy": DegradationParams(sigma=3.0, r=4.0, delta=15.0, q=60),
    }.items():
        write_image(folder / f"{name}.png", degrade(hq, params, np.random.default_rng(0)))
    return folder


def test_auto_restores_each_face_as_its_own_fidelity_would(
    faces: Path, shared_weights_dir: Path
) -> None:
    bundle = load_bundle(SHIPPED, weights_dir=shared_weights_dir)
    user = SamplingOverrides(steps=2, samples=1)
    base = user.apply(bundle.sampling)
    restorer = BundleRestorer(bundle, CPU, None, base, auto=user)
    batch = faces_to_tensor([read_image(faces / f"{n}.png").rgb for n in ("light", "heavy")])
    light, heavy = restorer.auto_weights(batch)
    assert light > heavy  # the heavier damage gets the more generative sampling
    together = restorer.restore(batch, [7, 8])
    for i, weight in enumerate((light, heavy)):
        sampling = user.with_fidelity(weight).apply(bundle.sampling)
        alone = BundleRestorer(bundle, CPU, None, sampling).restore(batch[i : i + 1], [7 + i])
        assert torch.allclose(together[i : i + 1], alone, atol=1e-5)


def test_restore_fidelity_auto_through_the_cli(
    faces: Path, shared_weights_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = runner.invoke(
        app,
        ["restore", str(faces), "-o", str(out), "--aligned", "--model", str(SHIPPED),
         "--fidelity", "auto", "--steps", "2", "--samples", "1", "--device", "cpu",
         "--weights-dir", str(shared_weights_dir)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["sampling"]["fidelity"] == "auto"
    assert report["summary"]["faces_restored"] == 2


@pytest.mark.parametrize("value", ["sometimes", "1.5", "-0.1"])
def test_bad_fidelity_values_are_one_line_usage_errors(value: str, tmp_path: Path) -> None:
    done = runner.invoke(app, ["restore", str(tmp_path), "-o", str(tmp_path / "o"),
                               "--fidelity", value])  # fmt: skip
    assert done.exit_code == 2
    assert "--fidelity" in done.output
    assert not (tmp_path / "o").exists()


def test_auto_needs_a_degradation_head(shared_weights_dir: Path) -> None:
    from dataclasses import replace

    from drbfr_cli.errors import DrbfrError

    bundle = replace(load_bundle(SHIPPED, weights_dir=shared_weights_dir), drm_head=None)
    with pytest.raises(DrbfrError, match="degradation head"):
        BundleRestorer(bundle, CPU, None, bundle.sampling, auto=SamplingOverrides())
