"""errors.first_line and errors.load_strict: one-line messages from any exception."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from drbfr_cli.errors import DrbfrError, first_line, load_strict
from drbfr_cli.weights import WeightsCorruptError


@pytest.mark.parametrize("message", ["", "   ", "\n\n"])
def test_first_line_of_an_empty_message_is_the_type_name(message: str) -> None:
    assert first_line(ValueError(message)) == "ValueError"
    assert first_line(KeyboardInterrupt()) == "KeyboardInterrupt"


def test_first_line_of_a_multi_line_message() -> None:
    assert first_line(RuntimeError("\n  first problem  \nsecond\nthird")) == "first problem"
    assert first_line(OSError("only line")) == "only line"


def _two_layers(width: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, 1))


def test_load_strict_loads_a_matching_state() -> None:
    source, target = _two_layers(), _two_layers()
    load_strict(target, source.state_dict(), what="weights do not fit", where="run")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (_two_layers(width=5).state_dict(), "size mismatch for 0.weight"),
        ({}, "Missing key(s) in state_dict"),
        ({**_two_layers().state_dict(), "extra": torch.zeros(1)}, "Unexpected key(s)"),
    ],
)
def test_load_strict_turns_a_mismatch_into_one_line(state: dict, reason: str) -> None:
    with pytest.raises(DrbfrError) as caught:
        load_strict(_two_layers(), state, what="head weights do not match", where="/runs/a")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("/runs/a: head weights do not match (")
    assert reason in message
    assert "Error(s) in loading" not in message  # torch's header says nothing useful


def test_load_strict_raises_the_error_type_asked_for() -> None:
    with pytest.raises(WeightsCorruptError, match="parsenet: not a ParseNet checkpoint"):
        load_strict(
            _two_layers(), {}, what="not a ParseNet checkpoint", where="parsenet",
            error=WeightsCorruptError,
        )  # fmt: skip


def test_load_strict_shortens_a_long_key_list() -> None:
    wide = nn.ModuleList(nn.Linear(1, 1) for _ in range(200))
    with pytest.raises(DrbfrError) as caught:
        load_strict(wide, {}, what="weights do not fit", where="x")
    assert len(str(caught.value)) < 260 and str(caught.value).endswith("...)")
