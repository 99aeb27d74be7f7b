"""Location of the model-zoo data folder (`models/`: presets and the checkpoint manifest)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def models_dir() -> Path:
    """The `models/` data folder: inside the installed wheel, or at the root of a source tree."""
    packaged = Path(str(files("drbfr_cli"))) / "_models"
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parent.parent / "models"
    if source.is_dir():
        return source
    raise FileNotFoundError(f"drbfr model-zoo data not found (looked in {packaged} and {source})")
