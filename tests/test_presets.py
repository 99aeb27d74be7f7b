"""Every preset value says where it comes from ([<preset>.provenance] in models/presets)."""

from __future__ import annotations

import tomllib

import pytest

from drbfr_cli.config import preset_file, preset_names
from drbfr_cli.presets import drm_config_from_preset, ldm_config_from_preset, vae_config_from_preset
from drbfr_cli.train.resume import flatten

SOURCES = ("paper", "ldm", "taming", "measured", "choice", "guess")
STAGES = ("drm", "vae", "ldm")


def _presets(stage: str) -> dict:
    return tomllib.loads(preset_file(stage).read_text(encoding="utf-8"))


@pytest.mark.parametrize("stage", STAGES)
def test_every_preset_value_has_a_provenance(stage: str) -> None:
    for name, table in _presets(stage).items():
        values = flatten({k: table[k] for k in ("model", "train") if k in table})
        provenance = table.get("provenance", {})
        assert sorted(provenance) == sorted(values), f"{stage}.{name}"
        for key, source in provenance.items():
            kind, _, reason = source.partition(": ")
            assert kind in SOURCES and len(reason) > 8, f"{stage}.{name}.{key}: {source!r}"


@pytest.mark.parametrize("stage", STAGES)
def test_the_paper_preset_is_marked_as_not_the_authors_recipe(stage: str) -> None:
    text = preset_file(stage).read_text(encoding="utf-8")
    assert "not the authors' recipe" in text
    train = _presets(stage)["paper"]["provenance"]
    assert all(not train[k].startswith("paper") for k in train if k.startswith("train."))


def test_presets_still_load_with_their_provenance_tables() -> None:
    for load, stage in (
        (drm_config_from_preset, "drm"),
        (vae_config_from_preset, "vae"),
        (ldm_config_from_preset, "ldm"),
    ):
        for name in preset_names(stage):
            model, train = load(name)
            assert model is not None and "steps" in train


def test_auto_mixed_precision_is_bf16_where_supported_fp16_on_other_gpus_fp32_on_cpu() -> None:
    from drbfr_cli.train.accel import resolve_mixed_precision

    assert resolve_mixed_precision("auto", device_type="cuda", bf16_supported=True) == "bf16"
    assert resolve_mixed_precision("auto", device_type="cuda", bf16_supported=False) == "fp16"
    assert resolve_mixed_precision("auto", device_type="cpu", bf16_supported=False) == "no"
    for explicit in ("no", "fp16", "bf16"):
        assert resolve_mixed_precision(explicit, device_type="cpu", bf16_supported=False) == (
            explicit
        )
