"""Shared fixtures. Real test data lives in ../shared beside the project (or $DRBFR_SHARED)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _shared_root() -> Path:
    return Path(os.environ.get("DRBFR_SHARED", PROJECT_ROOT.parent / "shared"))


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI (CI=true) the shared data must be there: fail at once instead of skipping."""
    root = _shared_root()
    if _in_ci() and not (root / "data").is_dir():
        raise pytest.UsageError(
            f"CI=true but the shared test data is missing at {root} (set DRBFR_SHARED)"
        )


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (real faces and detector weights); outside CI, tests needing it skip, saying
    why, if absent (in CI the session fails at start, see pytest_sessionstart)."""
    root = _shared_root()
    if not (root / "data").is_dir():
        pytest.skip(f"needs the shared test data at {root} (set DRBFR_SHARED to its location)")
    return root


@pytest.fixture(scope="session")
def hq_dir(shared_dir: Path) -> Path:
    """12 real HQ faces (FFHQ / CelebA-HQ samples)."""
    return shared_dir / "data" / "hq"


@pytest.fixture(scope="session")
def real_lq_aligned_dir(shared_dir: Path) -> Path:
    """23 real LQ faces, aligned 512x512 crops."""
    return shared_dir / "data" / "real_lq" / "aligned"


@pytest.fixture(scope="session")
def shared_weights_dir(shared_dir: Path) -> Path:
    """Real YuNet and RetinaFace-mobilenet0.25 detector weights."""
    return shared_dir / "weights"


@pytest.fixture(scope="session")
def real_lq_whole_dir(shared_dir: Path) -> Path:
    """5 real whole photos with 1-4 faces each."""
    return shared_dir / "data" / "real_lq" / "whole"


@pytest.fixture
def register_weights(monkeypatch: pytest.MonkeyPatch):
    """Point a registry entry at a local file: its published sha256 and size become the file's.

    For checkpoints that cannot be obtained here (RetinaFace-R50, ParseNet, Real-ESRGAN): tests
    save randomly initialised weights of the same layout and load them through the registry.
    """
    from dataclasses import replace

    from drbfr_cli import weights

    def register(name: str, path: Path) -> None:
        entry = replace(
            weights.spec(name),
            filename=path.name,
            sha256=weights.sha256_file(path),
            size=path.stat().st_size,
        )
        monkeypatch.setitem(weights.REGISTRY, name, entry)

    return register


@pytest.fixture
def one_torch_thread():
    """Tiny models: one torch thread is fastest and leaves the other core to the rest of the
    machine (use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
