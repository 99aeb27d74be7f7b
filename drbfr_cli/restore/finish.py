"""The finish stage of `drbfr restore`: compose, score and encode an image (render_job), then
record it and write its files (write_job).

The record of every image a run tried goes to the record file (records.py); a finished image's
goes there before its files appear, so a kill never leaves an output that the file lacks, and a
file the record file does not list is never replaced.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import cv2

from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import write_bytes_atomic
from drbfr_cli.restore.compose import compose, gray_faces
from drbfr_cli.restore.encode import encode_outputs
from drbfr_cli.restore.jobs import FaceJob, ImageJob, failure, timed
from drbfr_cli.restore.options import RestoreOptions, RestoreTools
from drbfr_cli.restore.records import RecordLog, not_ours, sha256_bytes
from drbfr_cli.restore.report import FaceRecord, ImageRecord, ImageStatus
from drbfr_cli.restore.score import FaceScores, face_scores


@dataclass(frozen=True)
class Rendered:
    """An image composed and encoded, not yet written: its record and its files' bytes."""

    record: ImageRecord
    files: dict[Path, bytes] = field(default_factory=dict)


def finish_job(
    job: ImageJob, tools: RestoreTools, options: RestoreOptions, log: RecordLog
) -> ImageRecord:
    """Compose, score and write a restored image; a failure becomes the record's error."""
    return write_job(job, render_job(job, tools, options, log), log)


def render_job(
    job: ImageJob, tools: RestoreTools, options: RestoreOptions, log: RecordLog | None = None
) -> Rendered:
    """Compose, score and encode an image (no file is written); a failure becomes the record's
    error. The record of a skipped image is its earlier run's."""
    if job.status is ImageStatus.SKIPPED and job.earlier is not None:
        here = {"input": str(job.source.path), "relative": job.source.relative.as_posix()}
        earlier = replace(job.earlier, **here, output=str(job.output), status=ImageStatus.SKIPPED)
        return Rendered(earlier)
    if job.status not in (ImageStatus.OK, ImageStatus.NO_FACE) or job.image is None:
        return Rendered(make_record(job))
    timings = dict(job.timings)
    try:
        with timed(timings, "paste"):
            job = replace(job, faces=gray_faces(job.faces))
            result = compose(job.image, job.faces, tools, options)
        scores = None
        if options.niqe or options.identity:
            with timed(timings, "metrics"):
                scores = face_scores(job, result, options, tools)
        with timed(timings, "write"):
            files = encode_outputs(job, result, options)
            if log is not None:
                check_replaceable(files, log)
    except (DrbfrError, cv2.error, MemoryError) as exc:
        failed = replace(job, timings=timings).failed(failure(job.source.path, exc))
        return Rendered(make_record(failed))
    key = partial(relative_key, options.out_dir)
    digests = {key(path): sha256_bytes(data) for path, data in files.items()}
    size = (result.shape[1], result.shape[0])
    return Rendered(make_record(replace(job, timings=timings), size, scores, digests), files)


def relative_key(out_dir: Path, path: Path) -> str:
    """How the records name a file of OUT (RecordLog.key)."""
    return path.relative_to(out_dir).as_posix()


def write_job(job: ImageJob, rendered: Rendered, log: RecordLog) -> ImageRecord:
    """Log a rendered image's record, then write its files (the image last: its presence marks
    it finished); a write failure becomes a failed record. A skipped image is not logged."""
    if rendered.record.status is ImageStatus.SKIPPED:
        return rendered.record
    try:
        check_replaceable(rendered.files, log)
        record = logged(rendered.record, log)
        for path, data in rendered.files.items():
            write_bytes_atomic(path, data)
    except DrbfrError as exc:
        failed = job.failed(failure(job.source.path, exc), keep_image=True)
        return logged(make_record(failed), log)
    return record


def logged(record: ImageRecord, log: RecordLog) -> ImageRecord:
    log.append(record.to_dict())
    return record


def check_replaceable(files: dict[Path, bytes], log: RecordLog) -> None:
    """DrbfrError when a file drbfr did not write sits at one of the paths (or when a path
    cannot be examined)."""
    for path in files:
        try:
            present = path.exists()
        except OSError as exc:
            raise DrbfrError(f"{path}: cannot be examined ({exc.strerror or exc})") from None
        if present and not log.owns(path):
            raise DrbfrError(not_ours(path))


def make_record(
    job: ImageJob,
    output_size: tuple[int, int] | None = None,
    scores: Sequence[FaceScores] | None = None,
    files: dict[str, str] | None = None,
) -> ImageRecord:
    """The report record of a job in its current state."""
    faces = tuple(
        face_record(index, face, scores[index] if scores else FaceScores())
        for index, face in enumerate(job.faces)
    )
    timings = dict(job.timings)
    if job.faces:
        timings["restore"] = sum(face.seconds for face in job.faces)
    return ImageRecord(
        input=str(job.source.path),
        relative=job.source.relative.as_posix(),
        output=str(job.output),
        status=job.status,
        error=job.error,
        size=job.image.size if job.image is not None else None,
        output_size=output_size,
        faces=faces,
        timings=timings,
        files=files or {},
        rank=job.rank,
        host=socket.gethostname(),
    )


def face_record(index: int, job: FaceJob, scores: FaceScores) -> FaceRecord:
    detection = job.aligned.face
    niqe = scores.niqe or (None, None)
    return FaceRecord(
        index=index,
        box=None if detection is None else tuple(float(v) for v in detection.box),
        score=None if detection is None else float(detection.score),
        landmarks=None if detection is None else tuple(map(tuple, detection.landmarks.tolist())),
        seed=job.seed,
        niqe_input=niqe[0],
        niqe_restored=niqe[1],
        identity=scores.identity,
        identity_failed=scores.identity_failed,
        degradation=None if job.estimate is None else job.estimate.as_dict(),
        clean=job.clean,
    )
