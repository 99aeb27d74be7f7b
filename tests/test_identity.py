"""Identity distance with dlib's real face ResNet (the `identity` extra) on real aligned faces,
in `drbfr eval --metrics ids` and `drbfr restore --metrics ids`.

dlib distance of a face to a changed copy of itself against its distances to the changed copies
of every other face of its set, measured 2026-12-02 on the 12 faces of ../shared/data/hq and the
first 24 of faces512/val, all at 256 px (these tests take 12 + 12 of them, for speed):

| set | same face (JPEG q60) | same face (mirror) | different faces |
|---|---|---|---|
| hq (12) | 0.040-0.106 | 0.104-0.226 | 0.445-1.018 |
| faces512/val (24) | 0.049-0.118 | 0.120-0.203 | 0.362-0.916 |
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import read_image, to_uint8, write_image
from drbfr_cli.metrics import identity
from drbfr_cli.metrics.identity import identity_distance, load_embedder

runner = CliRunner()
SIDE = 256


def _faces(folder: Path, count: int) -> list[np.ndarray]:
    """The first `count` faces of `folder` as uint8 RGB SIDE x SIDE."""
    files = sorted(p for p in folder.iterdir() if p.suffix in {".png", ".jpg"})[:count]
    rgb = [read_image(path).rgb for path in files]
    return [to_uint8(cv2.resize(a, (SIDE, SIDE), interpolation=cv2.INTER_AREA)) for a in rgb]


def _jpeg(face: np.ndarray, quality: int) -> np.ndarray:
    _, data = cv2.imencode(".jpg", face[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])


@pytest.fixture(scope="module")
def real_faces(hq_dir: Path, shared_dir: Path) -> list[np.ndarray]:
    """12 HQ faces and 12 generated validation faces, all aligned, at 256 px."""
    return _faces(hq_dir, 12) + _faces(shared_dir / "data" / "faces512" / "val", 12)


@pytest.mark.parametrize("change", ["jpeg60", "mirror"])
def test_a_face_is_nearer_its_own_copy_than_any_other_face(real_faces, change):
    embed = load_embedder()
    changed = [_jpeg(f, 60) if change == "jpeg60" else f[:, ::-1] for f in real_faces]
    base = [embed(face) for face in real_faces]
    other = [embed(face) for face in changed]
    assert all(e is not None for e in base + other)
    distance = np.array([[np.linalg.norm(a - b) for b in other] for a in base])
    same = np.diag(distance)
    different = distance[~np.eye(len(base), dtype=bool)].reshape(len(base), -1)
    assert (same < different.min(axis=1)).all(), (same, different.min(axis=1))
    assert same.max() < identity.SAME_PERSON < np.median(different)


def test_identity_distance_is_a_pure_function_of_two_uint8_faces(real_faces):
    a, b = real_faces[0], real_faces[1]
    assert identity_distance(a, a) == 0.0
    assert identity_distance(a, b) == pytest.approx(identity_distance(b, a))
    assert identity_distance(a, b) > identity_distance(a, _jpeg(a, 60))
    small = cv2.resize(a, (128, 128), interpolation=cv2.INTER_AREA)
    assert identity_distance(a, small) < identity.SAME_PERSON  # sizes may differ
    with pytest.raises(DrbfrError, match="uint8 RGB"):
        identity_distance(a.astype(np.float32) / 255, b)
    with pytest.raises(DrbfrError, match="could not be embedded"):
        identity_distance(a, a[:20, :20])


def test_without_the_extra_one_line_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(identity, "MODELS_PACKAGE", "face_recognition_models_not_installed")
    load_embedder.cache_clear()
    try:
        with pytest.raises(identity.IdentityUnavailableError, match=r"drbfr\[identity\]"):
            load_embedder()
        folder = tmp_path / "faces"
        write_image(folder / "a.png", np.full((64, 64, 3), 0.5, np.float32))
        restore = runner.invoke(
            app, ["restore", str(folder), "-o", str(tmp_path / "out"), "--aligned",
                  "--model", "identity", "--metrics", "ids"],
        )  # fmt: skip
        assert restore.exit_code == 2 and "drbfr[identity]" in restore.stderr
        assert "Traceback" not in restore.output
        evaluation = runner.invoke(
            app, ["eval", "--restored", str(folder), "--gt", str(folder), "--metrics", "ids"]
        )
        assert evaluation.exit_code == 1 and "skipped ids" in evaluation.stderr
        assert "drbfr[identity]" in evaluation.stderr
    finally:
        load_embedder.cache_clear()


@pytest.fixture
def eval_set(tmp_path: Path, real_faces) -> dict[str, Path]:
    """gt: 3 real faces; restored: a slight blur of each; swapped: restorations under the next
    face's name; lq: JPEG q30 inputs; plus a 16 px 'face' that cannot be embedded."""
    folders = {name: tmp_path / name for name in ("gt", "restored", "swapped", "lq")}
    faces = real_faces[:3]
    for index, face in enumerate(faces):
        name = f"{index}.png"
        restored = cv2.GaussianBlur(face, (0, 0), 1.0)
        write_image(folders["gt"] / name, face / 255.0)
        write_image(folders["restored"] / name, restored / 255.0)
        write_image(folders["swapped"] / f"{(index + 1) % 3}.png", restored / 255.0)
        write_image(folders["lq"] / f"{index}.jpg", face / 255.0, quality=30)
    tiny = np.full((16, 16, 3), 0.5, np.float32)
    for name in ("restored", "gt", "lq"):
        write_image(folders[name] / "tiny.png", tiny)
    return folders


