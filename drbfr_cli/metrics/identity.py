"""Identity distance: the Euclidean distance between dlib's 128-d face ResNet embeddings.

dlib's model (`dlib_face_recognition_resnet_model_v1.dat`, trained so that two photos of one
person lie closer than 0.6) and its 5-point shape predictor come from the PyPI package
`face_recognition_models`; `dlib-bin` runs them. Both are the optional extra `drbfr[identity]`.

Faces are aligned crops: dlib's own face detector is not run. The shape predictor places its
5 landmarks inside a fixed rectangle, FACE_BOX of the crop (where dlib's detector puts the face
on FFHQ-aligned crops), so every aligned crop gets an embedding; an embedding that still fails
(a crop too small, a non-finite vector) is reported as None, for the caller to count.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from drbfr_cli.errors import DrbfrError

MODELS_PACKAGE = "face_recognition_models"
SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
EMBEDDING_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
FACE_BOX = (0.2, 0.3, 0.8, 0.89)
"""Face rectangle (x0, y0, x1, y1) as fractions of an FFHQ-aligned crop: the mean box of dlib's
frontal face detector on 52 aligned faces of ../shared (hq, faces512/val) was (0.194, 0.302,
0.782, 0.889). The whole crop as the rectangle misplaces the landmarks (a mirrored face then
scored up to 0.82 from itself, farther than some other people)."""
MIN_SIDE = 32
"""Smallest crop side (pixels) that is embedded; smaller crops fail."""
SAME_PERSON = 0.6
"""dlib's published threshold: distances below it are taken as one person."""
DESCRIPTION = (
    "Euclidean distance of dlib face ResNet v1 128-d embeddings (face_recognition_models), "
    "5-point landmarks in a fixed face box of the aligned crop; < 0.6: same person by dlib's "
    "threshold"
)
MISSING_EXTRA = (
    "identity metrics need the optional extra: pip install 'drbfr[identity]' "
    "(dlib-bin and face_recognition_models)"
)


class IdentityUnavailableError(DrbfrError):
    """dlib or the face_recognition_models files are not installed."""


class FaceEmbedder(Protocol):
    """Maps an aligned face (uint8 RGB HxWx3) to an embedding vector, or None on failure."""

    def __call__(self, face: np.ndarray) -> np.ndarray | None: ...


def model_files() -> tuple[Path, Path]:
    """(shape predictor, face ResNet) paths inside face_recognition_models.

    The package is located, never imported: its __init__ needs pkg_resources, which current
    setuptools no longer ships.
    """
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise IdentityUnavailableError(MISSING_EXTRA)
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = folder / SHAPE_MODEL, folder / EMBEDDING_MODEL
    missing = [path.name for path in files if not path.is_file()]
    if missing:
        raise IdentityUnavailableError(f"{folder}: {', '.join(missing)} missing; {MISSING_EXTRA}")
    return files


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError:
        raise IdentityUnavailableError(MISSING_EXTRA) from None
    return dlib


@dataclass(frozen=True)
class DlibEmbedder:
    """dlib's face ResNet on aligned crops; build with `load_embedder`."""

    shape_predictor: Any
    recognizer: Any
    rectangle: Any
    """dlib.rectangle factory (x0, y0, x1, y1)."""
    box: tuple[float, float, float, float] = FACE_BOX

    def __call__(self, face: np.ndarray) -> np.ndarray | None:
        """128-d embedding of an aligned uint8 RGB HxWx3 face; None when it cannot be made."""
        check_face(face)
        height, width = face.shape[:2]
        if min(height, width) < MIN_SIDE:
            return None
        pixels = np.ascontiguousarray(face)
        x0, y0, x1, y1 = self.box
        box = self.rectangle(
            round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height)
        )
        shape = self.shape_predictor(pixels, box)
        vector = np.asarray(self.recognizer.compute_face_descriptor(pixels, shape), np.float64)
        return vector if vector.shape == (128,) and np.isfinite(vector).all() else None


def check_face(face: np.ndarray) -> None:
    """A DrbfrError unless `face` is a uint8 RGB HxWx3 array."""
    if face.dtype != np.uint8 or face.ndim != 3 or face.shape[2] != 3:
        raise DrbfrError(
            f"identity needs uint8 RGB HxWx3 faces, got {face.dtype} of shape {face.shape}"
        )


def check_available() -> None:
    """IdentityUnavailableError unless dlib imports and face_recognition_models has its two
    model files (neither is read): `restore --metrics ids` calls this before any model loads."""
    _import_dlib()
    model_files()


@cache
def load_embedder() -> DlibEmbedder:
    """The dlib embedder (loaded once per process); IdentityUnavailableError without the extra."""
    dlib = _import_dlib()
    shape_path, model_path = model_files()
    return DlibEmbedder(
        shape_predictor=dlib.shape_predictor(str(shape_path)),
        recognizer=dlib.face_recognition_model_v1(str(model_path)),
        rectangle=dlib.rectangle,
    )


def embedding_distance(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """Euclidean distance of two embeddings; None when either is missing."""
    if a is None or b is None:
        return None
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def identity_distance(a: np.ndarray, b: np.ndarray, embedder: FaceEmbedder | None = None) -> float:
    """Identity distance of two aligned faces (uint8 RGB HxWx3, any sizes); 0 = same embedding.

    Uses dlib's embedder unless another is given. Raises IdentityUnavailableError without the
    `identity` extra, DrbfrError when a face cannot be embedded.
    """
    embed = embedder or load_embedder()
    distance = embedding_distance(embed(a), embed(b))
    if distance is None:
        raise DrbfrError("identity: a face could not be embedded (is it an aligned face crop?)")
    return distance
