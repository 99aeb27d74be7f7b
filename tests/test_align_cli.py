"""`drbfr align` end to end through the real CLI, on real photos, with the real YuNet detector."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.faces.align import align_face, estimate_affine, template, transform_points
from drbfr_cli.faces.detect import Face
from drbfr_cli.imaging import read_image, to_uint8, write_image

runner = CliRunner()

YUNET_FACES = {"00": 2, "10045": 4, "Blake_Lively": 2, "example": 3, "rfpp_06": 2}
"""Faces per photo in real_lq/whole with YuNet, from ../shared/data/README.md."""
AAF_SUBSET = 10
"""The first aaf/val portraits (by name): one face each."""


def _align(*args: str | Path):
    return runner.invoke(app, ["align", *map(str, args)])


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _crops(out: Path, ext: str = "png") -> list[Path]:
    return sorted(out.rglob(f"*.{ext}"))


@pytest.fixture(scope="module")
def whole_run(real_lq_whole_dir: Path, shared_weights_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aligned")
    result = _align(
        real_lq_whole_dir, "-o", out, "--detector", "yunet", "--weights-dir", shared_weights_dir
    )
    assert result.exit_code == 0, result.output
    assert "5 images, 13 faces written, 0 images with no face, 0 failed" in result.output
    return out


@pytest.fixture
def aaf_subset(shared_dir: Path, tmp_path: Path) -> Path:
    """Ten real portraits, a file that is not an image and a blank picture with no face."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    portraits = sorted((shared_dir / "data" / "aaf" / "val").glob("*.jpg"))[:AAF_SUBSET]
    for index, path in enumerate(portraits):
        shutil.copy(path, folder / ("sub" if index % 2 else "") / path.name)
    (folder / "notes.jpg").write_text("not a picture\n")
    write_image(folder / "blank.png", np.full((300, 240, 3), 0.5, np.float32))
    return folder


def test_whole_photos_give_the_readme_faces_at_512(whole_run):
    crops = _crops(whole_run)
    per_photo = Counter(path.stem.rsplit("_", 1)[0] for path in crops)
    assert per_photo == YUNET_FACES
    assert all(read_image(path).size == (512, 512) for path in crops)
    records = _manifest(whole_run)
    assert sorted(r["crop"] for r in records) == [path.name for path in crops]
    for record in records:
        assert record["size"] == 512 and len(record["box"]) == 4 and 0.6 <= record["score"] <= 1
        assert Path(record["source"]).stem == record["crop"].rsplit("_", 1)[0]


def test_manifest_landmarks_land_on_the_ffhq_template(whole_run):
    for record in _manifest(whole_run):
        landmarks, affine = np.array(record["landmarks"]), np.array(record["affine"])
        np.testing.assert_allclose(affine, estimate_affine(landmarks, 512), atol=1e-9)
        error = np.linalg.norm(transform_points(affine, landmarks) - template(512), axis=1)
        assert error.max() < 0.05 * 512, record["crop"]


def test_crops_are_the_restore_pipelines_alignment(whole_run):
    records = [r for r in _manifest(whole_run) if r["relative"] == "Blake_Lively.jpg"]
    image = read_image(records[0]["source"])
    assert tuple(records[0]["image_size"]) == image.size
    for record in records:
        face = Face(
            box=tuple(record["box"]),
            score=record["score"],
            landmarks=np.array(record["landmarks"], np.float32),
        )
        expected = to_uint8(align_face(image.rgb, face, 512).crop)
        written = to_uint8(read_image(whole_run / record["crop"]).rgb)
        assert np.abs(written.astype(int) - expected).max() <= 1


def test_bad_and_faceless_inputs_are_reported_and_a_rerun_resumes(aaf_subset, shared_weights_dir):
    out = aaf_subset.parent / "faces"
    args = (aaf_subset, "-o", out, "--weights-dir", shared_weights_dir)
    first = _align(*args)
    assert first.exit_code == 1, first.output
    assert f"error: {aaf_subset / 'notes.jpg'}: not an image" in first.output
    assert f"no face: {aaf_subset / 'blank.png'}" in first.output
    assert f"12 images, {AAF_SUBSET} faces written, 1 images with no face, 1 failed" in first.output
    crops = _crops(out)
    assert len(crops) == AAF_SUBSET and len(_crops(out / "sub")) == AAF_SUBSET // 2
    assert all(path.stem.endswith("_00") for path in crops)
    assert len(_manifest(out)) == AAF_SUBSET
    stamps = {path: path.stat().st_mtime_ns for path in crops}

    second = _align(*args)
    assert second.exit_code == 1
    assert f"0 faces written, {AAF_SUBSET} kept from {AAF_SUBSET} images finished before" in (
        second.output
    )
    assert {path: path.stat().st_mtime_ns for path in crops} == stamps

    crops[0].unlink()  # a lost crop and a manifest line cut by a kill: both images are redone
    text = (out / "manifest.jsonl").read_text()
    (out / "manifest.jsonl").write_text(text[: text.rstrip().rfind("\n") + 40])
    third = _align(*args)
    assert "2 faces written" in third.output, third.output
    assert len(_manifest(out)) == AAF_SUBSET and len(_crops(out)) == AAF_SUBSET


