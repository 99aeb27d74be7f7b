"""Face detection: YuNet (OpenCV FaceDetectorYN) and RetinaFace (facexlib's network classes).

Every detector answers `detect(image, threshold)` on the image it is given; `detect_faces`
runs one on a capped working resolution and applies the user's filters. Landmarks are five
points in image pixels, in the image's own orientation: the eye on the image's left first,
then the other eye, the nose tip, the mouth corner on the image's left, the other corner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from drbfr_cli import weights
from drbfr_cli.errors import DrbfrError, load_strict

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_SIDE = 1024
"""Longest side of the working resolution detection runs at; larger images are downscaled."""
NMS_IOU = 0.4
"""IoU above which the lower-scoring of two RetinaFace boxes is dropped."""
YUNET_NMS_IOU = 0.3
_BGR_MEAN = (104.0, 117.0, 123.0)
"""Per-channel BGR mean (0-255) the RetinaFace weights were trained with."""


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face in image pixels."""

    box: tuple[float, float, float, float]
    """x0, y0, x1, y1."""
    score: float
    landmarks: np.ndarray
    """float32 5x2 (x, y): image-left eye, other eye, nose, image-left mouth corner, other."""

    @property
    def size(self) -> float:
        """The shorter side of the box."""
        x0, y0, x1, y1 = self.box
        return min(x1 - x0, y1 - y0)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    def scaled(self, factor: float) -> Face:
        """This face with every coordinate multiplied by `factor`."""
        box = tuple(float(v) * factor for v in self.box)
        return replace(self, box=box, landmarks=(self.landmarks * factor).astype(np.float32))


class DetectorKind(StrEnum):
    RETINAFACE = "retinaface"
    RETINAFACE_MOBILE = "retinaface-mobile"
    YUNET = "yunet"


DEFAULT_THRESHOLDS: dict[DetectorKind, float] = {
    DetectorKind.RETINAFACE: 0.97,
    DetectorKind.RETINAFACE_MOBILE: 0.97,
    DetectorKind.YUNET: 0.6,
}
"""Score thresholds: 0.97 is what GFPGAN/CodeFormer use with RetinaFace; 0.6 is YuNet's default
in OpenCV's face detection sample."""

DEFAULT_RETRY_THRESHOLDS: dict[DetectorKind, float] = {
    DetectorKind.RETINAFACE: 0.6,
    DetectorKind.RETINAFACE_MOBILE: 0.6,
    DetectorKind.YUNET: 0.4,
}
"""The lower score an image gets a second look at when no face reaches the threshold: degraded
photos score low (BENCHMARKS.md, "Face detection on degraded photos")."""

WEIGHT_NAMES: dict[DetectorKind, str] = {
    DetectorKind.RETINAFACE: "retinaface-resnet50",
    DetectorKind.RETINAFACE_MOBILE: "retinaface-mobilenet0.25",
    DetectorKind.YUNET: "yunet-2023mar",
}


class Detector(Protocol):
    """Finds faces in a float32 RGB HxWx3 [0, 1] image at the image's own resolution."""

    kind: DetectorKind

    def detect(self, image: np.ndarray, threshold: float) -> list[Face]: ...


@dataclass(frozen=True)
class DetectOptions:
    """User filters applied after detection."""

    threshold: float | None = None
    """Minimum score; None: the detector's default (DEFAULT_THRESHOLDS)."""
    retry_threshold: float | None = None
    """When no face reaches `threshold`, the faces scoring at least this are taken instead;
    None: the detector's default (DEFAULT_RETRY_THRESHOLDS); 0: no second look."""
    min_face: float = 0.0
    """Drop faces whose box is shorter than this on either side (image pixels)."""
    max_faces: int | None = None
    """Keep at most this many faces, largest first."""
    only_center_face: bool = False
    """Keep only the face whose box centre is nearest the image centre."""
    max_side: int | None = DEFAULT_MAX_SIDE
    """Working resolution cap (longest side); None: detect at the image's own size."""


# --------------------------------------------------------------------------- the stage


