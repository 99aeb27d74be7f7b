"""Identity distance: an optional hook for a face-recognition embedder (none ships with drbfr).

Papers in blind face restoration report the cosine distance between ArcFace embeddings of the
restored and ground-truth faces. drbfr exposes the metric and leaves the embedder to the caller.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class FaceEmbedder(Protocol):
    """Maps an aligned face (float32 RGB HxWx3 in [0, 1]) to an embedding vector."""

    def __call__(self, face: np.ndarray) -> np.ndarray: ...


def identity_distance(embedder: FaceEmbedder, restored: np.ndarray, reference: np.ndarray) -> float:
    """Cosine distance 1 - cos(e(restored), e(reference)), in [0, 2]; 0 = same identity."""
    a = np.asarray(embedder(restored), dtype=np.float64).ravel()
    b = np.asarray(embedder(reference), dtype=np.float64).ravel()
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
