"""`drbfr restore` end to end through the real CLI, on the real photos, with the real detectors.

The restorer is `--model identity` (the aligned crops pasted back unchanged), so these tests
check detection, alignment, batching, paste-back, outputs, reports and reruns without a model.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.imaging import read_image, to_uint8, write_image
from drbfr_cli.restore.background import LanczosUpsampler

runner = CliRunner()

EXPECTED_FACES = {
    # file: (YuNet, RetinaFace-mobilenet0.25), from ../shared/data/README.md
    "00.jpg": (2, 2),
    "10045.png": (4, 3),
    "Blake_Lively.jpg": (2, 2),
    "example.jpg": (3, 3),
    "rfpp_06.png": (2, 2),
}
IDENTITY = ("--model", "identity", "--bg-upsampler", "lanczos")


def _restore(*args: str | Path, input: str | None = None):
    return runner.invoke(app, ["restore", *map(str, args)], input=input)


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def small_copies(source: Path, folder: Path, names: list[str], scale: float = 0.5) -> None:
    """Write `source` downscaled by `scale` under each name (fast inputs with real faces)."""
    image = read_image(source)
    small = cv2.resize(image.rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    for name in names:
        write_image(folder / name, small)


@pytest.fixture(scope="module")
def yunet_run(real_lq_whole_dir: Path, shared_weights_dir: Path, tmp_path_factory) -> Path:
    """One YuNet run over the whole photos, PNG outputs, faces saved, CSV report."""
    out = tmp_path_factory.mktemp("yunet")
    result = _restore(
        real_lq_whole_dir,
        "-o",
        out,
        "--weights-dir",
        shared_weights_dir,
        "--detector",
        "yunet",
        "--ext",
        "png",
        "--save-faces",
        "--report-csv",
        out / "report.csv",
        *IDENTITY,
    )
    assert result.exit_code == 0, result.output
    return out


def test_yunet_finds_the_readme_faces_and_writes_2x_images(yunet_run, real_lq_whole_dir):
    report = _report(yunet_run)
    assert report["summary"]["restored"] == 5 and report["summary"]["failed"] == 0
    assert report["summary"]["faces"] == sum(yunet for yunet, _ in EXPECTED_FACES.values())
    by_name = {record["relative"]: record for record in report["images"]}
    assert [r["relative"] for r in report["images"]] == sorted(EXPECTED_FACES)
    for name, (expected, _) in EXPECTED_FACES.items():
        record = by_name[name]
        assert record["status"] == "ok" and len(record["faces"]) == expected, name
        width, height = read_image(real_lq_whole_dir / name).size
        output = yunet_run / "restored_imgs" / Path(name).with_suffix(".png")
        assert record["output"] == str(output)
        assert read_image(output).size == (2 * width, 2 * height) == tuple(record["output_size"])
        for face in record["faces"]:
            x0, y0, x1, y1 = face["box"]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            assert face["score"] >= 0.6 and len(face["landmarks"]) == 5
        assert {"read", "detect", "align", "restore", "paste", "write"} <= set(record["timings"])
    assert report["settings"]["detector"] == "yunet" and report["settings"]["model"] == "identity"


def test_saved_faces_and_csv_report(yunet_run):
    crops = sorted(p.name for p in (yunet_run / "cropped_faces").iterdir())
    assert len(crops) == 13 and "10045_03.png" in crops
    for folder in ("restored_faces", "cmp"):
        assert sorted(p.name for p in (yunet_run / folder).iterdir()) == crops
    assert read_image(yunet_run / "cmp" / crops[0]).size == (1024, 512)
    lines = (yunet_run / "report.csv").read_text().splitlines()
    assert lines[0].startswith("input,output,status,faces,scores")
    assert len(lines) == 6 and all(",ok," in line for line in lines[1:])


def test_identity_restore_matches_the_plain_background(yunet_run, real_lq_whole_dir):
    """Geometry and seams: with unchanged crops pasted back, each output equals the Lanczos 2x
    background over the whole image and over every face box. Measured: 46.4-58.4 dB per image
    (lowest: Blake_Lively.jpg), 38.9-55.6 dB per face box."""
    for record in _report(yunet_run)["images"]:
        name = record["relative"]
        background = LanczosUpsampler(scale=2)(read_image(real_lq_whole_dir / name).rgb)
        output = read_image(record["output"]).rgb
        assert output.shape == background.shape
        assert _psnr(output, background) >= 35.0, name
        for face in record["faces"]:
            x0, y0, x1, y1 = (round(2 * v) for v in face["box"])
            assert _psnr(output[y0:y1, x0:x1], background[y0:y1, x0:x1]) >= 35.0, name


def test_retinaface_mobile_finds_the_readme_faces(real_lq_whole_dir, shared_weights_dir, tmp_path):
    out = tmp_path / "out"
    result = _restore(
        real_lq_whole_dir, "-o", out, "--weights-dir", shared_weights_dir,
        "--detector", "retinaface-mobile", "--ext", "jpg", *IDENTITY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    found = {r["relative"]: len(r["faces"]) for r in _report(out)["images"]}
    assert found == {name: mobile for name, (_, mobile) in EXPECTED_FACES.items()}
    for name in EXPECTED_FACES:
        width, height = read_image(real_lq_whole_dir / name).size
        written = read_image(out / "restored_imgs" / Path(name).with_suffix(".jpg"))
        assert written.size == (2 * width, 2 * height)


def test_aligned_faces_are_restored_at_512(real_lq_aligned_dir, tmp_path):
    out = tmp_path / "out"
    result = _restore(real_lq_aligned_dir, "-o", out, "--aligned", "--model", "identity")
    assert result.exit_code == 0, result.output
    report = _report(out)
    names = sorted(p.name for p in real_lq_aligned_dir.iterdir() if p.suffix == ".png")
    assert [r["relative"] for r in report["images"]] == names
    for record in report["images"]:
        assert record["status"] == "ok" and record["output_size"] == [512, 512]
        assert len(record["faces"]) == 1 and record["faces"][0]["box"] is None
    first = read_image(out / "restored_imgs" / names[0]).rgb
    assert np.array_equal(to_uint8(first), to_uint8(read_image(real_lq_aligned_dir / names[0]).rgb))


def test_niqe_metrics_per_face_and_in_the_summary(real_lq_aligned_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in sorted(p.name for p in real_lq_aligned_dir.iterdir())[:2]:
        shutil.copy(real_lq_aligned_dir / name, folder / name)
    out = tmp_path / "out"
    result = _restore(folder, "-o", out, "--aligned", "--model", "identity", "--metrics", "niqe")
    assert result.exit_code == 0, result.output
    report = _report(out)
    faces = [face for record in report["images"] for face in record["faces"]]
    assert len(faces) == 2
    for face in faces:  # identity: the restored face is the input face
        assert 2.0 < face["niqe_input"] < 30.0
        assert face["niqe_restored"] == pytest.approx(face["niqe_input"], abs=0.05)
    mean = report["summary"]["niqe_input_mean"]
    assert mean == pytest.approx(np.mean([f["niqe_input"] for f in faces]), abs=1e-3)
    assert "NIQE" in result.stdout
    bad = _restore(folder, "-o", out, "--model", "identity", "--metrics", "psnr")
    assert bad.exit_code == 2 and "restore computes niqe, ids only" in bad.stderr


@pytest.fixture
def small_photos(real_lq_whole_dir: Path, tmp_path: Path) -> Path:
    """Four small real photos (half size) with two faces each."""
    folder = tmp_path / "photos"
    small_copies(real_lq_whole_dir / "Blake_Lively.jpg", folder, ["a.jpg", "b.png"])
    small_copies(real_lq_whole_dir / "rfpp_06.png", folder / "sub", ["c.png", "D.PNG"])
    return folder


def _yunet(weights: Path) -> tuple[str, ...]:
    return ("--weights-dir", str(weights), "--detector", "yunet", *IDENTITY)


def test_rerun_skips_finished_images_and_redoes_deleted_ones(small_photos, shared_weights_dir):
    out = small_photos.parent / "out"
    first = _restore(small_photos, "-o", out, *_yunet(shared_weights_dir))
    assert first.exit_code == 0, first.output
    outputs = sorted((out / "restored_imgs").rglob("*.*"))
    relative = [p.relative_to(out / "restored_imgs").as_posix() for p in outputs]
    assert relative == ["a.jpg", "b.png", "sub/D.PNG", "sub/c.png"]
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    outputs[1].unlink()
    outputs[3].unlink()
    again = _restore(small_photos, "-o", out, *_yunet(shared_weights_dir))
    assert again.exit_code == 0, again.output
    statuses = {r["relative"]: r["status"] for r in _report(out)["images"]}
    assert statuses == {
        "a.jpg": "skipped",
        "b.png": "ok",
        "sub/D.PNG": "skipped",
        "sub/c.png": "ok",
    }
    assert outputs[0].stat().st_mtime_ns == stamps[outputs[0]]
    assert outputs[2].stat().st_mtime_ns == stamps[outputs[2]]
    assert outputs[1].is_file() and outputs[3].is_file()
    forced = _restore(small_photos, "-o", out, "--overwrite", *_yunet(shared_weights_dir))
    assert forced.exit_code == 0 and _report(out)["summary"]["restored"] == 4


def test_json_lines_and_quiet(small_photos, shared_weights_dir):
    out = small_photos.parent / "out"
    result = _restore(small_photos, "-o", out, "--json", *_yunet(shared_weights_dir))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["relative"] for line in lines] == ["a.jpg", "b.png", "sub/D.PNG", "sub/c.png"]
    assert all(line["status"] == "ok" and len(line["faces"]) == 2 for line in lines)
    assert "drbfr restore" in result.stderr  # the summary goes to stderr with --json
    quiet = _restore(small_photos, "-o", out, "--quiet", "--overwrite", *_yunet(shared_weights_dir))
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_globs_stdin_and_output_inside_the_input(small_photos, shared_weights_dir):
    pattern = str(small_photos / "**" / "*.png")
    globbed = _restore(pattern, "-o", small_photos.parent / "g", *_yunet(shared_weights_dir))
    assert globbed.exit_code == 0, globbed.output
    globbed_names = sorted(r["relative"] for r in _report(small_photos.parent / "g")["images"])
    assert globbed_names == ["b.png", "c.png"]
    listed = f"{small_photos / 'a.jpg'}\n\n{small_photos / 'sub' / 'D.PNG'}\n"
    piped = _restore(
        "-", "-o", small_photos.parent / "s", *_yunet(shared_weights_dir), input=listed
    )
    assert piped.exit_code == 0, piped.output
    assert [r["relative"] for r in _report(small_photos.parent / "s")["images"]] == [
        "D.PNG",
        "a.jpg",
    ]
    nothing = _restore(str(small_photos / "*.webp"), "-o", small_photos.parent / "n", *IDENTITY)
    assert nothing.exit_code == 2 and "no file or folder matches" in nothing.stderr
    out = small_photos / "out"  # inside the input folder: never read back
    for _ in range(2):
        result = _restore(small_photos, "-o", out, *_yunet(shared_weights_dir))
        assert result.exit_code == 0 and _report(out)["summary"]["images"] == 4


def _bad_inputs(folder: Path, source: Path) -> list[str]:
    """Two good small photos and four bad files; returns the bad names."""
    small_copies(source, folder, ["good1.jpg", "good2.png"])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a picture")
    good = (folder / "good2.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 3])
    from tests.test_imaging import _write_bomb

    _write_bomb(folder / "bomb.png")
    return ["empty.png", "notes.jpg", "truncated.png", "bomb.png"]


def test_bad_inputs_are_reported_and_the_others_restored(
    real_lq_whole_dir, shared_weights_dir, tmp_path
):
    bad = _bad_inputs(tmp_path / "in", real_lq_whole_dir / "Blake_Lively.jpg")
    out = tmp_path / "out"
    result = _restore(tmp_path / "in", "-o", out, *_yunet(shared_weights_dir))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad)
    for name in bad:
        assert sum(name in line for line in errors) == 1
    records = {r["relative"]: r for r in _report(out)["images"]}
    assert {name for name, r in records.items() if r["status"] == "failed"} == set(bad)
    assert all(records[name]["error"] for name in bad)
    assert "exceeds the limit" in records["bomb.png"]["error"]
    written = sorted(p.name for p in (out / "restored_imgs").iterdir())
    assert written == ["good1.jpg", "good2.png"]


def test_unreadable_file_is_reported(real_lq_whole_dir, shared_weights_dir, tmp_path, monkeypatch):
    small_copies(real_lq_whole_dir / "Blake_Lively.jpg", tmp_path / "in", ["ok.png", "locked.png"])
    locked = tmp_path / "in" / "locked.png"
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads it anyway: give it the error any other user gets
        read_bytes = Path.read_bytes

        def denied(path: Path) -> bytes:
            if path.name == locked.name:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return read_bytes(path)

        monkeypatch.setattr(Path, "read_bytes", denied)
    result = _restore(tmp_path / "in", "-o", tmp_path / "out", *_yunet(shared_weights_dir))
    assert result.exit_code == 1
    assert "locked.png: cannot read file (Permission denied)" in result.stderr
    assert (tmp_path / "out" / "restored_imgs" / "ok.png").is_file()


def test_without_a_model_bundle_the_error_is_one_line(small_photos, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # an empty cache
    monkeypatch.delenv("DRBFR_HOME", raising=False)
    for model in (str(tmp_path / "no-bundle"), "no-such-bundle"):
        result = _restore(small_photos, "-o", tmp_path / "out", "--model", model)
        assert result.exit_code == 2, model
        assert "Traceback" not in result.output
        assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1
    assert "drbfr-small" in result.stderr and "drbfr export" in result.stderr


def test_unusable_output_folder_and_options(small_photos, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = _restore(small_photos, "-o", blocker, "--aligned", "--model", "identity")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert blocker.read_text() == "x"
    bad_device = _restore(small_photos, "-o", tmp_path / "o", "--device", "tpu:0", *IDENTITY)
    assert bad_device.exit_code == 2 and "device" in bad_device.stderr
    bad_scale = _restore(small_photos, "-o", tmp_path / "o", "--upscale", "0", *IDENTITY)
    assert bad_scale.exit_code == 2


def test_grayscale_and_alpha_inputs_keep_their_kind(
    real_lq_whole_dir, shared_weights_dir, tmp_path
):
    image = read_image(real_lq_whole_dir / "Blake_Lively.jpg").rgb
    small = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    folder = tmp_path / "in"
    write_image(folder / "gray.png", small, grayscale=True)
    alpha = np.linspace(0, 1, small.shape[1], dtype=np.float32)[None].repeat(small.shape[0], 0)
    write_image(folder / "alpha.png", small, alpha=alpha)
    out = tmp_path / "out"
    result = _restore(folder, "-o", out, *_yunet(shared_weights_dir))
    assert result.exit_code == 0, result.output
    assert all(len(r["faces"]) == 2 for r in _report(out)["images"])
    gray = read_image(out / "restored_imgs" / "gray.png")
    assert gray.grayscale and gray.size == (2 * small.shape[1], 2 * small.shape[0])
    with_alpha = read_image(out / "restored_imgs" / "alpha.png")
    assert with_alpha.alpha is not None
    assert with_alpha.alpha[:, 0].mean() < 0.01 and with_alpha.alpha[:, -1].mean() > 0.99
