"""`drbfr weights ...` and `drbfr doctor` through the real CLI (CliRunner)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drbfr_cli import weights
from drbfr_cli.cli.main import app
from tests.local_http import FileServer, closed_port, serve

runner = CliRunner()
MOBILENET = "detection_mobilenet0.25_Final.pth"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line
    monkeypatch.delenv("DRBFR_HOME", raising=False)
    monkeypatch.delenv("DRBFR_OFFLINE", raising=False)
    return home


def _row(output: str, name: str) -> str:
    """The table row with a cell equal to `name`."""
    return next(
        line for line in output.splitlines() if name in (c.strip() for c in line.split("│"))
    )


def test_verify_reports_the_shared_detectors_and_taef2_valid(shared_weights_dir: Path) -> None:
    result = runner.invoke(app, ["weights", "verify", "--weights-dir", str(shared_weights_dir)])
    assert result.exit_code == 0, result.output
    for name in ("yunet-2023mar", "retinaface-mobilenet0.25", "taef2-encoder", "taef2-decoder"):
        assert " valid " in _row(result.output, name)
    assert " missing " in _row(result.output, "realesrgan-x2plus")
    assert "valid 4, unverified 0, corrupt 0" in result.output


def test_verify_reports_a_flipped_byte_as_corrupt(shared_weights_dir: Path, tmp_path) -> None:
    data = bytearray((shared_weights_dir / MOBILENET).read_bytes())
    data[1000] ^= 0x80
    (tmp_path / MOBILENET).write_bytes(bytes(data))
    result = runner.invoke(
        app, ["weights", "verify", "retinaface-mobilenet0.25", "--weights-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert " corrupt " in _row(result.output, "retinaface-mobilenet0.25")
    listing = runner.invoke(app, ["weights", "list", "--weights-dir", str(tmp_path)])
    assert " yes " in _row(listing.output, "retinaface-mobilenet0.25")  # same size: list
    assert listing.exit_code == 0  # does not hash; verify does


def test_list_shows_presence_size_licence_and_path(shared_weights_dir: Path) -> None:
    result = runner.invoke(app, ["weights", "list", "--weights-dir", str(shared_weights_dir)])
    assert result.exit_code == 0, result.output
    row = _row(result.output, "yunet-2023mar")
    assert " yes " in row and "232.6 KB" in row and "MIT" in row
    assert str(shared_weights_dir / "face_detection_yunet_2023mar.onnx") in row
    assert " no " in _row(result.output, "lpips-vgg16")


def test_path_prints_the_file_or_a_one_line_hint(shared_weights_dir: Path) -> None:
    found = runner.invoke(
        app, ["weights", "path", "yunet-2023mar", "--weights-dir", str(shared_weights_dir)]
    )
    assert found.exit_code == 0
    assert found.output.strip() == str(shared_weights_dir / "face_detection_yunet_2023mar.onnx")
    missing = runner.invoke(app, ["weights", "path", "parsenet"])
    assert missing.exit_code == 2
    assert "drbfr weights fetch parsenet" in missing.output and "Traceback" not in missing.output


def test_fetch_without_network_fails_fast_with_url_and_folder(tmp_path, monkeypatch) -> None:
    url = f"http://127.0.0.1:{closed_port()}/RealESRGAN_x2plus.pth"
    monkeypatch.setitem(
        weights.REGISTRY,
        "realesrgan-x2plus",
        replace(weights.REGISTRY["realesrgan-x2plus"], url=url),
    )
    target = tmp_path / "w"
    start = time.perf_counter()
    result = runner.invoke(
        app, ["weights", "fetch", "realesrgan-x2plus", "--weights-dir", str(target)]
    )
    assert time.perf_counter() - start < 10
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: realesrgan-x2plus")
    assert url in lines[0] and str(target) in lines[0]
    assert not target.exists()


def test_fetch_downloads_verifies_and_reports_the_path(tmp_path, monkeypatch) -> None:
    data = b"0123456789" * 20_000
    with serve(FileServer({"/x2.pth": data})) as server:
        entry = replace(
            weights.REGISTRY["realesrgan-x2plus"],
            url=server.url("/x2.pth"),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
        )
        monkeypatch.setitem(weights.REGISTRY, "realesrgan-x2plus", entry)
        monkeypatch.setenv("DRBFR_HOME", str(tmp_path / "dh"))
        result = runner.invoke(app, ["weights", "fetch", "realesrgan-x2plus"])
    target = tmp_path / "dh" / "weights" / "RealESRGAN_x2plus.pth"
    assert result.exit_code == 0, result.output
    assert str(target) in result.output and target.read_bytes() == data


def test_fetch_with_a_bad_hash_reports_and_deletes(tmp_path, monkeypatch) -> None:
    with serve(FileServer({"/x2.pth": b"tampered"})) as server:
        entry = replace(weights.REGISTRY["realesrgan-x2plus"], url=server.url("/x2.pth"), size=None)
        monkeypatch.setitem(weights.REGISTRY, "realesrgan-x2plus", entry)
        result = runner.invoke(
            app, ["weights", "fetch", "realesrgan-x2plus", "--weights-dir", str(tmp_path)]
        )
    assert result.exit_code == 2
    assert "sha256" in result.output and "deleted" in result.output
    assert list(tmp_path.iterdir()) == [tmp_path / "home"] or list(tmp_path.iterdir()) == []


def test_fetch_unknown_name_is_a_one_line_error() -> None:
    result = runner.invoke(app, ["weights", "fetch", "nope"])
    assert result.exit_code == 2 and "unknown weights 'nope'" in result.output


def test_doctor_runs_its_checks(shared_weights_dir: Path) -> None:
    result = runner.invoke(app, ["doctor", "--weights-dir", str(shared_weights_dir)])
    assert result.exit_code == 0, result.output
    assert " ok " in _row(result.output, "degradation")
    assert "theory 28.13" in result.output
    assert " ok " in _row(result.output, "yunet-2023mar")
    assert "all checks passed" in result.output
