"""User-facing errors: each carries a one-line, actionable message."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # errors.py stays free of torch: the CLI imports it before any model
    import torch


class DrbfrError(Exception):
    """An error caused by input, configuration or environment; shown as one line, no traceback."""


class ImageReadError(DrbfrError):
    """An image file that cannot be read: missing, empty, not an image, truncated, too large."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class ImageWriteError(DrbfrError):
    """An output that cannot be written (unwritable folder, full disk, unknown extension)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message, or its type name when it has none."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


_STATE_DICT_HEADER = "Error(s) in loading state_dict"
_REASON_CHARS = 200


def _mismatch_reason(exc: RuntimeError) -> str:
    """torch opens a state-dict mismatch with a header line and names each problem on a line
    below it: the first of those, shortened (a missing-key list can run to thousands)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith(_STATE_DICT_HEADER):
        reason = lines[1]
    else:
        reason = first_line(exc)
    return reason if len(reason) <= _REASON_CHARS else reason[: _REASON_CHARS - 3] + "..."


def load_strict(
    module: torch.nn.Module,
    state: Mapping[str, Any],
    *,
    what: str,
    where: Path | str,
    error: type[DrbfrError] = DrbfrError,
) -> None:
    """`module.load_state_dict(state, strict=True)`; a mismatch raises `error` with one line,
    `"{where}: {what} ({reason})"`, e.g. what="vae weights do not match its config"."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise error(f"{where}: {what} ({_mismatch_reason(exc)})") from None
