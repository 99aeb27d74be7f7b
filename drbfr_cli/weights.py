"""Registry of every checkpoint drbfr uses, and where each is found on this machine.

A file is found by its own file name in the first folder of: `--weights-dir DIR`, then
`$DRBFR_HOME/weights`, then `~/.cache/drbfr/weights`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from drbfr_cli.errors import DrbfrError


@dataclass(frozen=True)
class WeightSpec:
    """One checkpoint file drbfr knows about."""

    name: str
    filename: str
    url: str
    sha256: str | None
    size: int | None
    licence: str
    used_by: str


class WeightsMissingError(DrbfrError):
    """A checkpoint that is not present in any weights folder."""


REGISTRY: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        WeightSpec(
            name="lpips-vgg16",
            filename="vgg16-397923af.pth",
            url="https://download.pytorch.org/models/vgg16-397923af.pth",
            sha256=None,
            size=None,
            licence="BSD-3-Clause (torchvision)",
            used_by="LPIPS metric (vgg backbone); VAE perceptual loss",
        ),
        WeightSpec(
            name="lpips-alexnet",
            filename="alexnet-owt-7be5be79.pth",
            url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            sha256=None,
            size=None,
            licence="BSD-3-Clause (torchvision)",
            used_by="LPIPS metric (alex backbone)",
        ),
        WeightSpec(
            name="fid-inception",
            filename="weights-inception-2015-12-05-6726825d.pth",
            url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
            "weights-inception-2015-12-05-6726825d.pth",
            sha256=None,
            size=None,
            licence="Apache-2.0",
            used_by="FID metric (InceptionV3 pool3 features, torch-fidelity layout)",
        ),
    )
}


def search_dirs(weights_dir: Path | None = None) -> list[Path]:
    """The weights folders in resolution order."""
    dirs: list[Path] = []
    if weights_dir is not None:
        dirs.append(Path(weights_dir))
    if home := os.environ.get("DRBFR_HOME"):
        dirs.append(Path(home) / "weights")
    dirs.append(Path.home() / ".cache" / "drbfr" / "weights")
    return dirs


def spec(name: str) -> WeightSpec:
    """The registry entry called `name` (a DrbfrError listing the known names otherwise)."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise DrbfrError(f"unknown weights {name!r}; known: {known}") from None


def find(name: str, weights_dir: Path | None = None) -> Path | None:
    """The path of the first copy of `name`'s file in the search folders, or None."""
    filename = spec(name).filename
    for folder in search_dirs(weights_dir):
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    return None


def require(name: str, weights_dir: Path | None = None) -> Path:
    """Like `find`, but a missing file raises WeightsMissingError naming the file and folder."""
    path = find(name, weights_dir)
    if path is None:
        entry = spec(name)
        target = search_dirs(weights_dir)[0]
        raise WeightsMissingError(
            f"{entry.name}: {entry.filename} not found; download {entry.url} into {target}"
        )
    return path
