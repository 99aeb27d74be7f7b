"""`drbfr eval` through the real CLI on real image files."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.imaging import read_image, write_image
from drbfr_cli.metrics.niqe import niqe_rgb

runner = CliRunner()
REPORTS = {"summary.json", "metrics.csv", "report.md", "comparison.png"}


@pytest.fixture(autouse=True)
def _no_user_weights(tmp_path, monkeypatch):
    """Weight files are looked up only in empty test folders."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DRBFR_HOME", raising=False)


def _csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


@pytest.fixture
def paired_set(tmp_path, hq_dir) -> tuple[Path, Path]:
    """Two real HQ faces at 192 px as GT, noisy copies as 'restored', plus one unmatched file."""
    gt_dir, restored_dir = tmp_path / "gt", tmp_path / "restored"
    rng = np.random.default_rng(0)
    for source in sorted(hq_dir.glob("*.png"))[:2]:
        rgb = cv2.resize(read_image(source).rgb, (192, 192), interpolation=cv2.INTER_AREA)
        write_image(gt_dir / source.name, rgb)
        noisy = np.clip(rgb + rng.normal(0, 0.04, rgb.shape), 0, 1)
        write_image(restored_dir / source.name, noisy)
    write_image(restored_dir / "extra.png", np.zeros((192, 192, 3), np.float32))
    return restored_dir, gt_dir


def test_eval_paired_reports_and_numbers(tmp_path, paired_set):
    restored_dir, gt_dir = paired_set
    out = tmp_path / "report"
    args = ["eval", "--restored", str(restored_dir), "--gt", str(gt_dir), "--out", str(out)]
    result = runner.invoke(app, [*args, "--weights-dir", str(tmp_path / "none")])
    assert result.exit_code == 1, result.output  # LPIPS and FID weights are absent: partial
    assert {p.name for p in out.iterdir()} >= REPORTS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unmatched_restored"] == ["extra.png"]
    assert set(summary["skipped_metrics"]) == {"lpips", "fid"}
    assert "vgg16-397923af.pth not found" in summary["skipped_metrics"]["lpips"]
    rows = _csv(out / "metrics.csv")
    for name, row in rows.items():
        a = read_image(restored_dir / name).rgb.astype(np.float64)
        b = read_image(gt_dir / name).rgb.astype(np.float64)
        assert float(row["psnr"]) == pytest.approx(peak_signal_noise_ratio(b, a, data_range=1))
        assert float(row["niqe"]) == pytest.approx(niqe_rgb(a.astype(np.float32)), abs=1e-4)
        assert 0.3 < float(row["ssim"]) < 1.0
    mean_psnr = np.mean([float(r["psnr"]) for r in rows.values()])
    assert summary["means"]["psnr"] == pytest.approx(mean_psnr, abs=1e-5)
    assert 26 < mean_psnr < 30  # sigma 0.04 noise: about 28 dB
    assert "LPIPS vgg" in summary["protocol"]["lpips"] and "RGB" in summary["protocol"]["psnr"]
    assert "extra.png" in (out / "report.md").read_text()


def test_eval_y_channel_and_crop_change_psnr(tmp_path, paired_set):
    restored_dir, gt_dir = paired_set
    base = ["eval", "--restored", str(restored_dir), "--gt", str(gt_dir), "--metrics", "psnr"]
    for extra, out in (([], "rgb"), (["--y-channel", "--crop-border", "8"], "y")):
        result = runner.invoke(app, [*base, *extra, "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
    rgb = json.loads((tmp_path / "rgb" / "summary.json").read_text())
    y = json.loads((tmp_path / "y" / "summary.json").read_text())
    assert y["means"]["psnr"] != pytest.approx(rgb["means"]["psnr"], abs=0.1)
    assert "Y channel" in y["protocol"]["psnr"] and "crop 8" in y["protocol"]["psnr"]


def test_eval_no_reference_niqe_on_real_faces(tmp_path, real_lq_aligned_dir):
    folder = tmp_path / "real"
    folder.mkdir()
    for source in sorted(real_lq_aligned_dir.iterdir())[:2]:
        shutil.copy(source, folder / source.name)
    out = tmp_path / "out"
    args = ["eval", "--restored", str(folder), "--metrics", "niqe", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= REPORTS
    rows = _csv(out / "metrics.csv")
    for name, row in rows.items():
        assert float(row["niqe"]) == pytest.approx(niqe_rgb(read_image(folder / name).rgb))
    assert "NIQE" in result.output


def test_eval_fid_without_reference_is_skipped_with_reason(tmp_path, paired_set):
    restored_dir, _ = paired_set
    result = runner.invoke(app, ["eval", "--restored", str(restored_dir), "--metrics", "fid"])
    assert result.exit_code == 1
    assert "skipped fid" in result.output and "--fid-stats" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--restored", "/no/such/dir"], "no such file or folder"),
        (["eval"], "give --restored"),
        (["eval", "--restored", ".", "--metrics", "psnr"], "need ground truth"),
        (["eval", "--restored", ".", "--metrics", "bogus"], "unknown metric"),
        (["eval", "--restored", ".", "--device", "bogus"], "unknown torch device"),
        (["eval", "--restored", ".", "--dataset", "lfw-test"], "--data-root"),
        (["eval", "--restored", ".", "--dataset", "lfw-test", "--data-root", "/nope"], "not found"),
    ],
)
def test_eval_bad_input_is_one_line(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_eval_dataset_preset_finds_gt_under_data_root(tmp_path, paired_set):
    restored_dir, gt_dir = paired_set
    root = tmp_path / "root"
    shutil.copytree(gt_dir, root / "celeba-test" / "hq")
    shutil.copytree(restored_dir, root / "celeba-test" / "lq")
    args = [
        "eval",
        "--restored",
        str(restored_dir),
        "--dataset",
        "celeba-test",
        "--data-root",
        str(root),
        "--metrics",
        "psnr",
        "--out",
        str(tmp_path / "o"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["inputs"]["gt"].endswith("celeba-test/hq") and summary["means"]["psnr"] > 20


def test_fid_stats_without_inception_weights_names_the_file(tmp_path, paired_set):
    _, gt_dir = paired_set
    args = [
        "eval",
        "fid-stats",
        str(gt_dir),
        "-o",
        str(tmp_path / "s.npz"),
        "--weights-dir",
        str(tmp_path / "w"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "weights-inception-2015-12-05-6726825d.pth not found" in result.output
    assert str(tmp_path / "w") in result.output.replace("\n", "")
    assert not (tmp_path / "s.npz").exists()
