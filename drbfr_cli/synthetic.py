"""Synthetic LQ test sets, built the way CelebA-Test is: each HQ face (center-cropped to a square
and resized to `size`) degraded by Eq. (11) with its own random parameters.

Every image gets its own seed, derived from the run seed and its relative path, so the set does
not depend on file order or worker count, and `degradations.jsonl` (file, sigma, r, delta, q,
seed, size) rebuilds any image exactly with `rebuild_lq`. Each record is appended to it as its
image is written, so a killed run resumes by running it again; the file is rewritten sorted by
file at the end. Statuses, failures, seeds and temporaries are `batch.py`'s.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from drbfr_cli.batch import (
    ITEM_ERRORS,
    ItemStatus,
    RecordFile,
    claim_outputs,
    clashing_input,
    failure,
    item_seed,
    read_records,
    remove_temporaries,
    write_records,
)
from drbfr_cli.degradations import DegradationParams, DegradationRanges, degrade, sample_params
from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import (
    DEFAULT_MAX_PIXELS,
    ImageSource,
    make_output_folder,
    read_image,
    real_path,
    writable_name,
    write_image,
)

MANIFEST_NAME = "degradations.jsonl"
MIN_IMAGES_PER_WORKER = 16
LQ_JPEG_QUALITY = 100
"""JPEG outputs (when the HQ file was a JPEG) are written at q=100, 4:4:4, on top of Eq. (11)."""
SEED_BITS = 63
"""Width of each image's seed (`batch.item_seed` of the run seed and its relative path)."""


@dataclass(frozen=True)
class DegradeConfig:
    """Options of `drbfr degrade`."""

    seed: int = 0
    size: int = 512
    """Side of the square HQ/LQ images; 0 keeps each input's own size (no crop)."""
    ranges: DegradationRanges = field(default_factory=DegradationRanges)
    max_pixels: int = DEFAULT_MAX_PIXELS
    overwrite: bool = False
    hq_out: Path | None = None
    """When set, the prepared HQ image (cropped, resized) is written here too, for paired eval."""


@dataclass(frozen=True)
class DegradeRecord:
    """One manifest line: everything needed to rebuild one LQ image from its HQ source."""

    file: str
    sigma: float
    r: float
    delta: float
    q: int
    seed: int
    size: int

    @property
    def params(self) -> DegradationParams:
        return DegradationParams(sigma=self.sigma, r=self.r, delta=self.delta, q=self.q)


_Task = tuple[ImageSource, Path, DegradeConfig, DegradeRecord | None]
"""degrade_one's arguments for one image."""


