"""The `drbfr` Typer app: composes one module per command group."""

from __future__ import annotations

import typer

from drbfr_cli import __version__
from drbfr_cli.cli import (
    align,
    analyze,
    bench,
    degrade,
    demo,
    doctor,
    export,
    report,
    restore,
    train,
    weights,
)
from drbfr_cli.cli import eval as eval_cli

app = typer.Typer(
    name="drbfr",
    help="Batch blind face restoration with degradation representations (DR-BFR).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command(name="restore")(restore.restore)
app.command(name="degrade")(degrade.degrade)
app.command(name="align")(align.align)
app.add_typer(eval_cli.app, name="eval")
app.add_typer(weights.app, name="weights")
app.command(name="doctor")(doctor.doctor)
app.add_typer(train.app, name="train")
app.add_typer(analyze.app, name="analyze")
app.command(name="export")(export.export)
app.command(name="demo")(demo.demo)
app.add_typer(bench.app, name="bench")
app.add_typer(report.app, name="report")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"drbfr {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Batch blind face restoration with degradation representations (DR-BFR)."""


def run() -> None:
    """Console-script entry point."""
    app()
