"""A bundle whose part has a broken safetensors header but the sha256 its manifest lists (so
the hash check passes): `drbfr restore` stops with one line and exit code 2, no traceback."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drbfr_cli.bundle import DEFAULT_NAME, MANIFEST
from drbfr_cli.cli.main import app
from tests.conftest import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "models" / "bundles" / DEFAULT_NAME
runner = CliRunner()


def _rehash(bundle: Path, part: str) -> None:
    """Make the manifest list the part's present sha256."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"][part] = hashlib.sha256((bundle / part).read_bytes()).hexdigest()
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def _header_too_long(data: bytes) -> bytes:
    return struct.pack("<Q", 1 << 40) + data[8:]


def _header_not_json(data: bytes) -> bytes:
    return data[:8] + b"{not json" + data[17:]


@pytest.mark.parametrize("damage", [_header_too_long, _header_not_json])
@pytest.mark.parametrize("part", ["fidelity.safetensors", "ldrm.safetensors"])
def test_a_broken_header_with_a_matching_sha256_is_one_line_exit_2(
    damage, part, real_lq_aligned_dir: Path, shared_weights_dir: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "broken"
    shutil.copytree(SHIPPED, bundle)
    (bundle / part).write_bytes(damage((bundle / part).read_bytes()))
    _rehash(bundle, part)
    face = sorted(real_lq_aligned_dir.glob("*.png"))[0]
    result = runner.invoke(app, [
        "restore", str(face), "-o", str(tmp_path / "out"), "--aligned", "--device", "cpu",
        "--model", str(bundle), "--weights-dir", str(shared_weights_dir),
    ])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {bundle / part}: not a readable safetensors file")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output
