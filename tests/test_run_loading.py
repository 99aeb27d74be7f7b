"""train/checkpoint.load_run_module: one module of a run, its EMA copy when kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from drbfr_cli.errors import DrbfrError
from drbfr_cli.train.checkpoint import (
    FINAL,
    CheckpointContent,
    RunStage,
    load_run_module,
    write_folder,
)

TOY = RunStage("toy", module="net", label="a toy run")


def _build(saved: dict[str, Any]) -> nn.Linear:
    return nn.Linear(2, saved["width"])


def _filled(value: float, width: int = 3) -> dict[str, torch.Tensor]:
    net = nn.Linear(2, width)
    with torch.no_grad():
        for param in net.parameters():
            param.fill_(value)
    return net.state_dict()


def _run(tmp_path: Path, *, ema: bool, stage: str = "toy", width: int = 3) -> Path:
    run = tmp_path / "run"
    content = CheckpointContent(
        weights={"net": _filled(1.0, width)},
        ema={"net": _filled(2.0, width)} if ema else {},
        config={"task_config": {"stage": stage, "width": width}},
    )
    write_folder(run / FINAL, content)
    return run


def _value(net: nn.Module) -> float:
    return float(net.weight.detach().flatten()[0])


def test_the_ema_copy_when_the_run_kept_one(tmp_path: Path) -> None:
    run = _run(tmp_path, ema=True)
    net, saved = load_run_module(run, TOY, _build, ema=True)
    assert isinstance(net, nn.Linear) and not net.training
    assert _value(net) == 2.0 and saved == {"stage": "toy", "width": 3}
    assert _value(load_run_module(run, TOY, _build, ema=False)[0]) == 1.0


def test_the_trained_weights_when_the_run_kept_no_ema(tmp_path: Path) -> None:
    run = _run(tmp_path, ema=False)
    assert _value(load_run_module(run, TOY, _build, ema=True)[0]) == 1.0


def test_another_stage_is_refused_by_its_label(tmp_path: Path) -> None:
    run = _run(tmp_path, ema=False, stage="vae")
    with pytest.raises(DrbfrError, match=r"not a toy run \(stage 'vae'\)"):
        load_run_module(run, TOY, _build, ema=True)


def test_weights_that_do_not_fit_are_one_line(tmp_path: Path) -> None:
    run = _run(tmp_path, ema=True)
    with pytest.raises(DrbfrError, match="net weights do not match its config") as caught:
        load_run_module(run, TOY, lambda saved: nn.Linear(2, 5), ema=True)
    assert "\n" not in str(caught.value) and "size mismatch" in str(caught.value)


def test_a_run_without_the_module_names_it(tmp_path: Path) -> None:
    run = _run(tmp_path, ema=False)
    other = RunStage("toy", module="head", label="a toy run")
    with pytest.raises(DrbfrError, match="holds no head weights"):
        load_run_module(run, other, _build, ema=False)
