"""`drbfr align`: detect every face of whole photos and write FFHQ-aligned crops.

Parses the options and builds the detector; `drbfr_cli.crops.align_images` does the work.
This module only prints (progress, per-image errors and no-face lines, the summary) and sets the
exit code.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from drbfr_cli.batch import ItemStatus
from drbfr_cli.cli import detect_options as detection
from drbfr_cli.cli.common import (
    ERROR,
    EXIT_PARTIAL,
    console,
    count_progress,
    err_console,
    fail,
    print_line,
    user_errors,
)
from drbfr_cli.crops import AlignOptions, CropFormat, ImageOutcome
from drbfr_cli.faces.align import FACE_SIZE
from drbfr_cli.faces.detect import DEFAULT_MAX_SIDE, DetectorKind
from drbfr_cli.imaging import max_pixels_from_env

if TYPE_CHECKING:
    from rich.progress import Progress

    from drbfr_cli.crops import AlignSummary

_DETECT = detection.DETECT_PANEL
_OUTPUT = "Output"


def align(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders (recursive), glob patterns, or - to read paths from stdin."
        ),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder for the face crops.")],
    size: Annotated[
        int,
        typer.Option(
            min=16,
            help="Side of the square crops (the FFHQ 512 template, scaled).",
            rich_help_panel=_OUTPUT,
        ),
    ] = FACE_SIZE,
    detector: Annotated[
        DetectorKind, typer.Option(help="Face detector.", rich_help_panel=_DETECT)
    ] = DetectorKind.YUNET,
    det_threshold: detection.DetThresholdOption = None,
    det_retry: detection.DetRetryOption = None,
    det_size: detection.DetSizeOption = DEFAULT_MAX_SIDE,
    min_face: detection.MinFaceOption = 0.0,
    max_faces: detection.MaxFacesOption = None,
    only_center_face: detection.OnlyCenterFaceOption = False,
    weights_dir: Annotated[
        Path | None, typer.Option(help="Look here first for the detector's weights.")
    ] = None,
    ext: Annotated[
        CropFormat, typer.Option(help="Crop file format.", rich_help_panel=_OUTPUT)
    ] = CropFormat.PNG,
    quality: Annotated[
        int, typer.Option(min=1, max=100, help="JPEG quality.", rich_help_panel=_OUTPUT)
    ] = 95,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Redo images an earlier run finished (default: skip them).",
            rich_help_panel=_OUTPUT,
        ),
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="Images processed at once (threads).")] = 1,
    max_pixels: Annotated[
        int, typer.Option(help="Refuse larger images (decompression-bomb guard).")
    ] = max_pixels_from_env(),
) -> None:
    """Write every face of the input images, aligned to the FFHQ template, as
    OUT/<name>_NN.<ext> (00: the largest face), and OUT/manifest.jsonl (one line per face).

    Images finished by an earlier run are skipped, so an interrupted run resumes with the same
    command. The exit code is 0 when every image was read (with or without faces), 1 when some
    failed (each is reported), 2 for unusable options, inputs, weights or output folders.
    """
    try:
        options = AlignOptions(
            out_dir=out,
            size=size,
            detect=detection.detect_options(
                det_threshold, det_retry, min_face, max_faces, only_center_face, det_size
            ),
            ext=ext,
            quality=quality,
            overwrite=overwrite,
            max_pixels=max_pixels,
            workers=workers,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    with user_errors():
        summary = _run(inputs, options, detector, weights_dir)
    _print_summary(summary)
    if summary.failed:
        raise typer.Exit(EXIT_PARTIAL)


def _run(
    arguments: list[str], options: AlignOptions, kind: DetectorKind, weights_dir: Path | None
) -> AlignSummary:
    """Find the inputs and align them with a progress bar; per-image problems are printed."""
    import cv2

    from drbfr_cli.crops import align_images
    from drbfr_cli.faces.detect import build_detector
    from drbfr_cli.imaging import find_sources

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # no DNN backend chatter
    stdin = sys.stdin if "-" in arguments else ()
    sources = find_sources(arguments, stdin, exclude=[options.out_dir])
    if not sources:
        where = ", ".join("stdin" if a == "-" else a for a in arguments)
        raise fail(f"no images found in {where}")
    quiet = not err_console.is_terminal  # no bar in logs and pipes, only the lines below
    with count_progress("aligning", quiet=quiet) as progress:
        task = progress.add_task("align", total=len(sources))

        def on_outcome(outcome: ImageOutcome) -> None:
            _print_outcome(outcome, progress)
            progress.advance(task)

        return align_images(
            sources, options, partial(build_detector, kind, weights_dir), on_outcome=on_outcome
        )


def _print_outcome(outcome: ImageOutcome, progress: Progress) -> None:
    if outcome.status is ItemStatus.FAILED:
        print_line(progress.console, ERROR, outcome.error)
    elif outcome.status is ItemStatus.NO_FACE:
        print_line(progress.console, "[yellow]no face:[/]", outcome.source.path)


def _print_summary(summary: AlignSummary) -> None:
    skipped = ""
    if summary.images_skipped:
        skipped = (
            f", {summary.faces_skipped} kept from {summary.images_skipped} images finished before"
        )
    print_line(
        console,
        "",
        f"drbfr align: {summary.images} images, {summary.faces_written} faces written{skipped}, "
        f"{len(summary.no_face)} images with no face, {summary.failed} failed "
        f"in {summary.seconds:.1f} s; manifest: {summary.manifest}",
    )