def _eval(*args: str | Path) -> tuple[int, dict, str]:
    out = Path(str(args[-1]))
    result = runner.invoke(app, ["eval", *map(str, args[:-1]), "--out", str(out)])
    return result.exit_code, json.loads((out / "summary.json").read_text()), result.output


def test_eval_ids_against_ground_truth_and_against_lq(eval_set, tmp_path):
    code, own, output = _eval(
        "--restored", eval_set["restored"], "--gt", eval_set["gt"], "--metrics", "ids",
        tmp_path / "own",
    )  # fmt: skip
    assert code == 1, output  # the 16 px face is counted as not scored: a partial result
    assert own["unscored"] == {"ids": {"count": 1, "images": ["tiny.png"]}}
    assert own["means"]["ids"] < 0.25 and "ground truth" in own["protocol"]["ids"]
    _, swapped, _ = _eval(
        "--restored", eval_set["swapped"], "--gt", eval_set["gt"], "--metrics", "ids",
        tmp_path / "swapped",
    )  # fmt: skip
    assert swapped["means"]["ids"] > identity.SAME_PERSON > own["means"]["ids"]
    _, against_lq, _ = _eval(
        "--restored", eval_set["restored"], "--lq", eval_set["lq"], "--metrics", "ids,niqe",
        tmp_path / "lq",
    )  # fmt: skip
    assert against_lq["means"]["ids"] < 0.3 and "LQ input" in against_lq["protocol"]["ids"]
    rows = (tmp_path / "lq" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "image,ids,niqe,error" and len(rows) == 5


def test_eval_ids_needs_a_reference(eval_set):
    result = runner.invoke(app, ["eval", "--restored", str(eval_set["gt"]), "--metrics", "ids"])
    assert result.exit_code == 2 and "give --gt DIR or --lq DIR" in result.stderr


def test_restore_writes_per_face_identity_and_the_mean(real_lq_aligned_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in sorted(p.name for p in real_lq_aligned_dir.iterdir())[:2]:
        shutil.copy(real_lq_aligned_dir / name, folder / name)
    out = tmp_path / "out"
    args = ["restore", str(folder), "-o", str(out), "--aligned", "--model", "identity"]
    csv = tmp_path / "r.csv"
    result = runner.invoke(app, [*args, "--metrics", "ids,niqe", "--report-csv", str(csv)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    faces = [face for record in report["images"] for face in record["faces"]]
    values = [face["identity"] for face in faces]
    assert len(values) == 2 and all(0.0 <= v < 0.05 for v in values)  # restored = input here
    summary = report["summary"]
    assert summary["identity_mean"] == pytest.approx(np.mean(values), abs=1e-4)
    assert summary["identity_faces"] == 2 and summary["identity_failed"] == 0
    assert "dlib" in report["settings"]["identity"]
    assert "identity" in csv.read_text().splitlines()[0].split(",")
    assert "mean identity distance to input" in result.stdout
