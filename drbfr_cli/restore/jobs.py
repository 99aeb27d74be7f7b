"""The records the restore stages hand each other: one ImageJob per input image, one FaceJob
per aligned face. Both are frozen: a stage returns a new record (dataclasses.replace) rather
than changing the one it was given, and an image's status and error change only through the
ImageJob methods below.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from drbfr_cli.batch import failure as batch_failure
from drbfr_cli.faces.align import AlignedFace
from drbfr_cli.imaging import ImageData, ImageSource
from drbfr_cli.restore.report import ImageRecord, ImageStatus

if TYPE_CHECKING:
    from drbfr_cli.estimate import DegradationEstimate


@dataclass(frozen=True, eq=False)
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


@dataclass(frozen=True, eq=False)
class ImageJob:
    """One input image between the stages; each stage returns the next one's."""

    source: ImageSource
    output: Path
    status: ImageStatus = ImageStatus.OK
    error: str | None = None
    image: ImageData | None = None
    faces: tuple[FaceJob, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    """Seconds per stage (read, detect, align, paste, metrics, write)."""
    earlier: ImageRecord | None = None
    """A skipped image's record, from the run that wrote its output."""
    rank: int | None = 0
    """The rank restoring it (RestoreOptions.rank)."""

    def failed(self, error: str, *, keep_image: bool = False) -> ImageJob:
        """This image failed with `error` (its pixels dropped unless `keep_image`)."""
        image = self.image if keep_image else None
        return replace(self, status=ImageStatus.FAILED, error=error, image=image)

    def skipped(self, earlier: ImageRecord) -> ImageJob:
        """This image was finished by an earlier run, which wrote `earlier`."""
        return replace(self, status=ImageStatus.SKIPPED, earlier=earlier)

    def without_face(self, *, keep_image: bool) -> ImageJob:
        """No face was found in this image; with `keep_image` its background is still written."""
        image = self.image if keep_image else None
        return replace(self, status=ImageStatus.NO_FACE, image=image)


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the seconds spent in the block to timings[stage]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def failure(path: Path, exc: BaseException) -> str:
    """The one-line reason a stage failed on the image at `path`."""
    return batch_failure(path, exc, memory_hint="use a smaller --upscale or free memory")
