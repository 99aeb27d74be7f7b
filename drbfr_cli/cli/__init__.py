"""The command-line interface: Typer only, one module per command group (see main.py)."""
