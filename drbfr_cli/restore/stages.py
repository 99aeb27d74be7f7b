"""The stages of `drbfr restore`, as functions over small job objects.

plan (output paths, clashes) -> prepare (skip finished, read, detect, align) -> restore
(aligned crops through a FaceRestorer, in batches) -> finish (background, paste, score, encode,
record, write). `run.py` runs them in threads; every stage here also works on its own.
Which outputs are finished, and which files at output paths drbfr wrote, the record file says
(`records.py`): a file it does not list is never replaced and never counts as finished.
Images are float32 RGB HxWx3 in [0, 1]; aligned crops are FACE_SIZE x FACE_SIZE.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from drbfr_cli.batch import claim_outputs, clashing_input, item_seed
from drbfr_cli.batch import failure as batch_failure
from drbfr_cli.choices import NoFace, OutputFormat
from drbfr_cli.errors import DrbfrError
from drbfr_cli.faces.align import FACE_SIZE, AlignedFace, align_face
from drbfr_cli.faces.detect import DetectOptions, detect_faces
from drbfr_cli.faces.paste import PasteFace, match_color, paste_faces, to_grayscale
from drbfr_cli.gallery.page import THUMBS
from drbfr_cli.imaging import (
    ALPHA_EXTENSIONS,
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageData,
    ImageSource,
    as_written,
    encode_image,
    faces_to_tensor,
    fit_name,
    is_gray,
    probe_size,
    read_image,
    tensor_to_faces,
    to_uint8,
    write_bytes_atomic,
)
from drbfr_cli.restore.memory import estimate_peak, over_budget
from drbfr_cli.restore.records import RECORDS_NAME, RecordLog, sha256_bytes
from drbfr_cli.restore.report import FaceRecord, ImageRecord, ImageStatus

if TYPE_CHECKING:
    from drbfr_cli.estimate import DegradationEstimate
    from drbfr_cli.faces.detect import Detector
    from drbfr_cli.faces.paste import FaceParser
    from drbfr_cli.metrics.identity import FaceEmbedder
    from drbfr_cli.restore.background import Upsampler
    from drbfr_cli.restore.restorer import FaceRestorer

RESTORED_IMGS = "restored_imgs"
CROPPED_FACES = "cropped_faces"
RESTORED_FACES = "restored_faces"
CMP = "cmp"
OUTPUT_FOLDERS = (RESTORED_IMGS, CROPPED_FACES, RESTORED_FACES, CMP, THUMBS)
"""Subfolders of OUT that restore writes (never read back as inputs)."""


@dataclass(frozen=True)
class RestoreOptions:
    """What a restore run does with each image (the CLI's defaults)."""

    out_dir: Path
    aligned: bool = False
    """Inputs are faces already aligned to the FFHQ template: no detection, no background;
    each is resized to FACE_SIZE, restored and written at FACE_SIZE."""
    detect: DetectOptions = field(default_factory=DetectOptions)
    batch_size: int = 4
    """Faces per restorer call, gathered across images."""
    seed: int = 0
    upscale: float = 2.0
    color_fix: bool = False
    save_faces: bool = False
    ext: OutputFormat = OutputFormat.SAME
    suffix: str = ""
    """Appended to each output file's stem."""
    quality: int = 95
    """JPEG / WebP quality of written images."""
    overwrite: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    niqe: bool = False
    """Score every aligned input face and its restoration with NIQE."""
    identity: bool = False
    """Score every restored face's identity distance to its aligned input face (needs an
    embedder in RestoreTools)."""
    report_csv: Path | None = None
    gallery: bool = True
    """Write OUT/index.html, the before/after gallery, at the end."""
    queue_size: int = 4
    """Images waiting between two stages (bounds memory)."""
    max_memory: int | None = None
    """Bytes an image may need (memory.estimate_peak); a larger one fails alone. None: no
    budget."""
    no_face: NoFace = NoFace.KEEP
    """What a whole image in which no face is found becomes (choices.NoFace)."""
    rank: int | None = 0
    """The rank the records name (ranks.py; None with the Ray engine)."""
    skip_clean: float | None = None
    """Faces whose estimated severity is below this are pasted back untouched (None: none)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.queue_size < 1:
            raise ValueError("batch_size and queue_size must be at least 1")
        if self.skip_clean is not None and not 0.0 <= self.skip_clean <= 1.0:
            raise ValueError(f"skip_clean must lie in [0, 1], got {self.skip_clean}")
        if self.upscale <= 0:
            raise ValueError(f"upscale must be positive, got {self.upscale}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must lie in 1-100, got {self.quality}")


@dataclass(frozen=True)
class RestoreTools:
    """The models a run uses. Whole images need a detector and an upsampler; --aligned neither."""

    restorer: FaceRestorer
    detector: Detector | None = None
    upsampler: Upsampler | None = None
    parser: FaceParser | None = None
    """Soft face-region masks for paste-back; None: the feathered square."""
    embedder: FaceEmbedder | None = None
    """Face embeddings for --metrics ids (RestoreOptions.identity)."""


@dataclass(eq=False)
class FaceJob:
    """One aligned face on its way through the restorer."""

    aligned: AlignedFace
    seed: int
    restored: np.ndarray | None = None
    """float32 RGB FACE_SIZE x FACE_SIZE x 3 in [0, 1], once restored."""
    seconds: float = 0.0
    """This face's share of its batch's restore time."""
    estimate: DegradationEstimate | None = None
    """Its degradation estimate, when the restorer's bundle carries a degradation head."""
    clean: bool = False
    """Pasted back untouched: its severity was below RestoreOptions.skip_clean."""


@dataclass(eq=False)
class ImageJob:
    """One input image between the stages; each stage hands it to the next."""

    source: ImageSource
    output: Path
    status: ImageStatus = ImageStatus.OK
    error: str | None = None
    image: ImageData | None = None
    faces: list[FaceJob] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    earlier: ImageRecord | None = None
    """A skipped image's record, from the run that wrote its output."""
    rank: int | None = 0
    """The rank restoring it (RestoreOptions.rank)."""

    @property
    def ready(self) -> bool:
        """True when every face has been restored (or there is none)."""
        return all(face.restored is not None for face in self.faces)


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the seconds spent in the block to timings[stage]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


# --------------------------------------------------------------------------- plan


def output_path(relative: Path, options: RestoreOptions) -> Path:
    """OUT/restored_imgs/<relative>, with --ext and --suffix applied (unknown extensions: png;
    a name over 255 bytes cut, see fit_name)."""
    ext = relative.suffix if options.ext is OutputFormat.SAME else f".{options.ext.value}"
    if ext.lower() not in IMAGE_EXTENSIONS:
        ext = ".png"
    name = fit_name(relative.stem, f"{options.suffix}{ext}")
    return options.out_dir / RESTORED_IMGS / relative.with_name(name)


def face_path(output: Path, options: RestoreOptions, folder: str, index: int) -> Path:
    """Where face `index` of the image written to `output` goes in OUT/<folder>."""
    relative = output.relative_to(options.out_dir / RESTORED_IMGS)
    name = fit_name(relative.stem, f"_{index:02d}{relative.suffix}")
    return options.out_dir / folder / relative.with_name(name)


def plan_outputs(sources: Sequence[ImageSource], options: RestoreOptions) -> list[Path]:
    """The output path of every source; DrbfrError when two share one or one is an input."""
    owners = claim_outputs(
        ((output_path(source.relative, options), source.path) for source in sources),
        hint="use --ext same or rename one",
    )
    clash = clashing_input(owners, sources)
    if clash is not None:
        raise DrbfrError(f"{clash[0]}: output would overwrite an input; choose another -o")
    return list(owners)


def face_seed(run_seed: int, relative: str, index: int) -> int:
    """A 53-bit seed for face `index` of an image: the same in any batch, order or rerun (and
    exact in any JSON reader)."""
    return item_seed(run_seed, relative, index, bits=53)


# --------------------------------------------------------------------------- prepare


def prepare_job(
    source: ImageSource,
    output: Path,
    options: RestoreOptions,
    detector: Detector | None,
    log: RecordLog,
    network_scale: float = 0.0,
) -> ImageJob:
    """Skip a finished image, or read it and align its faces; failures become the job's error.
    An output path holding a file drbfr did not write fails the image (the file is kept), and
    so does one whose memory estimate (at a network background's `network_scale`) exceeds
    options.max_memory, before it is decoded."""
    job = ImageJob(source=source, output=output, rank=options.rank)
    if output.exists():
        earlier = log.finished(output)
        if earlier is None:
            job.status, job.error = ImageStatus.FAILED, not_ours(output)
            return job
        if not options.overwrite:
            job.status, job.earlier = ImageStatus.SKIPPED, ImageRecord.from_dict(earlier)
            return job
    try:
        with timed(job.timings, "read"):
            check_memory(source.path, options, network_scale)
            job.image = read_image(source.path, max_pixels=options.max_pixels)
        aligned = find_faces(job.image.rgb, detector, options, job.timings)
    except (DrbfrError, cv2.error, MemoryError) as exc:
        job.status, job.error, job.image = ImageStatus.FAILED, failure(source.path, exc), None
        return job
    relative = source.relative.as_posix()
    job.faces = [
        FaceJob(face, face_seed(options.seed, relative, index))
        for index, face in enumerate(aligned)
    ]
    check_faces(job, options)
    return job


NO_FACE_HINT = "lower --det-threshold or --det-retry, or try another --detector"
"""What to try when a face was missed (printed once per run, and in --no-face fail errors)."""


def check_faces(job: ImageJob, options: RestoreOptions) -> None:
    """Apply --no-face to a whole image in which no face was found: keep it (the background
    is written, status no_face), skip it (nothing written, status no_face) or fail it."""
    if job.faces or options.aligned or job.status is not ImageStatus.OK:
        return
    if options.no_face is NoFace.KEEP:
        job.status = ImageStatus.NO_FACE
        return
    job.image = None
    if options.no_face is NoFace.SKIP:
        job.status = ImageStatus.NO_FACE
    else:
        job.status = ImageStatus.FAILED
        job.error = f"{job.source.path}: no face found (--no-face fail); {NO_FACE_HINT}"


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


# --------------------------------------------------------------------------- restore


def restore_crops(
    restorer: FaceRestorer, crops: Sequence[np.ndarray], seeds: Sequence[int]
) -> list[np.ndarray]:
    """One restorer call: FACE_SIZE crops -> restorer.face_size -> restored -> FACE_SIZE."""
    side = restorer.face_size
    batch = faces_to_tensor([resize_square(crop, side) for crop in crops])
    restored = restorer.restore(batch, list(seeds))
    if tuple(restored.shape) != tuple(batch.shape):
        raise DrbfrError(
            f"the restorer returned shape {tuple(restored.shape)} for faces of "
            f"shape {tuple(batch.shape)}"
        )
    return [resize_square(face, FACE_SIZE) for face in tensor_to_faces(restored)]


def estimate_crops(restorer: FaceRestorer, faces: Sequence[FaceJob]) -> None:
    """Set each face's degradation estimate, when the restorer makes them (a bundle with a
    degradation head: BundleRestorer.estimate); the estimate sees the crop the restorer does."""
    estimate = getattr(restorer, "estimate", None)
    if estimate is None or not faces:
        return
    side = restorer.face_size
    estimates = estimate(faces_to_tensor([resize_square(f.aligned.crop, side) for f in faces]))
    for face, value in zip(faces, estimates or [None] * len(faces), strict=True):
        face.estimate = value


def keep_clean(faces: Sequence[FaceJob], threshold: float | None) -> list[FaceJob]:
    """Mark the faces whose severity is below `threshold` clean (their crop is their
    restoration); returns the others, which still need restoring."""
    todo = []
    for face in faces:
        if threshold is not None and face.estimate and face.estimate.severity < threshold:
            face.restored, face.clean = face.aligned.crop, True
        else:
            todo.append(face)
    return todo


# --------------------------------------------------------------------------- finish


def finish_job(
    job: ImageJob, tools: RestoreTools, options: RestoreOptions, log: RecordLog
) -> ImageRecord:
    """Compose, score and write a restored image; a failure becomes the record's error.

    The record of every image this run tried goes to the record file; a finished image's goes
    there before its files appear, so a kill never leaves an output that the file lacks.
    """
    return write_job(job, render_job(job, tools, options, log), log)


@dataclass(frozen=True)
class Rendered:
    """An image composed and encoded, not yet written: its record and its files' bytes."""

    record: ImageRecord
    files: dict[Path, bytes] = field(default_factory=dict)


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
    try:
        with timed(job.timings, "paste"):
            gray_faces(job.faces)
            result = compose(job.image, job.faces, tools, options)
        scores = None
        if options.niqe or options.identity:
            with timed(job.timings, "metrics"):
                scores = face_scores(job, result, options, tools)
        with timed(job.timings, "write"):
            files = encode_outputs(job, result, options)
            if log is not None:
                check_replaceable(files, log)
    except (DrbfrError, cv2.error, MemoryError) as exc:
        job.status, job.error = ImageStatus.FAILED, failure(job.source.path, exc)
        job.image = None
        return Rendered(make_record(job))
    key = partial(relative_key, options.out_dir)
    digests = {key(path): sha256_bytes(data) for path, data in files.items()}
    return Rendered(make_record(job, (result.shape[1], result.shape[0]), scores, digests), files)


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
        job.status, job.error = ImageStatus.FAILED, failure(job.source.path, exc)
        return logged(make_record(job), log)
    return record


def logged(record: ImageRecord, log: RecordLog) -> ImageRecord:
    log.append(record.to_dict())
    return record


def not_ours(path: Path) -> str:
    """The error of an image whose output path holds a file drbfr did not write."""
    return (
        f"{path}: a file drbfr did not write (or that changed since; see {RECORDS_NAME}) is "
        "in the way; it is kept: move it away to restore this image"
    )


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


def failure(path: Path, exc: BaseException) -> str:
    """The one-line reason a stage failed on the image at `path`."""
    return batch_failure(path, exc, memory_hint="use a smaller --upscale or free memory")


def gray_faces(faces: Sequence[FaceJob]) -> None:
    """Make a restored face gray where its input crop is gray (a gray photo, or a black-and-white
    photo inside a colour one): models may invent colour; gray faces must come back gray."""
    for face in faces:
        if face.restored is not None and is_gray(face.aligned.crop):
            face.restored = to_grayscale(face.restored)


def compose(
    image: ImageData, faces: Sequence[FaceJob], tools: RestoreTools, options: RestoreOptions
) -> np.ndarray:
    """The output picture: restored faces pasted on the upscaled background (whole images), or
    the restored face itself (--aligned)."""
    if options.aligned:
        face = faces[0]
        result = face.restored
        if options.color_fix:
            result = match_color(result, face.aligned.crop)
        return to_grayscale(result) if image.grayscale else result
    if tools.upsampler is None:
        raise ValueError("whole images need a background upsampler")
    pastes = [
        PasteFace(
            f.restored,
            f.aligned.affine,
            f.aligned.size,
            reference=f.aligned.crop,
            gray=is_gray(f.aligned.crop),
        )
        for f in faces
    ]
    return paste_faces(
        tools.upsampler(image.rgb),
        pastes,
        scale=options.upscale,
        color_fix=options.color_fix,
        grayscale=image.grayscale,
        parser=tools.parser,
    )


def encode_outputs(job: ImageJob, result: np.ndarray, options: RestoreOptions) -> dict[Path, bytes]:
    """The encoded files of an image: the face crops (--save-faces), then the image."""
    image = job.image
    encode = partial(encode_image, **file_settings(image, options))
    files: dict[Path, bytes] = {}
    if options.save_faces:
        for index, face in enumerate(job.faces):
            crop, restored = face.aligned.crop, face.restored
            for folder, pixels in (
                (CROPPED_FACES, crop),
                (RESTORED_FACES, restored),
                (CMP, np.concatenate([crop, restored], axis=1)),
            ):
                path = face_path(job.output, options, folder, index)
                files[path] = encode(path, pixels)
    files[job.output] = encode(job.output, result, alpha=resized_alpha(image, result.shape))
    return files


def drops_alpha(job: ImageJob) -> bool:
    """True when the image has transparency that its output format cannot hold (--ext jpg)."""
    has_alpha = job.image is not None and job.image.alpha is not None
    return has_alpha and job.output.suffix.lower() not in ALPHA_EXTENSIONS


def file_settings(image: ImageData, options: RestoreOptions) -> dict[str, bool | int]:
    """How the outputs of `image` are encoded (write_image / as_written keywords)."""
    return {"grayscale": image.grayscale, "bit_depth": image.bit_depth, "quality": options.quality}


def resized_alpha(image: ImageData, shape: tuple[int, ...]) -> np.ndarray | None:
    """The input's alpha channel at the output's size, or None."""
    if image.alpha is None:
        return None
    size = (shape[1], shape[0])
    if image.alpha.shape[::-1] == size:
        return image.alpha
    return np.clip(cv2.resize(image.alpha, size, interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


@dataclass(frozen=True)
class FaceScores:
    """The --metrics values of one face (None where not asked for)."""

    niqe: tuple[float, float] | None = None
    """(input, restored) NIQE."""
    identity: float | None = None
    """Identity distance of the restored face to the input face."""
    identity_failed: bool = False
    """Identity was asked for but a face could not be embedded."""


def face_scores(
    job: ImageJob, result: np.ndarray, options: RestoreOptions, tools: RestoreTools
) -> list[FaceScores]:
    """The metrics `options` asks for, of every face. NIQE scores the pixels of the face's
    files as written (the aligned crop as in cropped_faces/, the restoration as in
    restored_faces/, or restored_imgs/ with --aligned), the pixels `drbfr eval` reads, so the
    two agree; identity compares the aligned input and restored crops."""
    niqe = niqe_scores(job, result, options) if options.niqe else [None] * len(job.faces)
    scores = []
    for face, face_niqe in zip(job.faces, niqe, strict=True):
        distance = identity_of(face, tools.embedder) if options.identity else None
        failed = options.identity and distance is None
        scores.append(FaceScores(niqe=face_niqe, identity=distance, identity_failed=failed))
    return scores


def identity_of(face: FaceJob, embedder: FaceEmbedder | None) -> float | None:
    """Identity distance of a restored face to its aligned input; None if not embedded."""
    from drbfr_cli.metrics.identity import embedding_distance

    if embedder is None:
        raise ValueError("identity scores need an embedder in RestoreTools")
    before, after = to_uint8(face.aligned.crop), to_uint8(face.restored)
    return embedding_distance(embedder(before), embedder(after))


def niqe_scores(
    job: ImageJob, result: np.ndarray, options: RestoreOptions
) -> list[tuple[float, float]]:
    """(input, restored) NIQE of every face, scored on the pixels of its files as written: the
    aligned crop as in cropped_faces/, the restoration as in restored_faces/ (whole images) or
    restored_imgs/ (--aligned). `drbfr eval` on those files reads the same pixels, and both
    score them with `niqe_rgb`, so the two agree."""
    from drbfr_cli.metrics.niqe import niqe_rgb

    written = partial(as_written, **file_settings(job.image, options))
    scores = []
    for index, face in enumerate(job.faces):
        crop = written(face_path(job.output, options, CROPPED_FACES, index), face.aligned.crop)
        if options.aligned:
            restored = written(job.output, result)
        else:
            restored = written(face_path(job.output, options, RESTORED_FACES, index), face.restored)
        scores.append((niqe_rgb(crop), niqe_rgb(restored)))
    return scores


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
