"""`drbfr inspect`: each face's degradation estimate (blur, downscale, noise, JPEG quality,
severity), without restoring it; for triage of an archive before (or instead of) a restore."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from drbfr_cli.cli import detect_options as detection
from drbfr_cli.cli.common import (
    ERROR,
    EXIT_PARTIAL,
    NOTE,
    console,
    err_console,
    fail,
    print_line,
    user_errors,
)
from drbfr_cli.faces.detect import DEFAULT_MAX_SIDE
from drbfr_cli.imaging import max_pixels_from_env

if TYPE_CHECKING:
    from drbfr_cli.inspect import ImageReport

_DETECT = detection.DETECT_PANEL


def inspect(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders (recursive), glob patterns, or - to read paths from stdin."
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            help="Model bundle folder or name whose E_DR and degradation head estimate "
            "(default: drbfr-small, shipped with drbfr)."
        ),
    ] = None,
    weights_dir: Annotated[
        Path | None, typer.Option(help="Look here first for weight files and bundles.")
    ] = None,
    aligned: Annotated[
        bool,
        typer.Option(
            help="Inputs are faces already aligned to the FFHQ template.", rich_help_panel=_DETECT
        ),
    ] = False,
    detector: detection.DetectorOption = None,
    det_threshold: detection.DetThresholdOption = None,
    det_retry: detection.DetRetryOption = None,
    det_size: detection.DetSizeOption = DEFAULT_MAX_SIDE,
    min_face: detection.MinFaceOption = 0.0,
    max_faces: detection.MaxFacesOption = None,
    only_center_face: detection.OnlyCenterFaceOption = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    json_lines: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON line per face on stdout: image, face, sigma, r, delta, q, "
            "severity, box, score.",
        ),
    ] = False,
    max_pixels: Annotated[
        int, typer.Option(help="Refuse larger images (decompression-bomb guard).")
    ] = max_pixels_from_env(),
) -> None:
    """Detect and align every face as drbfr restore does, and print its degradation estimate:
    blur sigma (px), downscale r, noise delta (0-255), JPEG quality q and a severity in [0, 1]
    (0 clean, 1 detail gone). Nothing is restored or written. Exit code 0, or 1 when an image
    could not be read, 2 for unusable options, inputs or models."""
    detect = detection.detect_options(
        det_threshold, det_retry, min_face, max_faces, only_center_face, det_size
    )
    with user_errors():
        from drbfr_cli.bundle import load_bundle_estimator, read_manifest, resolve_bundle
        from drbfr_cli.devices import resolve_device
        from drbfr_cli.inspect import inspect_images
        from drbfr_cli.restore.tools import ToolChoices, build_face_detector

        sources = _sources(inputs)
        chosen = resolve_device(device)
        path = resolve_bundle(model, weights_dir)
        estimator = load_bundle_estimator(path).to(chosen)
        face_size = int(read_manifest(path)["face_size"])
        notice = _notice
        choices = ToolChoices(device=str(chosen), weights_dir=weights_dir, detector=detector)
        found = None if aligned else build_face_detector(choices, notice)
        reports = inspect_images(
            sources, estimator, face_size=face_size, detector=found, detect=detect,
            aligned=aligned, max_pixels=max_pixels,
        )  # fmt: skip
        failed = sum(_print_report(report, json_lines) for report in reports)
    if failed:
        raise typer.Exit(EXIT_PARTIAL)


def _notice(message: str) -> None:
    print_line(err_console, NOTE, message)


def _sources(arguments: list[str]):
    """The images to inspect, in a fixed order; none at all is a one-line error (exit 2)."""
    from drbfr_cli.imaging import STDIN_ARGUMENT, find_sources

    stdin = sys.stdin if STDIN_ARGUMENT in arguments else ()
    sources = find_sources(arguments, stdin)
    if not sources:
        where = ", ".join("stdin" if a == STDIN_ARGUMENT else a for a in arguments)
        raise fail(f"no images found in {where}")
    return sources


def _print_report(report: ImageReport, json_lines: bool) -> bool:
    """Print an image's faces (or its error, on stderr); True when it failed."""
    path = str(report.source.path)
    if report.error is not None:
        print_line(err_console, ERROR, report.error)
        return True
    if not report.faces:
        _notice(f"{path}: no face found")
    for face in report.faces:
        e = face.estimate
        if json_lines:
            line = {"image": path, "face": face.index, **e.as_dict()}
            line |= {"box": face.box, "score": face.score}
            sys.stdout.write(json.dumps(line) + "\n")
        else:
            print_line(
                console,
                "",
                f"{path} face {face.index}: severity {e.severity:.2f} · blur {e.sigma:.1f} px "
                f"· scale 1/{e.r:.1f} · noise {e.delta:.0f} · JPEG {e.q:.0f}",
            )
    return False
