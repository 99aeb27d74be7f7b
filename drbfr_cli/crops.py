"""Aligned face crops of whole photos: the library behind `drbfr align`.

Each image is read, its faces detected (`detect_faces`) and aligned to the FFHQ template
(`align_face`), exactly the stages `drbfr restore` runs before its model, and every face is
written as `OUT/<relative stem>_NN.<ext>` (NN: 00 for the largest face). `OUT/manifest.jsonl`
holds one JSON line per written face. The manifest is also the record of finished work: an
image whose lines are all there (and whose crops exist at the current size and format) is
skipped on a rerun, so an interrupted run resumes by running it again.

Coordinates in the manifest are pixels of the source image as displayed (EXIF orientation
applied). Images are float32 RGB HxWx3 in [0, 1], as everywhere in drbfr. The stages are
`faces/`'s; statuses, failures, temporaries and the manifest's appends are `batch.py`'s.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from drbfr_cli.batch import (
    ITEM_ERRORS,
    ItemStatus,
    RecordFile,
    claim_outputs,
    failure,
    read_records,
    remove_temporaries,
    write_records,
)
from drbfr_cli.errors import DrbfrError
from drbfr_cli.faces.align import FACE_SIZE, AlignedFace, align_face
from drbfr_cli.faces.detect import DetectOptions, Detector, Face, detect_faces
from drbfr_cli.imaging import (
    DEFAULT_MAX_PIXELS,
    ImageSource,
    fit_name,
    make_output_folder,
    read_image,
    real_path,
    write_image,
)

MANIFEST_NAME = "manifest.jsonl"
"""The manifest's file name inside the output folder."""

_CROP_STEM = re.compile(r"^(?P<stem>.*)_(?P<index>\d{2,})$")
_CUT_MARK = re.compile(r"~[0-9a-f]{8}$")


class CropFormat(StrEnum):
    """File format of the written crops."""

    PNG = "png"
    JPG = "jpg"


@dataclass(frozen=True)
class AlignOptions:
    """What an align run writes (the CLI's defaults)."""

    out_dir: Path
    size: int = FACE_SIZE
    """Side of the square crops; the FFHQ 512 template scaled to it."""
    detect: DetectOptions = field(default_factory=DetectOptions)
    ext: CropFormat = CropFormat.PNG
    quality: int = 95
    """JPEG quality."""
    overwrite: bool = False
    """Redo images an earlier run finished."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int = 1
    """Images processed at once (threads, each with its own detector)."""

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {self.size}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must lie in 1-100, got {self.quality}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")

    @property
    def manifest(self) -> Path:
        return self.out_dir / MANIFEST_NAME


@dataclass(frozen=True)
class CropRecord:
    """One written face: a manifest line."""

    crop: str
    """The crop file, relative to the output folder (POSIX separators)."""
    source: str
    """The input image path as found."""
    relative: str
    """The input's relative name (what the crop is named after)."""
    face: int
    """Face index in the image, 0 for the largest."""
    faces_in_image: int
    box: tuple[float, float, float, float]
    """x0, y0, x1, y1 in source pixels."""
    landmarks: tuple[tuple[float, float], ...]
    """Five (x, y) points in source pixels (see `drbfr_cli.faces.detect`)."""
    score: float
    size: int
    """Side of the square crop in pixels."""
    affine: tuple[tuple[float, float, float], tuple[float, float, float]]
    """2x3 similarity: source pixels -> crop pixels."""
    image_size: tuple[int, int]
    """(width, height) of the source image."""

    def to_json(self) -> str:
        """The record as one JSON line (no newline)."""
        values = {
            "crop": self.crop,
            "source": self.source,
            "relative": self.relative,
            "face": self.face,
            "faces_in_image": self.faces_in_image,
            "box": list(self.box),
            "landmarks": [list(point) for point in self.landmarks],
            "score": self.score,
            "size": self.size,
            "affine": [list(row) for row in self.affine],
            "image_size": list(self.image_size),
        }
        return json.dumps(values)

    @classmethod
    def from_json(cls, line: str) -> CropRecord:
        """Parse a manifest line; ValueError (or KeyError, TypeError) when it is not one."""
        data: dict[str, Any] = json.loads(line)
        return cls(
            crop=str(data["crop"]),
            source=str(data["source"]),
            relative=str(data["relative"]),
            face=int(data["face"]),
            faces_in_image=int(data["faces_in_image"]),
            box=tuple(float(v) for v in data["box"]),
            landmarks=tuple((float(x), float(y)) for x, y in data["landmarks"]),
            score=float(data["score"]),
            size=int(data["size"]),
            affine=tuple(tuple(float(v) for v in row) for row in data["affine"]),
            image_size=(int(data["image_size"][0]), int(data["image_size"][1])),
        )


