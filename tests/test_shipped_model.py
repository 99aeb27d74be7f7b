"""The shipped model, models/bundles/drbfr-small: present (a missing one fails, never skips),
small, half precision, found by default, packaged, and restoring a real face."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from drbfr_cli import weights
from drbfr_cli.bundle import DEFAULT_NAME, MANIFEST, load_bundle, resolve_bundle
from drbfr_cli.cli.main import app
from drbfr_cli.imaging import read_image
from drbfr_cli.zoo import models_dir

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = PROJECT_ROOT / "models" / "bundles" / DEFAULT_NAME
MAX_BYTES = 60 * 10**6
runner = CliRunner()


@pytest.fixture(autouse=True)
def _empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user bundles: the default must come from the package."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DRBFR_HOME", raising=False)


@pytest.fixture(scope="module")
def manifest() -> dict:
    file = SHIPPED / MANIFEST
    assert file.is_file(), f"the shipped model is missing: {file} (drbfr export --half --ema-only)"
    return json.loads(file.read_text())


def test_the_shipped_bundle_is_half_precision_ema_only_and_under_60_mb(manifest: dict) -> None:
    assert (manifest["dtype"], manifest["denoiser"]) == ("float16", "ema")
    assert set(manifest["files"]) == {
        "drm_encoder.safetensors",
        "ldrm.safetensors",
        "fidelity.safetensors",
        "drm_head.safetensors",
    }
    for file in manifest["files"]:
        assert (SHIPPED / file).is_file(), f"{SHIPPED / file} is missing"
    size = sum(f.stat().st_size for f in SHIPPED.iterdir() if f.is_file())
    assert size < MAX_BYTES, f"{size / 1e6:.1f} MB"
    assert manifest["face_size"] == 512


def test_taef2_is_referenced_by_registry_name_and_sha256_not_shipped(manifest: dict) -> None:
    first_stage = manifest["first_stage"]
    assert first_stage["kind"] == "taef2" and "vae" not in manifest
    for half in ("encoder", "decoder"):
        name = first_stage[half]["name"]
        assert first_stage[half]["sha256"] == weights.spec(name).sha256
    assert not any("taef2" in f.name for f in SHIPPED.iterdir())


def test_no_model_means_the_shipped_bundle_which_the_package_data_holds(manifest: dict) -> None:
    assert resolve_bundle(None) == models_dir() / "bundles" / DEFAULT_NAME
    assert (models_dir() / "bundles" / DEFAULT_NAME).resolve() == SHIPPED.resolve()
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    build = project["tool"]["hatch"]["build"]["targets"]
    assert build["wheel"]["force-include"]["models"] == "drbfr_cli/_models"  # zoo.models_dir
    assert "models" in build["sdist"]["include"]


def test_git_does_not_ignore_the_shipped_weights() -> None:
    """Other bundles' weights are ignored (never committed by accident), drbfr-small's not."""
    if shutil.which("git") is None or not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        run = subprocess.run(["git", "check-ignore", "-q", path], cwd=PROJECT_ROOT, check=False)
        return run.returncode == 0

    assert not ignored(f"models/bundles/{DEFAULT_NAME}/ldrm.safetensors")
    assert ignored("models/bundles/my-try/ldrm.safetensors")


def test_the_half_bundle_loads_as_float32(manifest: dict, shared_weights_dir: Path) -> None:
    bundle = load_bundle(SHIPPED, weights_dir=shared_weights_dir)
    assert {p.dtype for p in bundle.ldrm.parameters()} == {torch.float32}
    parameters = sum(p.numel() for p in bundle.ldrm.parameters())
    assert 15e6 < parameters < 18e6  # the small preset's 16.4 M
    assert bundle.fidelity is not None and bundle.sampling.use_fidelity
    assert {p.dtype for p in bundle.fidelity.parameters()} == {torch.float32}
    assert 1e6 < sum(p.numel() for p in bundle.fidelity.parameters()) < 1.5e6  # small F: 1.2 M


def test_restore_without_model_uses_the_shipped_bundle(
    manifest: dict, real_lq_aligned_dir: Path, shared_weights_dir: Path, tmp_path: Path
) -> None:
    """One real LQ face, no --model, reduced sampling: restored, changed, reported."""
    face = sorted(real_lq_aligned_dir.glob("*.png"))[0]
    out = tmp_path / "out"
    args = ["restore", str(face), "-o", str(out), "--aligned", "--device", "cpu",
            "--weights-dir", str(shared_weights_dir), "--steps", "2", "--samples", "1"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert Path(report["settings"]["model"]).resolve() == SHIPPED.resolve()
    restored = read_image(out / "restored_imgs" / face.name).rgb
    before = read_image(face).rgb
    assert restored.shape == (512, 512, 3)
    assert 0.002 < float(abs(restored - before).mean()) < 0.2  # changed, still the same face
