"""Precision on a CPU: auto is fp32, fp16 is refused, bf16 is refused where the CPU has no bf16
instructions (its convolutions run ~160x slower than fp32 there), all before any model loads."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from drbfr_cli import devices
from drbfr_cli.choices import Precision
from drbfr_cli.cli.main import app
from drbfr_cli.errors import DrbfrError
from tests.conftest import PROJECT_ROOT

runner = CliRunner()
AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
AMX = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


@pytest.fixture
def cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def with_flags(text: str) -> None:
        (tmp_path / "cpuinfo").write_text(text)
        monkeypatch.setattr(devices, "CPUINFO", tmp_path / "cpuinfo")

    return with_flags


def _restore(face: Path, out: Path, precision: str):
    return runner.invoke(app, [
        "restore", str(face), "-o", str(out), "--aligned", "--device", "cpu",
        "--precision", precision,
    ])  # fmt: skip


def test_bf16_on_a_cpu_without_bf16_instructions_is_refused_at_once(
    cpu, real_lq_aligned_dir: Path, tmp_path: Path
) -> None:
    cpu(AVX2)
    face = sorted(real_lq_aligned_dir.glob("*.png"))[0]
    started = time.perf_counter()
    result = _restore(face, tmp_path / "out", "bf16")  # the shipped model: never loaded
    assert time.perf_counter() - started < 3.0  # torch is imported already
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: --precision bf16: this CPU has no bf16 instructions")
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "out").exists()
    fp16 = _restore(face, tmp_path / "out", "fp16")
    assert fp16.exit_code == 2 and fp16.stderr.startswith("error: fp16 needs a GPU")


def test_bf16_runs_on_a_cpu_with_bf16_instructions(
    cpu, real_lq_aligned_dir: Path, tmp_path: Path
) -> None:
    cpu(AMX)
    face = sorted(real_lq_aligned_dir.glob("*.png"))[0]
    result = runner.invoke(app, [
        "restore", str(face), "-o", str(tmp_path / "out"), "--aligned", "--device", "cpu",
        "--precision", "bf16", "--model", "identity",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output


def test_auto_never_picks_bf16_on_a_cpu(cpu) -> None:
    for flags in (AVX2, AMX):
        cpu(flags)
        devices.check_precision(Precision.AUTO, torch.device("cpu"))
        assert devices.autocast_dtype(Precision.AUTO, torch.device("cpu")) is None
    assert devices.cpu_has_bf16(Path("/nonexistent/cpuinfo")) is None
    with pytest.raises(DrbfrError, match="fp16 needs a GPU"):
        devices.check_precision(Precision.FP16, torch.device("cpu"))


def test_the_refusal_imports_no_model_code(real_lq_aligned_dir: Path, tmp_path: Path) -> None:
    """In a fresh process: neither diffusers nor the bundle loader is imported."""
    face = sorted(real_lq_aligned_dir.glob("*.png"))[0]
    script = (
        "import sys\n"
        "from drbfr_cli import devices\n"
        f"devices.CPUINFO = __import__('pathlib').Path({str(tmp_path / 'cpuinfo')!r})\n"
        "from drbfr_cli.cli.main import app\n"
        "try:\n"
        f"    app(['restore', {str(face)!r}, '-o', {str(tmp_path / 'o')!r}, '--aligned',\n"
        "         '--device', 'cpu', '--precision', 'bf16'])\n"
        "except SystemExit as exc:\n"
        "    print(exc.code, 'diffusers' in sys.modules, 'drbfr_cli.bundle' in sys.modules)\n"
    )
    (tmp_path / "cpuinfo").write_text(AVX2)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.stdout.split() == ["2", "False", "False"], done.stderr