def test_size_jpg_and_workers(aaf_subset, shared_weights_dir, tmp_path):
    (aaf_subset / "notes.jpg").unlink()
    one, two = tmp_path / "one", tmp_path / "two"
    common = ("--weights-dir", shared_weights_dir, "--size", "256", "--ext", "jpg")
    assert _align(aaf_subset, "-o", one, *common).exit_code == 0
    assert _align(aaf_subset, "-o", two, *common, "--workers", "2").exit_code == 0
    crops = _crops(one, "jpg")
    assert len(crops) == AAF_SUBSET
    assert all(read_image(path).size == (256, 256) for path in crops)
    records = _manifest(one)
    assert {r["size"] for r in records} == {256}
    for record in records:
        affine = estimate_affine(np.array(record["landmarks"]), 256)
        np.testing.assert_allclose(record["affine"], affine, atol=1e-9)
    assert (one / "manifest.jsonl").read_bytes() == (two / "manifest.jsonl").read_bytes()
    assert [p.read_bytes() for p in crops] == [p.read_bytes() for p in _crops(two, "jpg")]


def test_gray_photo_gives_exactly_gray_crops(real_lq_whole_dir, shared_weights_dir, tmp_path):
    photo = read_image(real_lq_whole_dir / "Blake_Lively.jpg").rgb
    gray = cv2.cvtColor(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    write_image(tmp_path / "in" / "gray.png", gray)  # three equal channels, not a gray PNG
    assert cv2.imread(str(tmp_path / "in" / "gray.png"), cv2.IMREAD_UNCHANGED).ndim == 3
    assert read_image(tmp_path / "in" / "gray.png").grayscale  # gray by its pixels
    for ext in ("png", "jpg"):
        out = tmp_path / ext
        args = ("--weights-dir", shared_weights_dir, "--ext", ext)
        assert _align(tmp_path / "in", "-o", out, *args).exit_code == 0
        crops = _crops(out, ext)
        assert len(crops) == YUNET_FACES["Blake_Lively"]
        for path in crops:
            rgb = to_uint8(read_image(path).rgb).astype(int)
            assert np.abs(rgb - rgb[:, :, :1]).max() == 0, path
            assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).ndim == 2  # stored as gray


def test_half_recorded_images_are_redone_and_overwrite_removes_unwritten_crops(
    real_lq_whole_dir, shared_weights_dir, tmp_path
):
    out = tmp_path / "faces"
    photo = real_lq_whole_dir / "Blake_Lively.jpg"
    assert _align(photo, "-o", out, "--weights-dir", shared_weights_dir).exit_code == 0
    assert [p.name for p in _crops(out)] == ["Blake_Lively_00.png", "Blake_Lively_01.png"]
    lines = (out / "manifest.jsonl").read_text().splitlines()
    (out / "manifest.jsonl").write_text(lines[0] + "\n" + lines[1][:50])  # killed mid-write
    redone = _align(photo, "-o", out, "--weights-dir", shared_weights_dir)
    assert "2 faces written" in redone.output, redone.output
    assert (out / "manifest.jsonl").read_text().splitlines() == lines
    args = ("--weights-dir", shared_weights_dir, "--max-faces", "1")
    kept = _align(photo, "-o", out, *args)
    assert "0 faces written, 2 kept" in kept.output  # finished before: options do not redo it
    redone = _align(photo, "-o", out, *args, "--overwrite")
    assert "1 faces written" in redone.output, redone.output
    assert [p.name for p in _crops(out)] == ["Blake_Lively_00.png"]
    assert [r["crop"] for r in _manifest(out)] == ["Blake_Lively_00.png"]


