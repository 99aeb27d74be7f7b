"""The face-detection options of `drbfr restore`, `drbfr align` and `drbfr inspect`, declared
once, and the DetectOptions they build. `--detector` (restore's automatic choice) is restore's
and inspect's; align keeps its own, whose default is YuNet."""

from __future__ import annotations

from typing import Annotated

import typer

from drbfr_cli.faces.detect import DetectOptions, DetectorKind

DETECT_PANEL = "Detection"

DetectorOption = Annotated[
    DetectorKind | None,
    typer.Option(
        help="Face detector (default: retinaface when its weights are in a weights folder, "
        "else the first of retinaface-mobile, yunet found there, else retinaface, fetched).",
        show_default=False,
        rich_help_panel=DETECT_PANEL,
    ),
]

DetThresholdOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Minimum detection score (default: 0.97 RetinaFace, 0.6 YuNet).",
        rich_help_panel=DETECT_PANEL,
    ),
]

DetRetryOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="When no face reaches --det-threshold, take the faces scoring at least this "
        "(degraded photos score low; default: 0.6 RetinaFace, 0.4 YuNet; 0: no second look).",
        rich_help_panel=DETECT_PANEL,
    ),
]

DetSizeOption = Annotated[
    int,
    typer.Option(
        min=0,
        help="Detect on images downscaled to this longest side (0: their own size).",
        rich_help_panel=DETECT_PANEL,
    ),
]

MinFaceOption = Annotated[
    float,
    typer.Option(
        min=0.0, help="Ignore faces smaller than this (px).", rich_help_panel=DETECT_PANEL
    ),
]

MaxFacesOption = Annotated[
    int | None,
    typer.Option(
        min=1, help="Keep at most N faces per image, largest first.", rich_help_panel=DETECT_PANEL
    ),
]

OnlyCenterFaceOption = Annotated[
    bool,
    typer.Option(help="Keep only the face nearest the centre.", rich_help_panel=DETECT_PANEL),
]


def detect_options(
    threshold: float | None,
    retry: float | None,
    min_face: float,
    max_faces: int | None,
    only_center_face: bool,
    max_side: int,
) -> DetectOptions:
    """--det-threshold, --det-retry, --min-face, --max-faces, --only-center-face, --det-size
    (0: the image's own size)."""
    return DetectOptions(
        threshold=threshold,
        retry_threshold=retry,
        min_face=min_face,
        max_faces=max_faces,
        only_center_face=only_center_face,
        max_side=max_side or None,
    )
