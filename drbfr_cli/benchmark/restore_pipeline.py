"""The pipeline side of the restore benchmark: the stages around the model (decode, detect,
align, face resize, background, paste, encode/write) timed one at a time on real inputs, whole
`restore_images` runs at a batch size (cross-image batches) and at batch 1, and the scaling of
a run with image size and with the number of faces per image.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from drbfr_cli.benchmark.inputs import KnownFacesDetector, face_canvas, random_realesrgan
from drbfr_cli.benchmark.measure import measure
from drbfr_cli.choices import Background
from drbfr_cli.faces.align import align_face
from drbfr_cli.faces.detect import DetectOptions, detect_faces
from drbfr_cli.faces.paste import PasteFace, paste_faces
from drbfr_cli.imaging import ImageSource, collect_images, read_image, write_image
from drbfr_cli.restore.background import LanczosUpsampler, ResizeUpsampler
from drbfr_cli.restore.batch import restore_crops
from drbfr_cli.restore.prepare import aligned_input
from drbfr_cli.restore.restorer import FaceRestorer, IdentityRestorer
from drbfr_cli.restore.run import RestoreOptions, RestoreTools, restore_images

if TYPE_CHECKING:
    from drbfr_cli.faces.detect import Detector
    from drbfr_cli.restore.background import Upsampler

PIPELINE_STAGES = (
    "decode",
    "detect",
    "align",
    "face_resize",
    "background",
    "paste",
    "encode_write",
)
"""The stages around the model, in pipeline order (face_resize: aligned crops to the model's
face size and back)."""
_CPU = torch.device("cpu")


@dataclass(frozen=True, kw_only=True)
class PipelineSetup:
    """What the pipeline runs on besides the restorer."""

    sources: list[ImageSource]
    aligned: bool
    """Inputs are aligned face crops (no detection, no background)."""
    detector: Detector | None
    detector_name: str
    upsampler: Upsampler | None
    upsampler_name: str
    upscale: float = 2.0


def build_upsampler(kind: Background, scale: float, *, device: str, half: bool, tile: int = 400):
    """lanczos, none (a plain resize) or realesrgan (the release network, random weights)."""
    if kind is Background.LANCZOS:
        return LanczosUpsampler(scale=scale)
    if kind is Background.NONE:
        return ResizeUpsampler(scale=scale)
    return random_realesrgan(scale, tile=tile, device=device, half=half)


# ---------------------------------------------------------------------------------------------
# Stage by stage


def stage_times(
    setup: PipelineSetup, face_size: int, scratch: Path, *, repeats: int, warmup: int
) -> dict[str, Any]:
    """Seconds per image of each stage around the model, each timed alone on every input
    (median of `repeats`), summed over the inputs and divided by their number."""
    totals = dict.fromkeys(PIPELINE_STAGES, 0.0)
    faces = 0
    scratch.mkdir(parents=True, exist_ok=True)
    for index, source in enumerate(setup.sources):
        target = scratch / f"{index:03d}{source.path.suffix.lower()}"
        seconds, found = _image_stage_times(
            source, setup, face_size, target, repeats=repeats, warmup=warmup
        )
        faces += found
        for stage, value in seconds.items():
            totals[stage] += value
    if setup.aligned:
        totals = {k: v for k, v in totals.items() if k not in ("detect", "background", "paste")}
    count = len(setup.sources)
    return {
        "images": count,
        "faces": faces,
        "detector": setup.detector_name,
        "background": setup.upsampler_name,
        "seconds_per_image": {k: v / count for k, v in totals.items()},
        "seconds_per_face": {k: v / max(faces, 1) for k, v in totals.items()},
    }


def _image_stage_times(
    source: ImageSource,
    setup: PipelineSetup,
    face_size: int,
    target: Path,
    *,
    repeats: int,
    warmup: int,
) -> tuple[dict[str, float], int]:
    """(seconds of each stage, faces) for one input; each stage runs on the previous one's
    output, the restored faces being the aligned crops themselves."""
    seconds: dict[str, float] = {}

    def timed(stage: str, fn) -> None:
        seconds[stage] = measure(fn, device=_CPU, repeats=repeats, warmup=warmup).seconds

    image = read_image(source.path)
    rgb = image.rgb
    timed("decode", lambda: read_image(source.path))
    if setup.aligned:
        timed("align", lambda: aligned_input(rgb))
        aligned = [aligned_input(rgb)]
    else:
        if setup.detector is None or setup.upsampler is None:
            raise ValueError("whole images need a detector and a background upsampler")
        detector, options = setup.detector, DetectOptions()
        timed("detect", lambda: detect_faces(detector, rgb, options))
        found = detect_faces(detector, rgb, options)
        timed("align", lambda: [align_face(rgb, face) for face in found])
        aligned = [align_face(rgb, face) for face in found]
    crops, seeds = [a.crop for a in aligned], list(range(len(aligned)))
    if crops:
        identity = IdentityRestorer(face_size)
        timed("face_resize", lambda: restore_crops(identity, crops, seeds))
    result = crops[0] if setup.aligned else rgb
    if not setup.aligned:
        upsampler = setup.upsampler
        timed("background", lambda: upsampler(rgb))
        background = upsampler(rgb)
        pastes = [PasteFace(a.crop, a.affine, a.size, reference=a.crop) for a in aligned]
        timed("paste", lambda: paste_faces(background, pastes, scale=setup.upscale))
        result = paste_faces(background, pastes, scale=setup.upscale)
    timed("encode_write", lambda: write_image(target, result, bit_depth=image.bit_depth))
    return seconds, len(aligned)


# ---------------------------------------------------------------------------------------------
# Whole runs


def pipeline_row(
    setup: PipelineSetup,
    restorer: FaceRestorer,
    batch: int,
    out_dir: Path,
    *,
    device: torch.device,
    repeats: int,
) -> dict[str, Any]:
    """`restore_images` over setup.sources with `batch` faces per restorer call (gathered
    across images); `repeats` whole runs (outputs overwritten), the median reported."""
    tools = RestoreTools(restorer=restorer, detector=setup.detector, upsampler=setup.upsampler)
    options = RestoreOptions(
        out_dir=out_dir,
        aligned=setup.aligned,
        batch_size=batch,
        overwrite=True,
        upscale=setup.upscale,
    )
    summaries = []
    measurement = measure(
        lambda: summaries.append(restore_images(setup.sources, options, tools)),
        device=device,
        repeats=repeats,
        warmup=0,
    )
    summary = summaries[-1]
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
            k: v / max(images, 1) for k, v in summary.stage_seconds.items()
        },
        **measurement.to_dict(),
    }


def batching_runs(
    setup: PipelineSetup,
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
            setup, restorer, size, scratch / f"run_b{size}", device=device, repeats=repeats
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


def image_size_rows(
    setup: PipelineSetup,
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
    aligned_setup = replace(
        setup,
        aligned=True,
        detector=None,
        upsampler=None,
        detector_name="none",
        sources=_write_copies(scratch / "aligned", aligned_face, copies, ".png"),
    )
    rows = [
        {
            "input": "aligned face",
            "side": aligned_face.shape[0],
            **pipeline_row(
                aligned_setup, restorer, batch, scratch / "out", device=device, repeats=repeats
            ),
        }
    ]
    if setup.aligned or not setup.sources:
        canvas = face_canvas([aligned_face], 1)
        picture, suffix = canvas.image, ".png"
        whole = replace(
            setup, detector=KnownFacesDetector(canvas.landmarks), detector_name="known positions"
        )
        if whole.upsampler is None:
            upsampler = LanczosUpsampler(scale=whole.upscale)
            whole = replace(whole, upsampler=upsampler, upsampler_name="lanczos")
        what = "canvas with 1 face"
    else:
        source = setup.sources[0]
        picture, suffix, whole = read_image(source.path).rgb, source.path.suffix.lower(), setup
        what = f"photo {source.path.name}"
    for side in sides:
        sized = replace(
            whole,
            aligned=False,
            sources=_write_copies(
                scratch / f"side_{side}", _resize_longest(picture, side), copies, suffix
            ),
        )
        rows.append(
            {
                "input": what,
                "side": side,
                **pipeline_row(
                    sized, restorer, batch, scratch / "out", device=device, repeats=repeats
                ),
            }
        )
    return rows


def face_count_rows(
    setup: PipelineSetup,
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
    upsampler, name = setup.upsampler, setup.upsampler_name
    if upsampler is None:
        upsampler, name = LanczosUpsampler(scale=setup.upscale), "lanczos"
    rows = []
    for count in counts:
        canvas = face_canvas(faces, count)
        canvas_setup = replace(
            setup,
            aligned=False,
            detector=KnownFacesDetector(canvas.landmarks),
            detector_name="known positions",
            upsampler=upsampler,
            upsampler_name=name,
            sources=_write_copies(scratch / f"faces_{count}", canvas.image, copies, ".png"),
        )
        row = pipeline_row(
            canvas_setup, restorer, batch, scratch / "out", device=device, repeats=repeats
        )
        rows.append({"faces_per_image": count, "side": canvas.image.shape[0], **row})
    return rows
