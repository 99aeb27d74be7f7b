"""The score stage of `drbfr restore` (--metrics): NIQE and identity distance of each face."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from drbfr_cli.folders import CROPPED_FACES, RESTORED_FACES
from drbfr_cli.imaging import as_written, to_uint8
from drbfr_cli.restore.encode import file_settings
from drbfr_cli.restore.jobs import FaceJob, ImageJob
from drbfr_cli.restore.options import RestoreOptions, RestoreTools
from drbfr_cli.restore.plan import face_path

if TYPE_CHECKING:
    from drbfr_cli.metrics.identity import FaceEmbedder


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
    files as written (niqe_scores), the pixels `drbfr eval` reads, so the two agree; identity
    compares the aligned input and restored crops."""
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
