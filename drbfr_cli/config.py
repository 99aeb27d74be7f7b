"""Typed configs: frozen dataclasses, filled from the TOML presets in `models/presets/`.

A preset is a named config, not a code path: `models/presets/<stage>.toml` holds one table per
preset (`tiny`, `base`, `paper`), each with a `model` table (shapes the networks; must match a
checkpoint; nested configs are sub-tables) and a `train` table (default training options,
overridable on the command line). The stages' typed configs are in `presets.py`.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from drbfr_cli import zoo
from drbfr_cli.errors import DrbfrError

T = TypeVar("T")


def preset_file(stage: str) -> Path:
    return zoo.models_dir() / "presets" / f"{stage}.toml"


def preset_names(stage: str) -> list[str]:
    """Names of the presets defined for a stage, in file order."""
    return list(_read_presets(stage))


def load_preset(stage: str, name: str) -> dict[str, Any]:
    """The `name` table of `models/presets/<stage>.toml` (DrbfrError if absent)."""
    presets = _read_presets(stage)
    if name not in presets:
        raise DrbfrError(f"unknown {stage} preset {name!r}; choose one of: {', '.join(presets)}")
    return presets[name]


def _read_presets(stage: str) -> dict[str, Any]:
    path = preset_file(stage)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DrbfrError(f"{path}: cannot read presets ({exc})") from None


def from_dict(cls: type[T], values: Mapping[str, Any], *, source: str = "config") -> T:
    """Build a frozen dataclass from a plain dict; lists become tuples; unknown keys are errors.

    Nested dataclass fields are built from nested dicts. A key that is not a field of `cls` but
    of one of its nested configs (at any depth) is moved there, so the flat layouts that runs
    and bundles wrote before configs were nested still load.
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = get_type_hints(cls)
    values = _nest_flat_keys(dict(values), names, hints)
    unknown = sorted(set(values) - names)
    if unknown:
        raise DrbfrError(f"{source}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
    converted = {k: _convert(v, hints.get(k), f"{source}.{k}") for k, v in values.items()}
    try:
        return cls(**converted)
    except (TypeError, ValueError) as exc:
        raise DrbfrError(f"{source}: invalid {cls.__name__} ({exc})") from None


def _all_field_names(cls: type) -> set[str]:
    """Field names of a dataclass and of its nested dataclasses, at any depth."""
    hints = get_type_hints(cls)
    names: set[str] = set()
    for f in dataclasses.fields(cls):
        names.add(f.name)
        if dataclasses.is_dataclass(hints.get(f.name)):
            names |= _all_field_names(hints[f.name])
    return names


def _nest_flat_keys(
    values: dict[str, Any], names: set[str], hints: Mapping[str, Any]
) -> dict[str, Any]:
    """Move keys that are not own fields into the nested config that has them (legacy layout)."""
    nested = [n for n in names if dataclasses.is_dataclass(hints.get(n))]
    for key in [k for k in values if k not in names]:
        home = next((n for n in nested if key in _all_field_names(hints[n])), None)
        if home is not None:
            values[home] = {**values.get(home, {}), key: values.pop(key)}
    return values


def _convert(value: Any, hint: Any, source: str) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return from_dict(hint, value, source=source)
    if isinstance(value, list):
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as a JSON/TOML-friendly dict: nested configs become nested dicts, tuples
    lists."""
    return {
        f.name: _plain(getattr(config, f.name))
        for f in dataclasses.fields(config)  # type: ignore[arg-type]
    }


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def normalised(cls: type, values: Mapping[str, Any], *, source: str = "config") -> dict[str, Any]:
    """`values` as the current release writes them (nested, every field present)."""
    return to_dict(from_dict(cls, values, source=source))