def test_outputs_that_clash_or_replace_inputs_are_refused(tmp_path):
    picture = np.zeros((40, 40, 3), np.float32)
    for name in ("clash/a.jpg", "clash/a.png", "own/b.png", "own/b_00.png"):
        write_image(tmp_path / name, picture)
    clash = _align(tmp_path / "clash", "-o", tmp_path / "out")
    assert clash.exit_code == 2
    assert "would both be written to" in clash.output and "rename one" in clash.output
    replace = _align(tmp_path / "own", "-o", tmp_path / "own")
    assert replace.exit_code == 2
    assert "b_00.png: a face crop would overwrite this input" in replace.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "own" / "manifest.jsonl").exists()


def test_missing_weights_and_unusable_output_are_one_line_errors(
    real_lq_whole_dir, shared_weights_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # an empty cache
    monkeypatch.delenv("DRBFR_HOME", raising=False)
    photo = real_lq_whole_dir / "example.jpg"
    missing = _align(photo, "-o", tmp_path / "out", "--weights-dir", tmp_path / "empty")
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: yunet-2023mar: ") and missing.stderr.count("\n") == 1
    assert "drbfr weights fetch yunet-2023mar" in missing.stderr
    assert not (tmp_path / "out").exists()  # nothing is written before the detector loads
    (tmp_path / "a_file").write_text("x")
    blocked = _align(photo, "-o", tmp_path / "a_file", "--weights-dir", shared_weights_dir)
    assert blocked.exit_code == 2
    assert blocked.stderr.startswith("error: ") and blocked.stderr.count("\n") == 1
    assert "cannot create the output folder" in blocked.stderr


def test_a_missing_path_in_a_stdin_list_fails_alone(shared_dir, shared_weights_dir, tmp_path):
    portraits = sorted((shared_dir / "data" / "aaf" / "val").glob("*.jpg"))[:2]
    missing = tmp_path / "gone.jpg"
    listed = f"{portraits[0]}\n{missing}\n{portraits[1]}\n"
    out = tmp_path / "faces"
    args = ["align", "-", "-o", str(out), "--weights-dir", str(shared_weights_dir)]
    result = runner.invoke(app, args, input=listed)
    assert result.exit_code == 1, result.output
    assert f"error: {missing}: file not found" in result.output
    assert "3 images, 2 faces written, 0 images with no face, 1 failed" in result.output
    assert len(_crops(out)) == 2


def test_a_name_near_255_bytes_gives_cut_crop_names_that_are_never_overwritten(
    real_lq_whole_dir, shared_weights_dir, tmp_path
):
    folder = tmp_path / "in"
    folder.mkdir()
    stems = ["é" * 124 + "a", "é" * 124 + "b"]  # 249 + 4 bytes: no room for `_NN.png`
    for stem in stems:
        shutil.copy(real_lq_whole_dir / "Blake_Lively.jpg", folder / f"{stem}.jpg")
    result = _align(folder, "-o", tmp_path / "out", "--weights-dir", shared_weights_dir)
    assert result.exit_code == 0, result.output
    names = [p.name for p in _crops(tmp_path / "out")]
    assert len(names) == 4 and len(set(names)) == 4
    assert all(len(name.encode()) <= 255 and "~" in name for name in names)
    assert sorted(r["crop"] for r in _manifest(tmp_path / "out")) == sorted(names)
    shutil.copy(_crops(tmp_path / "out")[0], folder / names[0])  # a cut crop name as an input
    refused = _align(folder, "-o", folder, "--weights-dir", shared_weights_dir)
    assert refused.exit_code == 2
    assert "a face crop would overwrite this input" in refused.output


def test_det_retry_takes_faces_below_the_threshold_and_0_turns_it_off(
    whole_run, real_lq_whole_dir, shared_weights_dir, tmp_path
):
    """align shares restore's --det-retry: with a threshold above every score of a photo, the
    second look at --det-retry finds its faces again; --det-retry 0 finds none."""
    records = [r for r in _manifest(whole_run) if r["source"].endswith("example.jpg")]
    scores = [r["score"] for r in records]
    threshold = min(1.0, max(scores) + 0.001)
    common = ("--detector", "yunet", "--weights-dir", shared_weights_dir)
    common += ("--det-threshold", str(threshold))
    photo = real_lq_whole_dir / "example.jpg"
    retry = str(min(scores) - 0.001)
    again = _align(photo, "-o", tmp_path / "again", *common, "--det-retry", retry)
    assert again.exit_code == 0, again.output
    assert len(_crops(tmp_path / "again")) == YUNET_FACES["example"]
    off = _align(photo, "-o", tmp_path / "off", *common, "--det-retry", "0")
    assert off.exit_code == 0, off.output
    assert _crops(tmp_path / "off") == []
    assert "0 faces written" in off.output
