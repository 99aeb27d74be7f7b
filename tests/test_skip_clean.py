"""Degradation estimates in the restore report, CSV, --json lines and gallery, and
`--skip-clean T`: faces below severity T are pasted back untouched and counted."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.degradations import DegradationParams, degrade
from drbfr_cli.imaging import read_image, write_image

runner = CliRunner()
SHIPPED = Path(__file__).resolve().parent.parent / "models" / "bundles" / "drbfr-small"


@pytest.fixture(scope="module")
def faces(hq_dir: Path, tmp_path_factory) -> Path:
    """clean.png: a real 512 px FFHQ face; heavy.png: it blurred, downscaled, noisy, JPEG 60."""
    folder = tmp_path_factory.mktemp("faces")
    hq = read_image(hq_dir / "ffhq_00000000.png").rgb
    write_image(folder / "clean.png", hq)
    params = DegradationParams(sigma=3.0, r=4.0, delta=15.0, q=60)
    write_image(folder / "heavy.png", degrade(hq, params, np.random.default_rng(0)))
    return folder


def restore(*args: object) -> object:
    return runner.invoke(app, ["restore", *map(str, args), "--device", "cpu"])


@pytest.fixture(scope="module")
def run(faces: Path, shared_weights_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    result = restore(
        faces, "-o", out, "--aligned", "--model", SHIPPED, "--skip-clean", "0.3",
        "--steps", 1, "--samples", 1, "--weights-dir", shared_weights_dir,
        "--report-csv", out.parent / "r.csv", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (out.parent / "stdout.txt").write_text(result.stdout)
    return out


def test_a_clean_face_is_pasted_back_untouched(run: Path, faces: Path) -> None:
    clean = read_image(run / "restored_imgs" / "clean.png").rgb
    assert np.array_equal(clean, read_image(faces / "clean.png").rgb)
    heavy = read_image(run / "restored_imgs" / "heavy.png").rgb
    assert float(np.abs(heavy - read_image(faces / "heavy.png").rgb).mean()) > 0.002


def test_the_report_holds_each_estimate_and_counts_the_clean_faces(run: Path) -> None:
    report = json.loads((run / "report.json").read_text())
    assert report["settings"]["skip_clean"] == 0.3
    assert (report["summary"]["faces_clean"], report["summary"]["faces_restored"]) == (1, 1)
    faces = {Path(i["input"]).stem: i["faces"][0] for i in report["images"]}
    assert faces["clean"]["clean"] and not faces["heavy"]["clean"]
    assert (
        faces["clean"]["degradation"]["severity"] < 0.3 <= faces["heavy"]["degradation"]["severity"]
    )
    assert set(faces["heavy"]["degradation"]) == {"sigma", "r", "delta", "q", "severity"}
    assert faces["heavy"]["degradation"]["sigma"] > faces["clean"]["degradation"]["sigma"]


def test_csv_and_json_lines_carry_the_estimates(run: Path) -> None:
    rows = {Path(r["input"]).stem: r for r in csv.DictReader((run.parent / "r.csv").open())}
    for column in ("severity", "sigma", "r", "delta", "q", "clean"):
        assert column in rows["clean"]
    assert (rows["clean"]["clean"], rows["heavy"]["clean"]) == ("1", "0")
    assert float(rows["clean"]["severity"]) < 0.3 <= float(rows["heavy"]["severity"])
    lines = [json.loads(x) for x in (run.parent / "stdout.txt").read_text().splitlines()]
    assert all(line["faces"][0]["degradation"] for line in lines)


def test_the_gallery_shows_the_estimates_and_sorts_by_severity(run: Path) -> None:
    page = (run / "index.html").read_text()
    assert 'id="sort-cards"' in page and "data-severity=" in page
    assert "severity 0." in page and "kept as it was (--skip-clean)" in page


@pytest.mark.parametrize("value", ["abc", "1.5", "-0.1", "nan", ""])
def test_bad_skip_clean_values_are_one_line_errors(value: str, faces: Path, tmp_path) -> None:
    result = restore(faces, "-o", tmp_path / "o", "--aligned", "--skip-clean", value)
    assert result.exit_code == 2
    assert "--skip-clean" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_skip_clean_needs_a_model_that_estimates(faces: Path, tmp_path: Path) -> None:
    result = restore(faces, "-o", tmp_path / "o", "--aligned", "--model", "identity",
                     "--skip-clean", "0.2")  # fmt: skip
    assert result.exit_code == 2 and "degradation head" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_without_a_head_faces_have_no_estimate(faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    result = restore(faces / "clean.png", "-o", out, "--aligned", "--model", "identity",
                     "--report-csv", tmp_path / "r.csv")  # fmt: skip
    assert result.exit_code == 0, result.output
    face = json.loads((out / "report.json").read_text())["images"][0]["faces"][0]
    assert face["degradation"] is None and face["clean"] is False
    row = next(csv.DictReader((tmp_path / "r.csv").open()))
    assert row["severity"] == "" and row["clean"] == "0"
