"""Whole `restore_images` runs of the restore benchmark: the stages around the model (read,
detect, align, face resize, background and paste, write) from the records of runs with the
identity restorer, runs at a batch size (cross-image batches) and at batch 1, and the scaling
of a run with image size and with the number of faces per image.

Every time here is the real run's: the seconds each image's record gives each stage
(restore/prepare.py and finish.py time them as it runs), and the wall time of the run.
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from drbfr_cli.benchmark.inputs import KnownFacesDetector, face_canvas, random_realesrgan
from drbfr_cli.benchmark.measure import measure
from drbfr_cli.choices import Background
from drbfr_cli.imaging import ImageSource, collect_images, read_image, write_image
from drbfr_cli.restore.background import LanczosUpsampler, ResizeUpsampler
from drbfr_cli.restore.options import RestoreOptions, RestoreTools
from drbfr_cli.restore.report import ImageRecord, RunSummary
from drbfr_cli.restore.restorer import FaceRestorer, IdentityRestorer
from drbfr_cli.restore.run import restore_images


@dataclass(frozen=True, kw_only=True)
class RunInputs:
    """What the whole runs restore, and how: `drbfr restore`'s own options and tools (the
    restorer and the output folder are set by each run)."""

    sources: list[ImageSource]
    options: RestoreOptions
    tools: RestoreTools
    detector: str
    """The detector's name, for the tables ("none" with --aligned inputs)."""
    background: str


def run_inputs(
    sources: list[ImageSource],
    *,
    aligned: bool,
    detector=None,
    detector_name: str = "none",
    upsampler=None,
    background: str = "none",
    upscale: float = 2.0,
) -> RunInputs:
    """RunInputs for whole photos (a detector and an upsampler) or aligned faces (neither)."""
    options = RestoreOptions(out_dir=Path("."), aligned=aligned, upscale=upscale, overwrite=True)
    tools = RestoreTools(restorer=IdentityRestorer(), detector=detector, upsampler=upsampler)
    return RunInputs(
        sources=sources, options=options, tools=tools, detector=detector_name, background=background
    )


def build_upsampler(kind: Background, scale: float, *, device: str, half: bool, tile: int = 400):
    """lanczos, none (a plain resize) or realesrgan (the release network, random weights)."""
    if kind is Background.LANCZOS:
        return LanczosUpsampler(scale=scale)
    if kind is Background.NONE:
        return ResizeUpsampler(scale=scale)
    return random_realesrgan(scale, tile=tile, device=device, half=half)


def run_once(
    inputs: RunInputs, restorer: FaceRestorer, batch: int, out_dir: Path
) -> tuple[RunSummary, list[ImageRecord]]:
    """One `restore_images` run into a fresh `out_dir`: its totals and its images' records."""
    shutil.rmtree(out_dir, ignore_errors=True)
    records: list[ImageRecord] = []
    summary = restore_images(
        inputs.sources,
        replace(inputs.options, out_dir=out_dir, batch_size=batch),
        replace(inputs.tools, restorer=restorer),
        on_record=records.append,
    )
    return summary, records


# ---------------------------------------------------------------------------------------------
# Stage by stage


def stage_seconds(records: Sequence[ImageRecord]) -> dict[str, float]:
    """Each stage's seconds summed over the records of one run, in the records' order."""
    totals: dict[str, float] = {}
    for record in records:
        for stage, seconds in record.timings.items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    return totals


def stage_times(
    inputs: RunInputs, face_size: int, scratch: Path, *, repeats: int, warmup: int
) -> dict[str, Any]:
    """Seconds per image (and per face) of each stage around the model: `warmup` and then
    `repeats` whole runs with the identity restorer at the model's face size (its `restore`:
    the resize to that size and back), each stage's median over the measured runs as the
    records of their images give it."""
    runs = []
    for index in range(warmup + repeats):
        _, records = run_once(inputs, IdentityRestorer(face_size), 1, scratch / "stages")
        if index >= warmup:
            runs.append(stage_seconds(records))
    shutil.rmtree(scratch / "stages", ignore_errors=True)
    stages = list(runs[0])
    totals = {k: statistics.median(run.get(k, 0.0) for run in runs) for k in stages}
    faces = len([face for record in records for face in record.faces])
    count = len(records)
    return {
        "images": count,
        "faces": faces,
        "detector": inputs.detector,
        "background": inputs.background,
        "seconds_per_image": {k: v / max(count, 1) for k, v in totals.items()},
        "seconds_per_face": {k: v / max(faces, 1) for k, v in totals.items()},
    }


# ---------------------------------------------------------------------------------------------
# Whole runs


