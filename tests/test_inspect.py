"""`drbfr inspect`: one estimate per face, as JSON lines or text, with restore's inputs and
detection; bad files and models without a degradation head are one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from drbfr_cli.bundle import MANIFEST, read_manifest
from drbfr_cli.cli.main import app

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = PROJECT_ROOT / "models" / "bundles" / "drbfr-small"
runner = CliRunner()


def test_inspect_prints_one_json_line_per_face(
    real_lq_whole_dir: Path, shared_weights_dir: Path
) -> None:
    photo = real_lq_whole_dir / "Blake_Lively.jpg"  # 2 faces
    args = ["inspect", str(photo), "--json", "--model", str(SHIPPED), "--weights-dir",
            str(shared_weights_dir), "--detector", "yunet"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["face"] for line in lines] == [0, 1]
    for line in lines:
        assert line["image"] == str(photo) and len(line["box"]) == 4
        assert 0.0 <= line["severity"] <= 1.0 and 60 <= line["q"] <= 100
        assert 0.1 <= line["sigma"] <= 10 and 0.8 <= line["r"] <= 8 and 0 <= line["delta"] <= 20
    again = runner.invoke(app, args)
    assert again.stdout == result.stdout


def test_inspect_reports_a_bad_file_and_goes_on(real_lq_aligned_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    good = sorted(real_lq_aligned_dir.glob("*.png"))[0]
    result = runner.invoke(
        app, ["inspect", str(bad), str(good), "--aligned", "--model", str(SHIPPED)]
    )
    assert result.exit_code == 1
    assert "broken.png" in result.stderr and "Traceback" not in result.output
    assert f"{good} face 0: severity" in " ".join(result.stdout.split())
    assert np.isfinite(float(result.stdout.split("severity ")[1].split()[0]))


def test_a_bundle_without_a_head_is_a_one_line_error(
    real_lq_aligned_dir: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    manifest = read_manifest(SHIPPED)
    manifest.pop("drm_head", None)
    manifest["files"].pop("drm_head.safetensors", None)
    for file in manifest["files"]:
        shutil.copy(SHIPPED / file, plain / file)
    (plain / MANIFEST).write_text(json.dumps(manifest))
    face = sorted(real_lq_aligned_dir.glob("*.png"))[0]
    result = runner.invoke(app, ["inspect", str(face), "--aligned", "--model", str(plain)])
    assert result.exit_code == 2 and "carries no degradation head" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_no_image_is_a_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 2 and "no images found" in result.output
    assert len(result.output.strip().splitlines()) == 1
