"""Shared CLI plumbing: consoles, one-line errors, option parsing helpers."""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

from drbfr_cli.errors import DrbfrError

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn

    from drbfr_cli.diffusion.sampling_config import SamplingOverrides

# Pipes and logs get full-width lines (paths are never folded); terminals use their own width.
_LOG_WIDTH = 200
console = Console(width=None if sys.stdout.isatty() else _LOG_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _LOG_WIDTH)

EXIT_USER_ERROR = 2
"""Exit code for bad input or environment (one-line message printed)."""
EXIT_PARTIAL = 1
"""Exit code when a batch finished but some items failed (each reported)."""
ERROR = "[bold red]error:[/]"
NOTE = "[yellow]note:[/]"
_SURROGATES = range(0xDC80, 0xDD00)
"""How Python holds the bytes of a file name that are not UTF-8 (os.fsdecode)."""
_BIDI = frozenset(
    "\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
"""Bidirectional overrides and line separators: they reorder or break a terminal line."""


def count_progress(
    label: str, *columns: ProgressColumn, quiet: bool = False, remaining: bool = True
) -> Progress:
    """The commands' progress bar on stderr: `label`, bar, done/total, then `columns` and the
    time remaining (or elapsed, `remaining=False`); transient, and off when `quiet`."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    clock = TimeRemainingColumn() if remaining else TimeElapsedColumn()
    head = (TextColumn(label), BarColumn(), MofNCompleteColumn())
    return Progress(*head, *columns, clock, console=err_console, transient=True, disable=quiet)


def printable(text: object) -> str:
    """`text` on one terminal line: control characters (newline, ESC, ...) and undecodable
    file-name bytes as \\xNN, bidirectional overrides and line separators as \\uNNNN."""
    return "".join(_printable(char) for char in str(text))


def _printable(char: str) -> str:
    code = ord(char)
    if code in _SURROGATES:
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(char) == "Cc":
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if char in _BIDI else char


def shown(text: object) -> str:
    """Any user-supplied text (a file name, a message quoting one) for rich: printable, and
    brackets are not markup (`[copy 2] scan.jpg`, `a[/]b.jpg` print as they are)."""
    return escape(printable(text))


def print_line(target: Console, label: str, message: object) -> None:
    """`label` (rich markup, e.g. ERROR) and `message` as plain text, on one line whatever the
    width."""
    text = f"{label} {shown(message)}" if label else shown(message)
    target.print(text, highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_USER_ERROR) -> typer.Exit:
    """Print a one-line error on stderr and return the Exit to raise (the message is printed
    as is: brackets in it, as in `drbfr[identity]`, are not rich markup)."""
    print_line(err_console, ERROR, message)
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn DrbfrError (and Ctrl-C) into a one-line message and a non-zero exit, no traceback."""
    try:
        yield
    except DrbfrError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", code=130) from None


def parse_range(text: str, name: str) -> tuple[float, float]:
    """Parse 'LO,HI' into a (lo, hi) pair with lo <= hi."""
    parts = text.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise typer.BadParameter(f"{name} expects LO,HI (two numbers), got {text!r}") from None
    if lo > hi:
        raise typer.BadParameter(f"{name}: LO must not exceed HI, got {text!r}")
    return lo, hi


def parse_fidelity(text: str | None) -> float | str | None:
    """--fidelity: None, "auto", or a number in [0, 1] (a usage error otherwise)."""
    if text is None or text.strip().lower() == "auto":
        return None if text is None else "auto"
    try:
        weight = float(text)
    except ValueError:
        raise typer.BadParameter(
            f"takes auto or a number in [0, 1]; got {text!r}", param_hint="'--fidelity'"
        ) from None
    if not 0.0 <= weight <= 1.0:
        raise typer.BadParameter(
            f"must lie in [0, 1] (or be auto); got {text}", param_hint="'--fidelity'"
        )
    return weight


def parse_sampling(fidelity: str | None, **fields: Any) -> tuple[SamplingOverrides, bool]:
    """The sampling options (SamplingOverrides fields, None where not given) over those of
    --fidelity (its text), and whether --fidelity is auto (each face's weight then comes from
    its severity, under these overrides); a value out of its range is a usage error (one line,
    exit code 2), found before any model is loaded."""
    from drbfr_cli.diffusion.sampling_config import SamplingOverrides

    weight = parse_fidelity(fidelity)
    try:
        overrides = SamplingOverrides(**fields)
        if weight == "auto":
            return overrides, True
        return overrides.with_fidelity(weight), False
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
