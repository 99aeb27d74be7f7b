"""The `drbfr` Typer app: composes one module per command group."""

from __future__ import annotations

import sys

import typer

try:  # Typer 0.22+ carries its own click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older Typer on click
    from click import exceptions as click_errors

from drbfr_cli import __version__
from drbfr_cli.cli import (
    align,
    analyze,
    bench,
    degrade,
    demo,
    doctor,
    export,
    inspect,
    report,
    restore,
    train,
    weights,
)
from drbfr_cli.cli import eval as eval_cli
from drbfr_cli.cli.common import ERROR, err_console, print_line

app = typer.Typer(
    name="drbfr",
    help="Batch blind face restoration with degradation representations (DR-BFR).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command(name="restore")(restore.restore)
app.command(name="inspect")(inspect.inspect)
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
    """Console-script entry point: a usage error is one line on stderr, exit code 2."""
    try:
        code = app(standalone_mode=False)
    except click_errors.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `drbfr` alone: the help text
            exc.show()
        else:
            print_line(err_console, ERROR, usage_line(exc))
        sys.exit(exc.exit_code)
    except click_errors.ClickException as exc:
        print_line(err_console, ERROR, exc.format_message())
        sys.exit(exc.exit_code)
    except typer.Abort:  # Ctrl-C (click raises it for KeyboardInterrupt)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def usage_line(exc: click_errors.UsageError) -> str:
    """`drbfr restore: No such option: --bogus (see drbfr restore -h)`."""
    where = exc.ctx.command_path if exc.ctx is not None else "drbfr"
    message = " ".join(exc.format_message().split())
    return f"{where}: {message} (see {where} -h)"
