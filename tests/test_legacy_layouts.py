"""Bundles and runs written before configs were nested still load.

tests/fixtures/legacy/ holds the bundle.json and run config.json files that release 0.1.0 wrote
for the tiny presets (flat configs: the VAE's network, patch and loss fields side by side; the
LDM's network, data, degradation, schedule and sampling fields side by side)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import safetensors.torch
import torch

from drbfr_cli.benchmark.random_bundle import random_bundle
from drbfr_cli.bundle import MANIFEST, load_bundle
from drbfr_cli.config import from_dict, normalised, to_dict
from drbfr_cli.diffusion.sampling import SamplingConfig
from drbfr_cli.diffusion.schedule import NoiseSchedule
from drbfr_cli.nets.drm import DRMConfig
from drbfr_cli.presets import (
    LDMConfig,
    VAEConfig,
    drm_config_from_preset,
    ldm_config_from_preset,
    vae_config_from_preset,
)
from drbfr_cli.weights import sha256_bytes

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"


def _read(name: str) -> dict:
    return json.loads((LEGACY / name).read_text(encoding="utf-8"))


def test_legacy_flat_configs_read_as_the_nested_presets_they_were() -> None:
    bundle = _read("bundle.json")
    assert "network" not in bundle["vae"]["model"]  # the fixture is the flat layout
    assert from_dict(VAEConfig, bundle["vae"]["model"]) == vae_config_from_preset("tiny")[0]
    assert from_dict(DRMConfig, bundle["drm"]["model"]) == drm_config_from_preset("tiny")[0]
    ldm = _read("ldm_run_config.json")["task_config"]["model"]
    assert "sampling" not in ldm
    tiny = ldm_config_from_preset("tiny")[0]
    assert from_dict(LDMConfig, ldm) == tiny
    assert from_dict(NoiseSchedule, bundle["schedule"]) == tiny.schedule
    assert from_dict(SamplingConfig, bundle["sampling"]) == tiny.sampling
    vae_run = _read("vae_run_config.json")["task_config"]["model"]
    assert normalised(VAEConfig, vae_run) == to_dict(vae_config_from_preset("tiny")[0])


def test_the_nested_layout_round_trips() -> None:
    for stage, cls in (("vae", VAEConfig), ("ldm", LDMConfig)):
        for preset in ("tiny", "base", "paper"):
            config = {"vae": vae_config_from_preset, "ldm": ldm_config_from_preset}[stage](preset)
            written = json.loads(json.dumps(to_dict(config[0])))
            assert from_dict(cls, written) == config[0], (stage, preset)


def test_a_legacy_bundle_folder_loads_and_restores(tmp_path: Path) -> None:
    """The legacy bundle.json with weights of its layout (random: the tiny presets' networks)."""
    manifest = _read("bundle.json")
    parts = random_bundle("tiny", seed=3)
    tensors = {
        "drm_encoder": parts.parts.encoder.state_dict(),
        "vae": parts.parts.first_stage.model.state_dict(),
        "ldrm": parts.ldrm.state_dict(),
    }
    files = {}
    for name, state in tensors.items():
        data = safetensors.torch.save({k: v.contiguous() for k, v in state.items()})
        (tmp_path / f"{name}.safetensors").write_bytes(data)
        files[f"{name}.safetensors"] = sha256_bytes(data)
    manifest["files"] = files
    (tmp_path / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    bundle = load_bundle(tmp_path)
    assert bundle.face_size == 64 and bundle.sampling == ldm_config_from_preset("tiny")[0].sampling
    scaling = manifest["vae"]["latent"]["scaling_factor"]
    assert bundle.parts.first_stage.scaling_factor == scaling
    first_stage = replace(parts.parts.first_stage, scaling_factor=scaling)
    expected = replace(parts, parts=replace(parts.parts, first_stage=first_stage))
    lq = torch.rand(1, 3, 64, 64) * 2 - 1
    fast = SamplingConfig(steps=2, start_t=0.5)
    torch.testing.assert_close(bundle.restore(lq, [0], fast), expected.restore(lq, [0], fast))
