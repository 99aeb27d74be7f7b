"""Deciding whether and from where a run may start or continue."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from drbfr_cli.errors import DrbfrError
from drbfr_cli.train.checkpoint import list_checkpoints

LOOP_FIELDS_FIXED_ON_RESUME = (
    "batch_size",
    "lr",
    "weight_decay",
    "warmup_steps",
    "grad_clip",
    "mixed_precision",
    "grad_accum",
    "seed",
    "ema_decay",
)
"""LoopConfig fields a resumed run must keep; the others (steps, logging, cadence) may change."""


def as_json(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as it reads back from config.json (tuples become lists, paths strings)."""
    return json.loads(json.dumps(dict(config), default=str))


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level with dotted keys: {"net": {"width": 8}} -> {"net.width": 8}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str] = ()
) -> list[str]:
    """`key: saved -> current` for every differing key (dotted), skipping `ignore` keys."""
    old, new = flatten(as_json(saved)), flatten(as_json(current))
    skip = set(ignore)
    keys = sorted((old.keys() | new.keys()) - skip)
    missing = "<unset>"
    return [
        f"{key}: {old.get(key, missing)!r} -> {new.get(key, missing)!r}"
        for key in keys
        if old.get(key, missing) != new.get(key, missing)
    ]


def check_same_config(
    run_dir: Path,
    saved: Mapping[str, Any],
    task_name: str,
    task_config: Mapping[str, Any],
    loop_config: Mapping[str, Any],
    ignore: Iterable[str] = (),
) -> None:
    """One-line error when a resume would change the task, its config, or fixed loop fields."""
    if saved.get("task") != task_name:
        raise DrbfrError(
            f"{run_dir} is a {saved.get('task')!r} run, cannot resume it as {task_name!r}"
        )
    changed = differences(saved.get("task_config", {}), task_config, ignore)
    fixed_old = {k: saved.get("loop_config", {}).get(k) for k in LOOP_FIELDS_FIXED_ON_RESUME}
    fixed_new = {k: loop_config.get(k) for k in LOOP_FIELDS_FIXED_ON_RESUME}
    changed += differences(fixed_old, fixed_new)
    if changed:
        raise DrbfrError(
            f"cannot resume {run_dir} with a different config ({'; '.join(changed)}); "
            "use the run's options or start a new run"
        )


def check_fresh_run_dir(run_dir: Path) -> None:
    """A new run needs an absent or empty folder: a run is never overwritten silently."""
    if run_dir.exists() and not run_dir.is_dir():
        raise DrbfrError(f"{run_dir}: exists and is not a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise DrbfrError(
            f"{run_dir}: run folder is not empty; pass --resume to continue it or choose a new one"
        )


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest complete checkpoint folder of a run; one-line error when there is none."""
    if not run_dir.is_dir():
        raise DrbfrError(f"{run_dir}: no such run folder to resume")
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise DrbfrError(f"{run_dir}: no checkpoint to resume from (checkpoints/ has none)")
    return checkpoints[-1][1]