@dataclass(frozen=True)
class DegradeOutcome:
    """One image after the run: `ok` (written), `skipped` (unchanged: written by an earlier run
    with the same record) or `failed` (`error` says why)."""

    file: str
    status: ItemStatus
    record: DegradeRecord | None = None
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# Pure parts


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the parameters and for the noise of one image."""
    params_seq, noise_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(params_seq), np.random.default_rng(noise_seq)


def plan_record(relative: str, config: DegradeConfig) -> DegradeRecord:
    """Draw the Eq. (11) parameters of one image; deterministic in (seed, relative path)."""
    seed = item_seed(config.seed, relative, bits=SEED_BITS)
    params = sample_params(_streams(seed)[0], config.ranges)
    return DegradeRecord(file=relative, seed=seed, size=config.size, **params.as_dict())


def prepare_hq(rgb: np.ndarray, size: int) -> np.ndarray:
    """Center-crop to a square and resize to size x size (area when shrinking); 0 keeps as is."""
    if size <= 0:
        return rgb
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = rgb[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(square)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return np.clip(cv2.resize(square, (size, size), interpolation=interpolation), 0.0, 1.0)


def rebuild_lq(hq_rgb: np.ndarray, record: DegradeRecord) -> np.ndarray:
    """The LQ image of a manifest record from the original HQ image (float32 RGB [0, 1])."""
    hq = prepare_hq(hq_rgb, record.size)
    return degrade(hq, record.params, _streams(record.seed)[1])


# ---------------------------------------------------------------------------------------------
# Manifest I/O


def read_manifest(out_dir: Path) -> dict[str, DegradeRecord]:
    """Records of an existing manifest in `out_dir` (empty when there is none), the latest line
    of each file winning; DrbfrError for a line that is no record (but a last line cut short)."""
    path = out_dir / MANIFEST_NAME
    parsed = read_records(path, _parse_record, name="degradation manifest", strict=True)
    return {record.file: record for record in parsed}


def _parse_record(line: str) -> DegradeRecord:
    return DegradeRecord(**json.loads(line))


def _record_line(record: DegradeRecord) -> str:
    return json.dumps(asdict(record))


def write_manifest(out_dir: Path, records: dict[str, DegradeRecord]) -> Path:
    """Write all records, one JSON object per line sorted by file, atomically."""
    path = out_dir / MANIFEST_NAME
    write_records(path, (_record_line(records[name]) for name in sorted(records)))
    return path


# ---------------------------------------------------------------------------------------------
# One image, then a set


def degrade_one(
    source: ImageSource, out_dir: Path, config: DegradeConfig, previous: DegradeRecord | None
) -> DegradeOutcome:
    """Read, prepare, degrade and write one image; failures are returned, never raised."""
    relative = source.relative.as_posix()
    record = plan_record(relative, config)
    target = out_dir / writable_name(source.relative)
    if target.exists() and not config.overwrite:
        if previous == record:
            return DegradeOutcome(relative, ItemStatus.SKIPPED, record)
        return DegradeOutcome(
            relative,
            ItemStatus.FAILED,
            error=f"{target}: exists from another run; pass --overwrite",
        )
    try:
        image = read_image(source.path, max_pixels=config.max_pixels)
        hq = prepare_hq(image.rgb, config.size)
        lq = degrade(hq, record.params, _streams(record.seed)[1])
        write_image(target, lq, grayscale=image.grayscale, quality=LQ_JPEG_QUALITY)
        if config.hq_out is not None:
            write_image(
                config.hq_out / writable_name(source.relative),
                hq,
                grayscale=image.grayscale,
                quality=LQ_JPEG_QUALITY,
            )
    except ITEM_ERRORS as exc:
        return DegradeOutcome(relative, ItemStatus.FAILED, error=failure(source.path, exc))
    return DegradeOutcome(relative, ItemStatus.OK, record)


def _init_worker() -> None:
    cv2.setNumThreads(1)


def make_lq_set(
    sources: Sequence[ImageSource],
    out_dir: Path,
    config: DegradeConfig,
    *,
    workers: int = 1,
    on_done: Callable[[DegradeOutcome], None] | None = None,
) -> list[DegradeOutcome]:
    """Degrade every source into `out_dir` (same relative paths) and update the manifest.

    Returns one outcome per source in input order. The manifest keeps records of earlier runs
    for files this run did not touch.
    """
    _check_output_folder(out_dir, sources)
    _remove_temporaries(out_dir, sources, config)
    manifest = out_dir / MANIFEST_NAME
    previous = read_manifest(out_dir)
    if manifest.exists():
        write_manifest(out_dir, previous)  # drops a line a killed run cut short
    tasks = [(s, out_dir, config, previous.get(s.relative.as_posix())) for s in sources]
    outcomes: list[DegradeOutcome] = []
    with RecordFile(manifest, sync=False) as log:
        for outcome in _outcomes(tasks, workers):
            if outcome.status is ItemStatus.OK and outcome.record is not None:
                log.append(_record_line(outcome.record))  # after its image is written
            outcomes.append(outcome)
            if on_done:
                on_done(outcome)
    records = dict(previous)
    records.update({o.file: o.record for o in outcomes if o.record is not None})
    if records:
        write_manifest(out_dir, records)
    return outcomes


def _outcomes(tasks: Sequence[_Task], workers: int) -> Iterator[DegradeOutcome]:
    """degrade_one of every task, in order, in up to `workers` processes."""
    # A worker process costs about a second to start: only worth it with enough images each.
    workers = min(workers, max(1, len(tasks) // MIN_IMAGES_PER_WORKER))
    if workers <= 1:
        yield from (degrade_one(*task) for task in tasks)
        return
    # forkserver/spawn: a plain fork of a process with live threads (progress bar, OpenCV's
    # pool) can deadlock the children.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        yield from pool.map(degrade_one, *zip(*tasks, strict=True), chunksize=1)


def _check_output_folder(out_dir: Path, sources: Sequence[ImageSource]) -> None:
    """Refuse an output folder that would overwrite inputs, or that cannot be written, and two
    inputs written to one file (a.gif and a.png: a GIF is written as PNG)."""
    owners = claim_outputs(
        (real_path(out_dir / writable_name(source.relative)), source.path) for source in sources
    )
    clash = clashing_input(owners, sources)
    if clash is not None:
        raise DrbfrError(
            f"{out_dir}: output would overwrite the input {clash[1]}; choose another -o"
        )
    make_output_folder(out_dir)


def _remove_temporaries(
    out_dir: Path, sources: Sequence[ImageSource], config: DegradeConfig
) -> None:
    """Delete the temporaries a killed run left in the folders images go to (nothing else)."""
    roots = [out_dir] + ([config.hq_out] if config.hq_out is not None else [])
    folders = {root / source.relative.parent for root in roots for source in sources}
    remove_temporaries({*roots, *folders})
