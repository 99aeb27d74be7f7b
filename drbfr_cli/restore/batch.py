"""The restore stage of `drbfr restore`: aligned crops through a FaceRestorer, in batches.

Each face is estimated first (when the restorer can), faces below --skip-clean severity keep
their crop, the others are restored; every function returns new FaceJobs (jobs.py). A GPU
out-of-memory error halves the batch size for the rest of the run and retries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from drbfr_cli import devices
from drbfr_cli.errors import DrbfrError
from drbfr_cli.faces.align import FACE_SIZE
from drbfr_cli.imaging import faces_to_tensor, tensor_to_faces
from drbfr_cli.restore.jobs import FaceJob
from drbfr_cli.restore.prepare import resize_square

if TYPE_CHECKING:
    from drbfr_cli.restore.restorer import FaceRestorer


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


def estimate_crops(restorer: FaceRestorer, faces: Sequence[FaceJob]) -> list[FaceJob]:
    """The faces with their degradation estimates, when the restorer makes them (a bundle with
    a degradation head: BundleRestorer.estimate); the estimate sees the crop the restorer does."""
    estimate = getattr(restorer, "estimate", None)
    if estimate is None or not faces:
        return list(faces)
    side = restorer.face_size
    estimates = estimate(faces_to_tensor([resize_square(f.aligned.crop, side) for f in faces]))
    values = estimates or [None] * len(faces)
    return [replace(face, estimate=value) for face, value in zip(faces, values, strict=True)]


def keep_clean(faces: Sequence[FaceJob], threshold: float | None) -> list[FaceJob]:
    """The faces, those whose severity is below `threshold` marked clean (their crop is their
    restoration); the others still need restoring."""
    return [
        replace(face, restored=face.aligned.crop, clean=True)
        if threshold is not None and face.estimate and face.estimate.severity < threshold
        else face
        for face in faces
    ]


class BatchRunner:
    """Restores faces in restorer calls of at most `batch_size`; a GPU out-of-memory error
    halves the batch size for the rest of the run and retries. Each face is estimated first
    (when the restorer can); faces below `skip_clean` severity are kept as they are."""

    def __init__(
        self,
        restorer: FaceRestorer,
        batch_size: int,
        notice: Callable[[str], None],
        skip_clean: float | None = None,
    ) -> None:
        self.restorer = restorer
        self.batch_size = batch_size
        self._notice = notice
        self.skip_clean = skip_clean

    def restore(self, faces: Sequence[FaceJob]) -> list[FaceJob]:
        """The faces restored, in order, each with its `restored` and `seconds`."""
        done: list[FaceJob] = []
        while len(done) < len(faces):
            chunk = faces[len(done) : len(done) + self.batch_size]
            restored = self._try(chunk)
            if restored is None:
                self._halve()
            else:
                done += restored
        return done

    def _try(self, chunk: Sequence[FaceJob]) -> list[FaceJob] | None:
        """The chunk restored; None when it ran out of memory."""
        began = time.perf_counter()
        try:
            faces = keep_clean(estimate_crops(self.restorer, chunk), self.skip_clean)
            todo = [face for face in faces if not face.clean]
            crops, seeds = [f.aligned.crop for f in todo], [f.seed for f in todo]
            restored = iter(restore_crops(self.restorer, crops, seeds) if todo else [])
        except MemoryError:
            return None  # host memory: as for the GPU's, a smaller batch
        except RuntimeError as exc:
            if not devices.is_out_of_memory(exc):
                raise
            return None
        seconds = (time.perf_counter() - began) / len(chunk)
        return [
            replace(face, seconds=seconds, restored=face.restored if face.clean else next(restored))
            for face in faces
        ]

    def _halve(self) -> None:
        if self.batch_size == 1:
            raise DrbfrError(
                "out of GPU memory with one face per batch; free GPU memory or use --device cpu"
            )
        devices.free_memory()
        self.batch_size //= 2
        self._notice(f"out of GPU memory: batch size lowered to {self.batch_size}")