def detect_faces(detector: Detector, image: np.ndarray, options: DetectOptions) -> list[Face]:
    """Faces in `image` (float32 RGB HxWx3 in [0, 1]), largest first, in image pixels: those
    reaching the threshold, or when there is none, those reaching the retry threshold.

    One detector pass at the lower of the two serves both: greedy NMS never lets a box suppress
    a higher-scoring one, so the faces above the threshold are those a pass at it would find.
    """
    threshold, retry = thresholds(detector.kind, options)
    faces = detect_scaled(detector, image, min(threshold, retry), options.max_side)
    shape = image.shape[:2]
    kept = select_faces([f for f in faces if f.score >= threshold], shape, options)
    if kept or retry >= threshold:
        return kept
    return select_faces([f for f in faces if f.score >= retry], shape, options)


def thresholds(kind: DetectorKind, options: DetectOptions) -> tuple[float, float]:
    """(threshold, retry threshold) of `options` for a detector of `kind`; a retry threshold
    of 0 or above the threshold means no second look (it is then returned as the threshold)."""
    threshold = DEFAULT_THRESHOLDS[kind] if options.threshold is None else options.threshold
    retry = (
        DEFAULT_RETRY_THRESHOLDS[kind]
        if options.retry_threshold is None
        else options.retry_threshold
    )
    if retry <= 0 or retry > threshold:
        retry = threshold
    return threshold, retry


def detect_scaled(
    detector: Detector, image: np.ndarray, threshold: float, max_side: int | None
) -> list[Face]:
    """The detector's faces at `threshold` on `image` downscaled to `max_side`, in image
    pixels."""
    factor = working_scale(image.shape[:2], max_side)
    if factor >= 1.0:
        return detector.detect(image, threshold)
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return [face.scaled(1.0 / factor) for face in detector.detect(small, threshold)]


def working_scale(shape: tuple[int, int], max_side: int | None) -> float:
    """The factor (<= 1) that brings the longest side of an image of `shape` to `max_side`."""
    if max_side is None or max(shape) <= max_side:
        return 1.0
    return max_side / max(shape)


def select_faces(
    faces: Sequence[Face], shape: tuple[int, int], options: DetectOptions
) -> list[Face]:
    """Apply min_face, only_center_face and max_faces; the result is sorted largest first."""
    kept = [face for face in faces if face.size >= options.min_face]
    kept.sort(key=lambda face: face.area, reverse=True)
    if options.only_center_face and kept:
        kept = [min(kept, key=lambda face: _distance_to_centre(face, shape))]
    if options.max_faces is not None:
        kept = kept[: options.max_faces]
    return kept


def _distance_to_centre(face: Face, shape: tuple[int, int]) -> float:
    x0, y0, x1, y1 = face.box
    height, width = shape
    return float(np.hypot((x0 + x1 - width) / 2, (y0 + y1 - height) / 2))


# --------------------------------------------------------------------------- YuNet


class YuNetDetector:
    """OpenCV's FaceDetectorYN on the YuNet ONNX model."""

    kind = DetectorKind.YUNET

    def __init__(self, *, model_path: Path) -> None:
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(model_path), "", (320, 320), 0.5, YUNET_NMS_IOU, 5000
            )
        except cv2.error as exc:
            raise DrbfrError(
                f"{model_path}: OpenCV cannot load this YuNet model ({exc.msg})"
            ) from None

    def detect(self, image: np.ndarray, threshold: float) -> list[Face]:
        height, width = image.shape[:2]
        self._net.setInputSize((width, height))
        self._net.setScoreThreshold(threshold)
        _, rows = self._net.detect(_to_bgr_uint8(image))
        return [] if rows is None else [_yunet_face(row) for row in rows]


def _yunet_face(row: np.ndarray) -> Face:
    # YuNet rows: x, y, w, h, 5 landmarks (x, y) starting with the image-left eye, score.
    x, y, w, h = (float(v) for v in row[:4])
    landmarks = row[4:14].reshape(5, 2).astype(np.float32)
    return Face(box=(x, y, x + w, y + h), score=float(row[14]), landmarks=landmarks)


def _to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    rgb = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


# --------------------------------------------------------------------------- RetinaFace


class RetinaFaceDetector:
    """facexlib's RetinaFace network, weights loaded here (never downloaded by facexlib)."""

    def __init__(
        self,
        *,
        kind: DetectorKind,
        state_dict: dict[str, torch.Tensor],
        device: torch.device | str = "cpu",
    ) -> None:
        import torch

        self.kind = kind
        self.device = torch.device(device)
        self.net = build_retinaface(kind, self.device)
        load_retinaface_state(self.net, state_dict, name=WEIGHT_NAMES[kind])

    def detect(self, image: np.ndarray, threshold: float) -> list[Face]:
        import torch

        height, width = image.shape[:2]
        tensor = _retinaface_input(image).to(self.device)
        with torch.inference_mode():
            loc, conf, landm = self.net(tensor)
        cfg = self.net.cfg
        priors = torch.from_numpy(prior_boxes(cfg, height, width)).to(self.device)
        return _decode_retinaface(loc[0], conf[0], landm[0], priors, (width, height), threshold)


def build_retinaface(kind: DetectorKind, device: torch.device) -> torch.nn.Module:
    """An untrained facexlib RetinaFace of the layout `kind` names, in eval mode on `device`."""
    from facexlib.detection.retinaface import RetinaFace

    network = {DetectorKind.RETINAFACE: "resnet50", DetectorKind.RETINAFACE_MOBILE: "mobile0.25"}
    if kind not in network:
        raise DrbfrError(f"{kind} is not a RetinaFace detector")
    return RetinaFace(network_name=network[kind], half=False, phase="test", device=device).eval()


def load_retinaface_state(
    net: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, name: str
) -> None:
    """Load a RetinaFace state dict (keys with or without DataParallel's `module.`)."""
    cleaned = {key.removeprefix("module."): value for key, value in state_dict.items()}
    what = "not a RetinaFace checkpoint"
    load_strict(net, cleaned, what=what, where=name, error=weights.WeightsCorruptError)


def _retinaface_input(image: np.ndarray) -> torch.Tensor:
    import torch

    bgr = image[:, :, ::-1] * 255.0 - np.asarray(_BGR_MEAN, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1), dtype=np.float32))[None]


def prior_boxes(cfg: dict, height: int, width: int) -> np.ndarray:
    """RetinaFace anchors (cx, cy, w, h relative to the image), in the network's output order.

    The same anchors as facexlib's `PriorBox`, vectorised: per level, rows then columns then
    anchor sizes.
    """
    levels = []
    for step, sizes in zip(cfg["steps"], cfg["min_sizes"], strict=True):
        rows, cols = -(-height // step), -(-width // step)
        cy, cx = np.meshgrid(
            (np.arange(rows) + 0.5) * step, (np.arange(cols) + 0.5) * step, indexing="ij"
        )
        n_sizes = len(sizes)
        grid = np.empty((rows, cols, n_sizes, 4), dtype=np.float64)
        grid[..., 0] = (cx / width)[..., None]
        grid[..., 1] = (cy / height)[..., None]
        grid[..., 2] = np.asarray(sizes, dtype=np.float64) / width
        grid[..., 3] = np.asarray(sizes, dtype=np.float64) / height
        levels.append(grid.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


def _decode_retinaface(
    loc: torch.Tensor,
    conf: torch.Tensor,
    landm: torch.Tensor,
    priors: torch.Tensor,
    size: tuple[int, int],
    threshold: float,
) -> list[Face]:
    import torchvision
    from facexlib.detection.retinaface_utils import decode, decode_landm

    variance = [0.1, 0.2]
    scores = conf[:, 1]
    keep = scores > threshold
    if not bool(keep.any()):
        return []
    width, height = size
    boxes = decode(loc[keep], priors[keep], variance)
    boxes = boxes * boxes.new_tensor([width, height] * 2)
    points = decode_landm(landm[keep], priors[keep], variance)
    points = points * points.new_tensor([width, height] * 5)
    scores = scores[keep]
    order = torchvision.ops.nms(boxes.float(), scores.float(), NMS_IOU)
    return [
        Face(
            box=tuple(float(v) for v in boxes[i]),
            score=float(scores[i]),
            landmarks=points[i].reshape(5, 2).float().cpu().numpy(),
        )
        for i in order.tolist()
    ]


# --------------------------------------------------------------------------- factory


def build_detector(
    kind: DetectorKind | str, weights_dir: Path | None, device: torch.device | str = "cpu"
) -> Detector:
    """The detector `kind`, its weights found and sha256-checked in the weights folders."""
    try:
        kind = DetectorKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in DetectorKind)
        raise DrbfrError(f"unknown detector {kind!r}; choose one of {known}") from None
    name = WEIGHT_NAMES[kind]
    if kind is DetectorKind.YUNET:
        return YuNetDetector(model_path=weights.verified_path(name, weights_dir))
    state = weights.load_verified(name, weights_dir)
    return RetinaFaceDetector(kind=kind, state_dict=state, device=device)
