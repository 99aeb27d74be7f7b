"""`drbfr weights list|fetch|verify|path`: the checkpoints drbfr knows about, on this machine."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from drbfr_cli import weights
from drbfr_cli.cli.common import (
    ERROR,
    EXIT_PARTIAL,
    EXIT_USER_ERROR,
    console,
    err_console,
    fail,
    print_line,
    user_errors,
)
from drbfr_cli.errors import DrbfrError
from drbfr_cli.weights import Status, WeightCheck

app = typer.Typer(
    help="List, download and verify the checkpoints drbfr uses.", no_args_is_help=True
)

WeightsDir = typer.Option(
    None,
    "--weights-dir",
    file_okay=False,
    help="Look here first (then $DRBFR_HOME/weights, then ~/.cache/drbfr/weights); "
    "downloads go to the first of these.",
)

_STYLE = {
    Status.VALID: "green",
    Status.UNVERIFIED: "yellow",
    Status.CORRUPT: "bold red",
    Status.MISSING: "dim",
}


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _status_cell(result: WeightCheck) -> str:
    return f"[{_STYLE[result.status]}]{result.status.value}[/]"


@app.command("list")
def list_weights(weights_dir: Path | None = WeightsDir) -> None:
    """Every known checkpoint: present or not, size, licence, path (sizes checked, not hashed)."""
    results = weights.check_all(weights_dir, hash_file=False)
    folders = ", ".join(str(d) for d in weights.search_dirs(weights_dir))
    table = Table(title=f"drbfr weights (searched: {folders})", show_edge=False)
    for column in ("name", "present", "size", "licence", "path"):
        table.add_column(column, overflow="fold")
    for result in results:
        present = "no" if result.status is Status.MISSING else "yes"
        if result.status is Status.CORRUPT:
            present = "[bold red]corrupt[/]"
        size = result.size if result.size is not None else result.spec.size
        path = str(result.path) if result.path else f"[dim]{result.spec.filename}[/]"
        table.add_row(result.spec.name, present, _size(size), result.spec.licence, path)
    console.print(table)


@app.command("verify")
def verify(
    names: list[str] | None = typer.Argument(None, help="Entries to check (default: all)."),
    weights_dir: Path | None = WeightsDir,
) -> None:
    """Re-hash every checkpoint present and compare with the registry (exit 1 if any is corrupt)."""
    with user_errors():
        selected = names or list(weights.REGISTRY)
        for name in selected:
            weights.spec(name)
        results = [weights.check(name, weights_dir) for name in selected]
    table = Table(title="drbfr weights verify", show_edge=False)
    for column in ("name", "status", "path", "detail"):
        table.add_column(column, overflow="fold")
    for result in results:
        path = str(result.path) if result.path else ""
        table.add_row(result.spec.name, _status_cell(result), path, result.detail)
    console.print(table)
    counts = {s: sum(r.status is s for r in results) for s in Status}
    console.print(", ".join(f"{s.value} {counts[s]}" for s in Status), highlight=False)
    if counts[Status.CORRUPT]:
        raise typer.Exit(EXIT_PARTIAL)


@app.command("fetch")
def fetch(
    names: list[str] | None = typer.Argument(None, help="Entries to download."),
    all_: bool = typer.Option(False, "--all", help="Fetch every downloadable entry."),
    weights_dir: Path | None = WeightsDir,
    timeout: float = typer.Option(10.0, min=0.1, help="Connect / read timeout in seconds."),
) -> None:
    """Download checkpoints (resumable; sha256 checked before the file gets its name)."""
    if all_:
        downloadable = weights.Availability.DOWNLOAD
        names = [n for n, s in weights.REGISTRY.items() if s.availability is downloadable]
    if not names:
        raise fail("name at least one entry (see `drbfr weights list`) or pass --all")
    with user_errors():
        for name in names:
            weights.spec(name)
    failed = 0
    for name in names:
        try:
            path = _fetch_one(name, weights_dir, timeout)
        except DrbfrError as exc:
            print_line(err_console, ERROR, exc)
            failed += 1
        else:
            print_line(console, "", f"{name}: {path}")
    if failed:
        raise typer.Exit(EXIT_PARTIAL if failed < len(names) else EXIT_USER_ERROR)


def _fetch_one(name: str, weights_dir: Path | None, timeout: float) -> Path:
    columns = (
        TextColumn(name),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(name, total=weights.spec(name).size)

        def on_progress(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        return weights.fetch(name, weights_dir, on_progress=on_progress, timeout=timeout)


@app.command("path")
def path(
    name: str = typer.Argument(..., help="Entry name."), weights_dir: Path | None = WeightsDir
) -> None:
    """Print the path of NAME's file (exit 2 with a hint if it is not present)."""
    with user_errors():
        found = weights.require(name, weights_dir)
    typer.echo(str(found))
