"""`drbfr report merge OUT`: report.json (and CSV) from the report parts of a sharded restore."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drbfr_cli.cli.common import console, print_line, user_errors

app = typer.Typer(help="Restore reports.", no_args_is_help=True)


@app.command()
def merge(
    out: Annotated[Path, typer.Argument(help="The output folder of a `drbfr restore` run.")],
    gallery: Annotated[
        bool, typer.Option(help="Write OUT/index.html from the merged report.")
    ] = True,
) -> None:
    """Merge the report parts the ranks of a multi-process restore wrote into report.json.

    The last rank to finish does this itself; run it by hand when that rank could not.
    """
    from drbfr_cli.gallery.page import check_targets
    from drbfr_cli.gallery.restore import write_run_gallery
    from drbfr_cli.restore.merge import merge_reports

    with user_errors():
        if gallery:
            check_targets(out)
        summary = merge_reports(out)
        if gallery:
            write_run_gallery(out, lambda message: print_line(console, "note:", message))
    print_line(
        console,
        "",
        f"{out / 'report.json'}: {summary.images} images ({summary.restored} restored, "
        f"{summary.skipped} skipped, {summary.failed} failed)",
    )
