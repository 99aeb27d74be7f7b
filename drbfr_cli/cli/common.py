"""Shared CLI plumbing: consoles, one-line errors, option parsing helpers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from drbfr_cli.errors import DrbfrError

# Pipes and logs get full-width lines (paths are never folded); terminals use their own width.
_LOG_WIDTH = 200
console = Console(width=None if sys.stdout.isatty() else _LOG_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _LOG_WIDTH)

EXIT_USER_ERROR = 2
"""Exit code for bad input or environment (one-line message printed)."""
EXIT_PARTIAL = 1
"""Exit code when a batch finished but some items failed (each reported)."""


def fail(message: str, code: int = EXIT_USER_ERROR) -> typer.Exit:
    """Print a one-line error on stderr and return the Exit to raise (the message is printed
    as is: brackets in it, as in `drbfr[identity]`, are not rich markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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
