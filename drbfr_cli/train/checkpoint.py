"""Checkpoint folders: safetensors weights, config.json, and a weights-only training state.

Layout of a checkpoint (`RUN/checkpoints/step_NNNNNNN/`) and of `RUN/final/`:

    <module>.safetensors       weights of each trained module, by the task's module name
    <module>.ema.safetensors   their EMA copies, when the loop keeps one
    config.json                task name, task config, loop config, step, drbfr version, and the
                               sha256 of every other file in the folder
    state.pt                   (checkpoints only) step, optimizer, LR scheduler, grad scaler and
                               per-rank RNG states: tensors, numbers and lists only, read back
                               with torch.load(weights_only=True)

A folder is written under a temporary name and renamed when complete, so a killed run never
leaves a partial checkpoint; the sha256 list catches files damaged afterwards.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import safetensors.torch
import torch

from drbfr_cli import __version__, devices
from drbfr_cli.errors import DrbfrError, load_strict
from drbfr_cli.imaging import make_temporary_folder
from drbfr_cli.weights import sha256_bytes

M = TypeVar("M", bound=torch.nn.Module)

CHECKPOINTS = "checkpoints"
FINAL = "final"
CONFIG_FILE = "config.json"
STATE_FILE = "state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def step_dir_name(step: int) -> str:
    """`step_0000500` for step 500."""
    return f"step_{step:07d}"


def weights_file(name: str, *, ema: bool = False) -> str:
    """File name of a module's weights (`drm.safetensors`) or of its EMA (`drm.ema.safetensors`)."""
    return f"{name}.ema.safetensors" if ema else f"{name}.safetensors"


# ---------------------------------------------------------------------------------------------
# RNG states as plain values (no numpy objects, so no pickles)


