"""`drbfr degrade`: build a synthetic LQ test set from HQ faces (paper Eq. 11)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from rich.table import Table

from drbfr_cli.batch import ItemStatus
from drbfr_cli.cli.common import (
    ERROR,
    EXIT_PARTIAL,
    console,
    count_progress,
    err_console,
    fail,
    parse_range,
    print_line,
    user_errors,
)
from drbfr_cli.degradations import DegradationRanges
from drbfr_cli.imaging import collect_images, max_pixels_from_env
from drbfr_cli.synthetic import MANIFEST_NAME, DegradeConfig, DegradeOutcome, make_lq_set

_DEFAULTS = DegradationRanges()


def _fmt(pair: tuple[float, float]) -> str:
    return f"{pair[0]:g},{pair[1]:g}"


def degrade(
    inputs: list[Path] = typer.Argument(..., help="HQ image folders (recursive) or files."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder for the LQ images."),
    seed: int = typer.Option(0, help="Run seed; each image's seed derives from it and its path."),
    size: int = typer.Option(512, min=0, help="Square side of the HQ/LQ pairs (0: keep size)."),
    blur: str = typer.Option(_fmt(_DEFAULTS.blur), help="Gaussian blur sigma range LO,HI."),
    scale: str = typer.Option(_fmt(_DEFAULTS.scale), help="Downsampling factor r range LO,HI."),
    noise: str = typer.Option(_fmt(_DEFAULTS.noise), help="Noise std (0-255 scale) range LO,HI."),
    jpeg: str = typer.Option(_fmt(_DEFAULTS.jpeg), help="JPEG quality range LO,HI."),
    workers: int = typer.Option(
        min(4, os.cpu_count() or 1), min=1, help="Parallel worker processes."
    ),
    hq_out: Path | None = typer.Option(
        None, help="Also write the prepared (cropped, resized) HQ images here, for paired eval."
    ),
    overwrite: bool = typer.Option(False, help="Replace outputs that already exist."),
    max_pixels: int = typer.Option(
        max_pixels_from_env(), help="Refuse larger images (decompression-bomb guard)."
    ),
) -> None:
    """Degrade HQ faces with random Eq. (11) parameters into OUT, same relative paths, plus a
    degradations.jsonl manifest that rebuilds the set exactly (the CelebA-Test protocol)."""
    try:
        ranges = DegradationRanges(
            blur=parse_range(blur, "--blur"),
            scale=parse_range(scale, "--scale"),
            noise=parse_range(noise, "--noise"),
            jpeg=parse_range(jpeg, "--jpeg"),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    config = DegradeConfig(
        seed=seed,
        size=size,
        ranges=ranges,
        max_pixels=max_pixels,
        overwrite=overwrite,
        hq_out=hq_out,
    )
    with user_errors():
        exclude = [out] + ([hq_out] if hq_out else [])
        sources = collect_images(inputs, exclude=exclude)
        if not sources:
            raise fail("no images found in " + ", ".join(map(str, inputs)))
        start = time.perf_counter()
        outcomes = _run_with_progress(sources, out, config, workers)
    _print_summary(outcomes, out, time.perf_counter() - start)
    if any(o.status is ItemStatus.FAILED for o in outcomes):
        raise typer.Exit(EXIT_PARTIAL)


def _run_with_progress(
    sources, out: Path, config: DegradeConfig, workers: int
) -> list[DegradeOutcome]:
    quiet = not err_console.is_terminal  # no bar in logs and pipes, only the error lines
    with count_progress("degrading", quiet=quiet) as progress:
        task = progress.add_task("degrade", total=len(sources))

        def on_done(outcome: DegradeOutcome) -> None:
            if outcome.status is ItemStatus.FAILED:
                print_line(progress.console, ERROR, outcome.error)
            progress.advance(task)

        return make_lq_set(sources, out, config, workers=workers, on_done=on_done)


def _print_summary(outcomes: list[DegradeOutcome], out: Path, seconds: float) -> None:
    counts = {status: sum(o.status is status for o in outcomes) for status in ItemStatus}
    records = [o.record for o in outcomes if o.record is not None]
    table = Table(
        title=f"drbfr degrade: {len(outcomes)} images in {seconds:.1f} s", show_edge=False
    )
    for column in ("", "min", "mean", "max"):
        table.add_column(column, justify="right")
    for name, label in (
        ("sigma", "blur sigma"),
        ("r", "scale r"),
        ("delta", "noise delta"),
        ("q", "JPEG q"),
    ):
        values = [float(getattr(r, name)) for r in records]
        if values:
            table.add_row(
                label,
                f"{min(values):.2f}",
                f"{sum(values) / len(values):.2f}",
                f"{max(values):.2f}",
            )
    console.print(table)
    print_line(
        console,
        "",
        f"written {counts[ItemStatus.OK]}, unchanged {counts[ItemStatus.SKIPPED]}, "
        f"failed {counts[ItemStatus.FAILED]}; manifest: {out / MANIFEST_NAME}",
    )