def pipeline_row(
    inputs: RunInputs,
    restorer: FaceRestorer,
    batch: int,
    out_dir: Path,
    *,
    device: torch.device,
    repeats: int,
) -> dict[str, Any]:
    """`restore_images` over the inputs with `batch` faces per restorer call (gathered across
    images); `repeats` whole runs, the median reported, the stage times of the last one."""
    runs: list[tuple[RunSummary, list[ImageRecord]]] = []
    measurement = measure(
        lambda: runs.append(run_once(inputs, restorer, batch, out_dir)),
        device=device,
        repeats=repeats,
        warmup=0,
    )
    summary, records = runs[-1]
    shutil.rmtree(out_dir, ignore_errors=True)
    images = summary.restored
    return {
        "batch": batch,
        "images": images,
        "faces": summary.faces_restored,
        "failed": summary.failed,
        "images_per_s": images / measurement.seconds,
        "faces_per_s": summary.faces_restored / measurement.seconds,
        "stage_seconds_per_image": {
            k: v / max(images, 1) for k, v in stage_seconds(records).items()
        },
        **measurement.to_dict(),
    }


def batching_runs(
    inputs: RunInputs,
    restorer: FaceRestorer,
    batch: int,
    scratch: Path,
    *,
    device: torch.device,
    repeats: int,
) -> dict[str, Any]:
    """Whole runs with cross-image batches of `batch` faces and with one face per call."""
    rows = [
        pipeline_row(
            inputs, restorer, size, scratch / f"run_b{size}", device=device, repeats=repeats
        )
        for size in sorted({1, batch})
    ]
    result: dict[str, Any] = {"rows": rows}
    if batch > 1:
        result["speedup_vs_one_face_loop"] = rows[1]["faces_per_s"] / rows[0]["faces_per_s"]
    return result


# ---------------------------------------------------------------------------------------------
# Scaling


def _resize_longest(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    factor = side / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return np.clip(cv2.resize(image, size, interpolation=interpolation), 0.0, 1.0)


def _write_copies(folder: Path, image: np.ndarray, copies: int, suffix: str) -> list[ImageSource]:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(copies):
        write_image(folder / f"copy_{index:02d}{suffix}", image)
    return collect_images([folder])


def _whole_images(inputs: RunInputs, detector, detector_name: str) -> RunInputs:
    """The inputs as whole images found by `detector`, on their own upsampler or a Lanczos
    one."""
    tools = replace(inputs.tools, detector=detector)
    background = inputs.background
    if tools.upsampler is None:
        tools = replace(tools, upsampler=LanczosUpsampler(scale=inputs.options.upscale))
        background = "lanczos"
    return replace(
        inputs,
        options=replace(inputs.options, aligned=False),
        tools=tools,
        detector=detector_name,
        background=background,
    )


def image_size_rows(
    inputs: RunInputs,
    restorer: FaceRestorer,
    sides: Sequence[int],
    aligned_face: np.ndarray,
    scratch: Path,
    *,
    batch: int,
    copies: int,
    device: torch.device,
    repeats: int,
) -> list[dict[str, Any]]:
    """Whole runs over `copies` copies of one picture: an aligned 512 px face (--aligned), then
    the first input photo (or a one-face canvas) with its longest side at each of `sides`."""
    aligned = replace(
        inputs,
        options=replace(inputs.options, aligned=True),
        tools=replace(inputs.tools, detector=None, upsampler=None),
        detector="none",
        sources=_write_copies(scratch / "aligned", aligned_face, copies, ".png"),
    )
    run = dict(device=device, repeats=repeats)
    rows = [
        {
            "input": "aligned face",
            "side": aligned_face.shape[0],
            **pipeline_row(aligned, restorer, batch, scratch / "out", **run),
        }
    ]
    if inputs.options.aligned or not inputs.sources:
        canvas = face_canvas([aligned_face], 1)
        picture, suffix, what = canvas.image, ".png", "canvas with 1 face"
        whole = _whole_images(inputs, KnownFacesDetector(canvas.landmarks), "known positions")
    else:
        source = inputs.sources[0]
        picture, suffix = read_image(source.path).rgb, source.path.suffix.lower()
        whole, what = inputs, f"photo {source.path.name}"
    for side in sides:
        folder = scratch / f"side_{side}"
        sized = replace(
            whole, sources=_write_copies(folder, _resize_longest(picture, side), copies, suffix)
        )
        row = pipeline_row(sized, restorer, batch, scratch / "out", **run)
        rows.append({"input": what, "side": side, **row})
    return rows


def face_count_rows(
    inputs: RunInputs,
    restorer: FaceRestorer,
    counts: Sequence[int],
    faces: Sequence[np.ndarray],
    scratch: Path,
    *,
    batch: int,
    copies: int,
    device: torch.device,
    repeats: int,
) -> list[dict[str, Any]]:
    """Whole runs over `copies` canvases of the same size holding k faces each (k in
    `counts`), with a detector that reports the faces' known places."""
    rows = []
    for count in counts:
        canvas = face_canvas(faces, count)
        placed = _whole_images(inputs, KnownFacesDetector(canvas.landmarks), "known positions")
        folder = scratch / f"faces_{count}"
        placed = replace(placed, sources=_write_copies(folder, canvas.image, copies, ".png"))
        row = pipeline_row(placed, restorer, batch, scratch / "out", device=device, repeats=repeats)
        rows.append({"faces_per_image": count, "side": canvas.image.shape[0], **row})
    return rows
