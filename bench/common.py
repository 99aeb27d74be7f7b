"""What the scripts under bench/ share: where ../shared is, running the drbfr CLI, and sets
of faces as folders of symlinks (the shared data is read, never copied)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def shared() -> Path:
    """The shared data and weights: $DRBFR_SHARED, else ../shared beside the project."""
    return Path(os.environ.get("DRBFR_SHARED", ROOT.parent / "shared")).resolve()


def drbfr(*args: str) -> None:
    """Run `drbfr ARGS` from the project root; its stdout is dropped, a failure raises."""
    command = [sys.executable, "-m", "drbfr_cli", *args]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def linked_faces(source: Path, names: list[str], folder: Path) -> Path:
    """`folder` holding a symlink to each of `names` in `source` (kept when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        link = folder / name
        if not link.exists():
            link.symlink_to(source / name)
    return folder