def capture_rng() -> dict[str, Any]:
    """This process's torch, CUDA, numpy and python RNG states as tensors, lists and numbers."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": devices.cuda_rng_states(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of `capture_rng`."""
    torch.set_rng_state(state["torch"])
    devices.set_cuda_rng_states(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class CheckpointContent:
    """Everything written into one checkpoint (or final) folder."""

    weights: dict[str, dict[str, torch.Tensor]]
    ema: dict[str, dict[str, torch.Tensor]]
    config: dict[str, Any]
    state: dict[str, Any] | None = None


def _tensors_for_file(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: tied weights share storage, which safetensors refuses to write
    return {key: value.detach().cpu().clone().contiguous() for key, value in state_dict.items()}


def _serialise(content: CheckpointContent) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name, state_dict in content.weights.items():
        files[weights_file(name)] = safetensors.torch.save(_tensors_for_file(state_dict))
    for name, state_dict in content.ema.items():
        files[weights_file(name, ema=True)] = safetensors.torch.save(_tensors_for_file(state_dict))
    if content.state is not None:
        buffer = io.BytesIO()
        torch.save(content.state, buffer)
        files[STATE_FILE] = buffer.getvalue()
    return files


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_folder(target: Path, content: CheckpointContent) -> None:
    """Write `content` to `target` atomically: a temporary sibling folder, then a rename."""
    files = _serialise(content)
    config = {
        **content.config,
        "drbfr_version": __version__,
        "modules": sorted(content.weights),
        "ema": bool(content.ema),
        "sha256": {name: sha256_bytes(data) for name, data in files.items()},
    }
    files[CONFIG_FILE] = (json.dumps(config, indent=2, default=str) + "\n").encode()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temporary_folder(target)
    try:
        for name, data in files.items():
            _write_synced(tmp / name, data)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DrbfrError(f"{target}: cannot write checkpoint ({exc.strerror or exc})") from None


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, folder), oldest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return sorted(found)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints, and temporary folders left by kills."""
    for _, folder in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)
    for leftover in (run_dir / CHECKPOINTS).glob(".step_*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Reading


def read_config(folder: Path) -> dict[str, Any]:
    """config.json of a checkpoint or final folder; one-line error when missing or corrupt."""
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DrbfrError(f"{path}: missing (incomplete or damaged checkpoint)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DrbfrError(f"{path}: unreadable checkpoint config ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("sha256"), dict):
        raise DrbfrError(f"{path}: not a drbfr checkpoint config")
    return config


def read_verified(folder: Path, name: str, config: Mapping[str, Any]) -> bytes:
    """The bytes of `folder/name`, checked against the sha256 recorded in config.json."""
    path = folder / name
    expected = config["sha256"].get(name)
    if expected is None:
        raise DrbfrError(f"{path}: not listed in {folder / CONFIG_FILE} (damaged checkpoint)")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DrbfrError(f"{path}: missing (damaged checkpoint)") from None
    except OSError as exc:
        raise DrbfrError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if sha256_bytes(data) != expected:
        raise DrbfrError(f"{path}: checksum mismatch, the checkpoint file is corrupt")
    return data


def read_weights(folder: Path, config: Mapping[str, Any], *, ema: bool) -> dict[str, dict]:
    """Weights per module name (or their EMA copies) from a verified folder."""
    weights = {}
    for name in config.get("modules", []):
        file = weights_file(name, ema=ema)
        try:
            weights[name] = safetensors.torch.load(read_verified(folder, file, config))
        except safetensors.SafetensorError as exc:
            raise DrbfrError(f"{folder / file}: not a valid safetensors file ({exc})") from None
    return weights


def read_state(folder: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """The training state of a checkpoint, loaded with torch.load(weights_only=True)."""
    data = read_verified(folder, STATE_FILE, config)
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises many types for a bad file; all mean "unreadable"
        raise DrbfrError(f"{folder / STATE_FILE}: unreadable training state ({exc})") from None


def weights_folder(run_dir: Path) -> Path:
    """Where a run's weights are: the folder itself, its final/, or its latest checkpoint."""
    if (run_dir / CONFIG_FILE).is_file():
        return run_dir
    if (run_dir / FINAL).is_dir():
        return run_dir / FINAL
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise DrbfrError(f"{run_dir}: no trained weights (no final/ and no checkpoint)")
    return checkpoints[-1][1]


def load_modules(
    run_dir: Path, *, ema: bool = False
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Final (or latest checkpoint) weights per module name, and the task config they came with.

    `run_dir` is a run folder, its `final/`, or one checkpoint folder. `ema=True` returns the EMA
    weights instead (an error when the run kept none). Every file is checked against its sha256.
    """
    folder = weights_folder(Path(run_dir))
    config = read_config(folder)
    if ema and not config.get("ema"):
        raise DrbfrError(f"{folder}: this run kept no EMA weights (train with an EMA decay)")
    return read_weights(folder, config, ema=ema), config.get("task_config", {})


@dataclass(frozen=True)
class RunStage:
    """What a loader takes from the runs of one training stage."""

    name: str
    """The `stage` its task config records."""
    module: str
    """The module name its weights are saved under."""
    label: str
    """How errors name such a run: "an LDM run"."""


def load_run_module(
    run_dir: Path,
    stage: RunStage,
    build: Callable[[dict[str, Any]], M],
    *,
    ema: bool,
) -> tuple[M, dict[str, Any]]:
    """`stage.module` of a run (final weights, else the latest checkpoint; its EMA copy when
    `ema` and the run kept one) loaded strictly into `build(task_config)`, in eval mode, and
    the task config. One-line errors for another stage's run or weights that do not fit."""
    folder = weights_folder(Path(run_dir))
    config = read_config(folder)
    saved = config.get("task_config", {})
    if saved.get("stage") != stage.name:
        raise DrbfrError(f"{run_dir}: not {stage.label} (stage {saved.get('stage')!r})")
    states = read_weights(folder, config, ema=ema and bool(config.get("ema")))
    if stage.module not in states:
        raise DrbfrError(f"{run_dir}: the checkpoint holds no {stage.module} weights")
    module = build(saved)
    what = f"{stage.module} weights do not match its config"
    load_strict(module, states[stage.module], what=what, where=run_dir)
    return module.eval(), saved
