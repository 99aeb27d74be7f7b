"""`drbfr doctor`: environment, devices, weights, the detector and one face restored."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from drbfr_cli import doctor as doctor_lib
from drbfr_cli.cli.common import EXIT_PARTIAL, console
from drbfr_cli.doctor import Level

_STYLE = {Level.OK: "green", Level.INFO: "dim", Level.WARN: "yellow", Level.FAIL: "bold red"}


def doctor(
    weights_dir: Path | None = typer.Option(
        None, "--weights-dir", file_okay=False, help="Weights folder to look in first."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model bundle folder or name to check (default: drbfr-small)."
    ),
) -> None:
    """Report Python, torch, devices, package versions and weights, and run quick checks
    whose output is compared with what it must be: Eq. (11), the YuNet detector on a real photo,
    one face restored with the model (exit 1 if any check fails)."""
    start = time.perf_counter()
    findings = doctor_lib.run(weights_dir, model)
    table = Table(title="drbfr doctor", show_edge=False)
    for column in ("section", "item", "", "detail"):
        table.add_column(column, overflow="fold")
    for finding in findings:
        mark = f"[{_STYLE[finding.level]}]{finding.level.value}[/]"
        table.add_row(finding.section, finding.name, mark, finding.detail)
    console.print(table)
    failures = [f for f in findings if f.level is Level.FAIL]
    warnings = [f for f in findings if f.level is Level.WARN]
    seconds = time.perf_counter() - start
    verdict = f"{len(failures)} problem(s)" if failures else "all checks passed"
    if warnings and not failures:
        verdict += f", {len(warnings)} warning(s)"
    console.print(f"{verdict} in {seconds:.1f} s", highlight=False)
    if failures:
        raise typer.Exit(EXIT_PARTIAL)
