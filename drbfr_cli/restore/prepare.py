"""The prepare stage of `drbfr restore`: skip a finished image, or read it, find and align its
faces. Returns a new ImageJob (jobs.py); a failure becomes the job's error, never an exception.
Images are float32 RGB HxWx3 in [0, 1]; aligned crops are FACE_SIZE x FACE_SIZE.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from drbfr_cli.choices import NoFace
from drbfr_cli.errors import DrbfrError
from drbfr_cli.faces.align import FACE_SIZE, AlignedFace, align_face
from drbfr_cli.faces.detect import detect_faces
from drbfr_cli.imaging import ImageSource, probe_size, read_image
from drbfr_cli.restore.jobs import FaceJob, ImageJob, failure, timed
from drbfr_cli.restore.memory import estimate_peak, over_budget
from drbfr_cli.restore.options import RestoreOptions, RestoreTools
from drbfr_cli.restore.plan import face_seed
from drbfr_cli.restore.records import RecordLog, not_ours
from drbfr_cli.restore.report import ImageRecord, ImageStatus

if TYPE_CHECKING:
    from drbfr_cli.faces.detect import Detector

NO_FACE_HINT = "lower --det-threshold or --det-retry, or try another --detector"
"""What to try when a face was missed (printed once per run, and in --no-face fail errors)."""


def prepare_job(
    source: ImageSource,
    output: Path,
    options: RestoreOptions,
    detector: Detector | None,
    log: RecordLog,
    network_scale: float = 0.0,
) -> ImageJob:
    """Skip a finished image, or read it and align its faces (start_job, then read_job)."""
    job = start_job(source, output, options, log, rank=options.rank)
    if job.status is not ImageStatus.OK:
        return job
    return read_job(job, options, detector, network_scale)


def start_job(
    source: ImageSource, output: Path, options: RestoreOptions, log: RecordLog, *, rank: int | None
) -> ImageJob:
    """The job of one image restored by `rank`, before it is read: skipped (with its earlier
    record) when its output is finished, failed when its output path holds a file drbfr did not
    write (the file is kept)."""
    job = ImageJob(source=source, output=output, rank=rank)
    if not output.exists():
        return job
    earlier = log.finished(output)
    if earlier is None:
        return job.failed(not_ours(output))
    return job if options.overwrite else job.skipped(ImageRecord.from_dict(earlier))


def read_job(
    job: ImageJob, options: RestoreOptions, detector: Detector | None, network_scale: float = 0.0
) -> ImageJob:
    """Read the image and align its faces. An image whose memory estimate (at a network
    background's `network_scale`) exceeds options.max_memory fails before it is decoded."""
    timings = dict(job.timings)
    try:
        with timed(timings, "read"):
            check_memory(job.source.path, options, network_scale)
            image = read_image(job.source.path, max_pixels=options.max_pixels)
        aligned = find_faces(image.rgb, detector, options, timings)
    except (DrbfrError, cv2.error, MemoryError) as exc:
        return replace(job, timings=timings).failed(failure(job.source.path, exc))
    relative = job.source.relative.as_posix()
    faces = tuple(
        FaceJob(face, face_seed(options.seed, relative, index))
        for index, face in enumerate(aligned)
    )
    return check_faces(replace(job, image=image, faces=faces, timings=timings), options)


def check_faces(job: ImageJob, options: RestoreOptions) -> ImageJob:
    """Apply --no-face to a whole image in which no face was found: keep it (the background
    is written, status no_face), skip it (nothing written, status no_face) or fail it."""
    if job.faces or options.aligned or job.status is not ImageStatus.OK:
        return job
    if options.no_face is NoFace.FAIL:
        return job.failed(f"{job.source.path}: no face found (--no-face fail); {NO_FACE_HINT}")
    return job.without_face(keep_image=options.no_face is NoFace.KEEP)


def check_memory(path: Path, options: RestoreOptions, network_scale: float = 0.0) -> None:
    """DrbfrError when the image at `path` would need more than options.max_memory."""
    if options.max_memory is None:
        return
    size = probe_size(path)
    if size is None or size[0] * size[1] > options.max_pixels:
        return  # not an image, or over --max-pixels: reading it says why
    peak = estimate_peak(*size, options.upscale, aligned=options.aligned,
                         network_scale=network_scale)  # fmt: skip
    if peak > options.max_memory:
        raise DrbfrError(over_budget(path, peak, options.max_memory, options.upscale))


def network_scale(tools: RestoreTools) -> float:
    """The scale a network background upsampler runs at (0 for Lanczos and none)."""
    descriptor = getattr(tools.upsampler, "descriptor", None)
    return float(getattr(descriptor, "scale", 0) or 0)


def find_faces(
    rgb: np.ndarray,
    detector: Detector | None,
    options: RestoreOptions,
    timings: dict[str, float],
) -> list[AlignedFace]:
    """The aligned faces of an image, largest first (the image itself with --aligned)."""
    if options.aligned:
        with timed(timings, "align"):
            return [aligned_input(rgb)]
    if detector is None:
        raise ValueError("whole images need a face detector")
    with timed(timings, "detect"):
        faces = detect_faces(detector, rgb, options.detect)
    with timed(timings, "align"):
        return [align_face(rgb, face, FACE_SIZE) for face in faces]


def aligned_input(rgb: np.ndarray) -> AlignedFace:
    """An already aligned face as a FACE_SIZE crop (resized when it has another size)."""
    height, width = rgb.shape[:2]
    sx, sy = FACE_SIZE / width, FACE_SIZE / height
    affine = np.array([[sx, 0.0, 0.5 * (sx - 1.0)], [0.0, sy, 0.5 * (sy - 1.0)]])
    return AlignedFace(crop=resize_square(rgb, FACE_SIZE), affine=affine)


def resize_square(rgb: np.ndarray, side: int) -> np.ndarray:
    """Resize to side x side: area averaging when shrinking, bicubic when enlarging."""
    height, width = rgb.shape[:2]
    if height == width == side:
        return rgb
    interpolation = cv2.INTER_AREA if side < max(height, width) else cv2.INTER_CUBIC
    resized = cv2.resize(rgb, (side, side), interpolation=interpolation)
    return np.clip(resized, 0.0, 1.0)
