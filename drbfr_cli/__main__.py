"""`python -m drbfr_cli` runs the CLI."""

from drbfr_cli.cli.main import run

run()