@dataclass(frozen=True)
class ImageOutcome:
    """One input image after the run: its status, its faces, or why it failed. `ok`: its faces
    were detected and written; `skipped`: finished by an earlier run (its manifest lines and
    crops are there); `no_face`: no face passed the detection filters."""

    source: ImageSource
    status: ItemStatus
    records: tuple[CropRecord, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class AlignSummary:
    """The totals of a run."""

    images: int
    faces_written: int
    images_skipped: int
    """Images finished by an earlier run."""
    faces_skipped: int
    """Their faces (kept, not rewritten)."""
    no_face: tuple[str, ...]
    """Paths of images in which no face was found."""
    failures: tuple[str, ...]
    """One line per failed image, naming the file and the reason."""
    seconds: float
    manifest: Path

    @property
    def failed(self) -> int:
        return len(self.failures)


# --------------------------------------------------------------------------- naming, planning


def crop_path(relative: Path, index: int, ext: CropFormat) -> Path:
    """`<relative stem>_NN.<ext>` in the relative folder of the input (a name over 255 bytes
    cut, see fit_name)."""
    return relative.with_name(fit_name(relative.stem, f"_{index:02d}.{ext.value}"))


def check_outputs(sources: Sequence[ImageSource], options: AlignOptions) -> None:
    """DrbfrError when two inputs would share crop names or a crop would replace an input."""
    owners = claim_outputs(
        ((source.relative.with_suffix(""), source.path) for source in sources),
        describe=lambda key: f"{options.out_dir / key}_NN.{options.ext.value}",
    )
    out_dir = options.out_dir.resolve()
    for source in sources:
        path = real_path(source.path)
        if not path.is_relative_to(out_dir) or path.suffix.lower() != f".{options.ext.value}":
            continue
        relative = path.relative_to(out_dir)
        match = _CROP_STEM.match(relative.stem)
        if match and _crop_owner(relative, match, owners) is not None:
            raise DrbfrError(
                f"{source.path}: a face crop would overwrite this input; choose another -o"
            )


def _crop_owner(relative: Path, match: re.Match[str], owners: dict[Path, Path]) -> Path | None:
    """The input among `owners` (by relative path without its suffix) whose crop `match`
    (of _CROP_STEM on the stem of `relative`, a file of the crop format) would be written to
    `relative`, if any."""
    index = int(match["index"])
    candidates = [relative.parent / match["stem"]]
    if _CUT_MARK.search(match["stem"]):  # a cut name: a longer stem of this folder, cut alike
        candidates += [key for key in owners if key.parent == relative.parent]
    for key in candidates:
        if key in owners and fit_name(key.name, f"_{index:02d}{relative.suffix}") == relative.name:
            return owners[key]
    return None


# --------------------------------------------------------------------------- the pure stages


def align_crops(rgb: np.ndarray, faces: Sequence[Face], size: int) -> list[AlignedFace]:
    """Each face aligned to the template at `size` (a gray image, R = G = B, gives gray crops)."""
    return [align_face(rgb, face, size) for face in faces]


def crop_record(
    source: ImageSource,
    aligned: AlignedFace,
    index: int,
    count: int,
    image_size: tuple[int, int],
    ext: CropFormat,
) -> CropRecord:
    """The manifest line of face `index` (of `count`) of `source`."""
    face = aligned.face
    if face is None:
        raise ValueError("crop records need the detection the crop came from")
    return CropRecord(
        crop=crop_path(source.relative, index, ext).as_posix(),
        source=str(source.path),
        relative=source.relative.as_posix(),
        face=index,
        faces_in_image=count,
        box=tuple(float(v) for v in face.box),
        landmarks=tuple((float(x), float(y)) for x, y in face.landmarks.tolist()),
        score=float(face.score),
        size=aligned.size,
        affine=tuple(tuple(float(v) for v in row) for row in aligned.affine),
        image_size=image_size,
    )


# --------------------------------------------------------------------------- the manifest


def read_manifest(path: Path) -> list[CropRecord]:
    """The records of a manifest; lines that do not parse (a line cut by a kill) are ignored."""
    return read_records(path, CropRecord.from_json, name="manifest")


def write_manifest(path: Path, records: Iterable[CropRecord]) -> None:
    """Replace the manifest atomically, one line per record, sorted by input and face."""
    ordered = sorted(records, key=lambda r: (r.relative, r.face))
    write_records(path, (record.to_json() for record in ordered))


def crop_key(relative: Path | str) -> str:
    """The name an input's crops share: its relative path without the extension."""
    return Path(relative).with_suffix("").as_posix()


def finished_images(
    records: Iterable[CropRecord], options: AlignOptions
) -> dict[str, tuple[CropRecord, ...]]:
    """The records of images an earlier run finished at this size and format, by relative name.

    Finished: every face 0..N-1 of the image has a line, and every crop file exists.
    """
    groups: dict[str, dict[int, CropRecord]] = {}
    for record in records:
        groups.setdefault(record.relative, {})[record.face] = record
    finished = {}
    for relative, faces in groups.items():
        count = next(iter(faces.values())).faces_in_image
        complete = sorted(faces) == list(range(count)) and all(
            r.faces_in_image == count
            and r.size == options.size
            and Path(r.crop).suffix == f".{options.ext.value}"
            and (options.out_dir / r.crop).is_file()
            for r in faces.values()
        )
        if complete:
            finished[relative] = tuple(faces[index] for index in range(count))
    return finished


# --------------------------------------------------------------------------- one image


def process_image(source: ImageSource, options: AlignOptions, detector: Detector) -> ImageOutcome:
    """Read, detect, align and write one image's crops; failures become the outcome's error."""
    try:
        image = read_image(source.path, max_pixels=options.max_pixels)
        faces = detect_faces(detector, image.rgb, options.detect)
        aligned = align_crops(image.rgb, faces, options.size)
        records = tuple(
            crop_record(source, face, index, len(aligned), image.size, options.ext)
            for index, face in enumerate(aligned)
        )
        for face, record in zip(aligned, records, strict=True):
            write_image(
                options.out_dir / record.crop,
                face.crop,
                grayscale=image.grayscale,
                bit_depth=image.bit_depth,
                quality=options.quality,
            )
    except ITEM_ERRORS as exc:
        return ImageOutcome(source, ItemStatus.FAILED, error=failure(source.path, exc))
    status = ItemStatus.OK if records else ItemStatus.NO_FACE
    return ImageOutcome(source, status, records)


# --------------------------------------------------------------------------- the run


def align_images(
    sources: Sequence[ImageSource],
    options: AlignOptions,
    make_detector: Callable[[], Detector],
    *,
    on_outcome: Callable[[ImageOutcome], None] | None = None,
) -> AlignSummary:
    """Align every face of `sources` into options.out_dir, keep the manifest, return the totals.

    A bad image is an outcome with status `failed`, never an exception; exceptions are problems
    of the whole run (clashing or input-replacing outputs, an unusable output folder or
    detector). `make_detector` is called once per worker thread. `on_outcome` gets each image's
    outcome in input order.
    """
    start = time.perf_counter()
    check_outputs(sources, options)
    first = make_detector()  # its errors come before anything is written
    _prepare_folder(options.out_dir, sources)
    plan = plan_resume(read_manifest(options.manifest), sources, options)
    write_manifest(options.manifest, [*plan.others, *chain.from_iterable(plan.finished.values())])
    inputs = {real_path(source.path) for source in sources}
    outcomes: list[ImageOutcome] = []
    with RecordFile(options.manifest, sync=False) as manifest:
        for outcome in _outcomes(sources, options, plan.finished, (first, make_detector)):
            if outcome.status is not ItemStatus.SKIPPED:  # its lines, after its crops exist
                manifest.append(*(record.to_json() for record in outcome.records))
            if outcome.status in (ItemStatus.OK, ItemStatus.NO_FACE):
                old = plan.stale.get(crop_key(outcome.source.relative), frozenset())
                written = {record.crop for record in outcome.records}
                _remove_crops(options.out_dir, old - written, keep=inputs)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    write_manifest(options.manifest, [*plan.others, *(r for o in outcomes for r in o.records)])
    return _summary(outcomes, time.perf_counter() - start, options.manifest)


@dataclass(frozen=True)
class ResumePlan:
    """What an earlier run's manifest means for this run."""

    finished: dict[str, tuple[CropRecord, ...]]
    """Records of the inputs to skip, by relative name."""
    others: tuple[CropRecord, ...]
    """Records of images that are not inputs of this run (kept as they are)."""
    stale: dict[str, frozenset[str]]
    """Crops recorded for the inputs to redo, by crop name (`crop_key`)."""


def plan_resume(
    previous: Sequence[CropRecord], sources: Sequence[ImageSource], options: AlignOptions
) -> ResumePlan:
    """Split an earlier manifest into finished inputs, other images and crops to redo."""
    relatives = {source.relative.as_posix() for source in sources}
    finished = {} if options.overwrite else finished_images(previous, options)
    finished = {relative: done for relative, done in finished.items() if relative in relatives}
    current = {crop_key(relative) for relative in relatives}
    stale: dict[str, set[str]] = {}
    for record in previous:
        if crop_key(record.relative) in current and record.relative not in finished:
            stale.setdefault(crop_key(record.relative), set()).add(record.crop)
    return ResumePlan(
        finished=finished,
        others=tuple(r for r in previous if crop_key(r.relative) not in current),
        stale={key: frozenset(crops) for key, crops in stale.items()},
    )


def _outcomes(
    sources: Sequence[ImageSource],
    options: AlignOptions,
    finished: dict[str, tuple[CropRecord, ...]],
    detectors: tuple[Detector, Callable[[], Detector]],
) -> Iterator[ImageOutcome]:
    """Each source's outcome in input order, computed in `options.workers` threads, each with
    its own detector: `detectors` is a built one and the factory for the others."""
    spare, make_detector = [detectors[0]], detectors[1]
    local = threading.local()

    def detector() -> Detector:
        if not hasattr(local, "detector"):
            try:
                local.detector = spare.pop()
            except IndexError:
                local.detector = make_detector()
        return local.detector

    def run(source: ImageSource) -> ImageOutcome:
        done = finished.get(source.relative.as_posix())
        if done is not None:
            return ImageOutcome(source, ItemStatus.SKIPPED, done)
        return process_image(source, options, detector())

    if options.workers == 1:
        yield from map(run, sources)
        return
    pool = ThreadPoolExecutor(options.workers, thread_name_prefix="drbfr-align")
    try:
        yield from pool.map(run, sources)
    finally:  # on Ctrl-C or an error, drop the images not started yet
        pool.shutdown(wait=True, cancel_futures=True)


def _remove_crops(out_dir: Path, crops: Iterable[str], *, keep: set[Path]) -> None:
    """Delete crops an earlier run wrote for an image that this run did not write again (only
    inside `out_dir`, never a path in `keep`)."""
    root = out_dir.resolve()
    for crop in crops:
        path = (out_dir / crop).resolve()
        if path.is_relative_to(root) and path not in keep:
            path.unlink(missing_ok=True)


def _prepare_folder(out_dir: Path, sources: Sequence[ImageSource]) -> None:
    """Create the output folder, check it is writable, and delete the temporaries a killed run
    left in the folders crops go to (nothing else)."""
    make_output_folder(out_dir)
    remove_temporaries({out_dir} | {out_dir / source.relative.parent for source in sources})


def _summary(outcomes: Sequence[ImageOutcome], seconds: float, manifest: Path) -> AlignSummary:
    def having(status: ItemStatus) -> list[ImageOutcome]:
        return [outcome for outcome in outcomes if outcome.status is status]

    skipped = having(ItemStatus.SKIPPED)
    return AlignSummary(
        images=len(outcomes),
        faces_written=sum(len(o.records) for o in having(ItemStatus.OK)),
        images_skipped=len(skipped),
        faces_skipped=sum(len(o.records) for o in skipped),
        no_face=tuple(str(o.source.path) for o in having(ItemStatus.NO_FACE)),
        failures=tuple(str(o.error) for o in having(ItemStatus.FAILED)),
        seconds=seconds,
        manifest=manifest,
    )
