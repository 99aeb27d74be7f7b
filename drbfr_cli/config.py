"""Typed configs: frozen dataclasses, filled from the TOML presets in `models/presets/`.

A preset is a named config, not a code path: `models/presets/<stage>.toml` holds one table per
preset (`tiny`, `base`, `paper`), each with a `model` table (shapes the networks; must match a
checkpoint) and a `train` table (default training options, overridable on the command line).
"""

from __future__ import annotations

import dataclasses
import tomllib
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


def from_dict(cls: type[T], values: dict[str, Any], *, source: str = "config") -> T:
    """Build a frozen dataclass from a plain dict; lists become tuples; unknown keys are errors."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise DrbfrError(f"{source}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
    hints = get_type_hints(cls)
    converted = {k: _convert(v, hints.get(k)) for k, v in values.items()}
    try:
        return cls(**converted)
    except (TypeError, ValueError) as exc:
        raise DrbfrError(f"{source}: invalid {cls.__name__} ({exc})") from None


def _convert(value: Any, hint: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as a JSON/TOML-friendly dict (tuples become lists)."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }
