"""Face detection on the real whole photos with the real YuNet and RetinaFace-mobile weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drbfr_cli import weights
from drbfr_cli.errors import DrbfrError
from drbfr_cli.faces.detect import (
    DetectOptions,
    DetectorKind,
    Face,
    build_detector,
    build_retinaface,
    detect_faces,
    prior_boxes,
    select_faces,
    working_scale,
)
from drbfr_cli.imaging import read_image

EXPECTED_FACES = {
    # file: (YuNet @ 0.6, RetinaFace-mobilenet0.25 @ 0.97), from ../shared/data/README.md
    "00.jpg": (2, 2),
    "10045.png": (4, 3),
    "Blake_Lively.jpg": (2, 2),
    "example.jpg": (3, 3),
    "rfpp_06.png": (2, 2),
}
REAL_KINDS = (DetectorKind.YUNET, DetectorKind.RETINAFACE_MOBILE)


@pytest.fixture(scope="module")
def photos(real_lq_whole_dir: Path) -> dict[str, np.ndarray]:
    return {name: read_image(real_lq_whole_dir / name).rgb for name in EXPECTED_FACES}


@pytest.fixture(scope="module")
def detectors(shared_weights_dir: Path) -> dict[DetectorKind, object]:
    return {kind: build_detector(kind, shared_weights_dir) for kind in REAL_KINDS}


@pytest.fixture(scope="module")
def own_size(photos, detectors) -> dict[tuple[DetectorKind, str], list[Face]]:
    """Every detector on every photo at the photo's own size, default thresholds."""
    options = DetectOptions(max_side=None)
    return {
        (kind, name): detect_faces(detector, image, options)
        for kind, detector in detectors.items()
        for name, image in photos.items()
    }


def _iou(a: Face, b: Face) -> float:
    x0, y0 = max(a.box[0], b.box[0]), max(a.box[1], b.box[1])
    x1, y1 = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a.area + b.area - inter)


@pytest.mark.parametrize("kind", REAL_KINDS)
def test_face_counts_at_own_size_match_the_data_readme(own_size, kind):
    column = REAL_KINDS.index(kind)
    found = {name: len(own_size[kind, name]) for name in EXPECTED_FACES}
    assert found == {name: counts[column] for name, counts in EXPECTED_FACES.items()}


@pytest.mark.parametrize("kind", REAL_KINDS)
def test_capped_resolution_finds_the_same_faces(photos, detectors, own_size, kind):
    capped_any = False
    for name, image in photos.items():
        capped_any |= working_scale(image.shape[:2], 1024) < 1.0
        capped = detect_faces(detectors[kind], image, DetectOptions(max_side=1024))
        reference = own_size[kind, name]
        assert len(capped) == len(reference), name
        for face in capped:
            best = max(reference, key=lambda ref, face=face: _iou(face, ref))
            assert _iou(face, best) > 0.7, name
            error = np.linalg.norm(face.landmarks - best.landmarks, axis=1).max()
            assert error < 0.15 * best.size + 1.0, name  # a few px on the 21 px face
    assert capped_any, "no photo was larger than the cap: the test proves nothing"


@pytest.mark.parametrize("kind", REAL_KINDS)
def test_landmarks_are_ordered_in_the_image(own_size, kind):
    faces = [face for (k, _), found in own_size.items() if k == kind for face in found]
    assert len(faces) >= 12
    for face in faces:
        left_eye, right_eye, nose, left_mouth, right_mouth = face.landmarks
        assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
        x0, y0, x1, y1 = face.box
        margin = 0.1 * face.size
        assert np.all(face.landmarks[:, 0] > x0 - margin) and np.all(
            face.landmarks[:, 0] < x1 + margin
        )
        assert np.all(face.landmarks[:, 1] > y0 - margin) and np.all(
            face.landmarks[:, 1] < y1 + margin
        )
        assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32


def test_yunet_and_retinaface_agree_on_shared_faces(own_size):
    for name in EXPECTED_FACES:
        for face in own_size[DetectorKind.RETINAFACE_MOBILE, name]:
            partners = own_size[DetectorKind.YUNET, name]
            best = max(partners, key=lambda other, face=face: _iou(face, other))
            assert _iou(face, best) > 0.6, name
            assert np.abs(face.landmarks - best.landmarks).max() < 0.15 * face.size, name


@pytest.mark.parametrize("kind", REAL_KINDS)
def test_extreme_aspect_ratios_and_tiny_images(detectors, kind):
    for shape in ((1, 4000, 3), (4000, 2, 3), (1, 1, 3)):
        assert detect_faces(detectors[kind], np.zeros(shape, np.float32), DetectOptions()) == []


def test_filters_on_a_real_photo(photos, detectors):
    image, yunet = photos["10045.png"], detectors[DetectorKind.YUNET]
    all_faces = detect_faces(yunet, image, DetectOptions())
    areas = [face.area for face in all_faces]
    assert areas == sorted(areas, reverse=True)
    assert len(detect_faces(yunet, image, DetectOptions(min_face=40))) == 3
    largest = detect_faces(yunet, image, DetectOptions(max_faces=1))
    assert len(largest) == 1 and largest[0].area == max(areas)
    assert len(detect_faces(yunet, image, DetectOptions(threshold=0.8))) == 3


def _face(x0: float, y0: float, side: float, score: float = 0.9) -> Face:
    points = np.full((5, 2), (x0 + side / 2, y0 + side / 2), dtype=np.float32)
    return Face(box=(x0, y0, x0 + side, y0 + side), score=score, landmarks=points)


def test_select_faces_center_size_and_count():
    faces = [_face(0, 0, 30), _face(40, 40, 20), _face(70, 0, 50)]
    shape = (100, 100)
    centre = select_faces(faces, shape, DetectOptions(only_center_face=True))
    assert [face.box for face in centre] == [(40, 40, 60, 60)]
    assert [face.size for face in select_faces(faces, shape, DetectOptions())] == [50, 30, 20]
    assert [face.size for face in select_faces(faces, shape, DetectOptions(min_face=25))] == [
        50,
        30,
    ]
    assert len(select_faces(faces, shape, DetectOptions(max_faces=2))) == 2
    assert select_faces([], shape, DetectOptions(only_center_face=True)) == []


def test_face_scaled_maps_box_and_landmarks():
    face = _face(10, 20, 30).scaled(2.0)
    assert face.box == (20.0, 40.0, 80.0, 100.0)
    assert np.allclose(face.landmarks, 50.0 * np.ones((5, 2)) + [0, 20])


def test_prior_boxes_equal_facexlib_priorbox():
    from facexlib.detection.retinaface import generate_config
    from facexlib.detection.retinaface_utils import PriorBox

    cfg = generate_config("mobile0.25")
    for height, width in [(77, 100), (64, 64), (33, 129)]:
        ours = prior_boxes(cfg, height, width)
        reference = PriorBox(cfg, image_size=(height, width)).forward().numpy()
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
def test_retinaface_resnet50_loads_through_the_registry(tmp_path, register_weights):
    torch.manual_seed(0)
    net = build_retinaface(DetectorKind.RETINAFACE, torch.device("cpu"))
    state = {f"module.{key}": value for key, value in net.state_dict().items()}
    path = tmp_path / "detection_Resnet50_Final.pth"
    torch.save(state, path)
    register_weights("retinaface-resnet50", path)
    detector = build_detector("retinaface", tmp_path)
    loaded = detector.net.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in net.state_dict().items())
    image = np.random.default_rng(0).random((64, 80, 3), dtype=np.float32)
    faces = detect_faces(detector, image, DetectOptions(threshold=0.0, max_faces=3))
    assert len(faces) == 3 and all(face.landmarks.shape == (5, 2) for face in faces)


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
def test_wrong_layout_is_reported_as_corrupt(tmp_path, register_weights, shared_weights_dir):
    path = tmp_path / "detection_Resnet50_Final.pth"
    path.write_bytes((shared_weights_dir / "detection_mobilenet0.25_Final.pth").read_bytes())
    register_weights("retinaface-resnet50", path)
    with pytest.raises(weights.WeightsCorruptError, match="not a RetinaFace checkpoint"):
        build_detector(DetectorKind.RETINAFACE, tmp_path)


def test_corrupt_weights_are_never_loaded(tmp_path, shared_weights_dir):
    data = bytearray((shared_weights_dir / "face_detection_yunet_2023mar.onnx").read_bytes())
    data[1000] ^= 0xFF
    (tmp_path / "face_detection_yunet_2023mar.onnx").write_bytes(bytes(data))
    with pytest.raises(weights.WeightsCorruptError, match="corrupt"):
        build_detector("yunet", tmp_path)


def test_unknown_detector_is_a_one_line_error():
    with pytest.raises(DrbfrError, match="unknown detector 'mtcnn'; choose one of"):
        build_detector("mtcnn", None)
