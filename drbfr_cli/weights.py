"""Registry of every checkpoint drbfr uses, and where each is found on this machine.

The registry is data: `models/manifest.toml` (shipped in the wheel), one table per file.
A file is found by its own file name in the first folder of: `--weights-dir DIR`, then
`$DRBFR_HOME/weights`, then `~/.cache/drbfr/weights`.

Nothing here downloads except `ensure` (when not offline) and `fetch`; a file is hashed before
it is loaded (`verified_path`, `load_verified`), so a corrupt copy is reported, never used.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from drbfr_cli import zoo
from drbfr_cli.download import DownloadError, download
from drbfr_cli.errors import DrbfrError, first_line

MANIFEST_NAME = "manifest.toml"
RECORD_SUFFIX = ".sha256"
"""A file with no published sha256 gets its hash recorded beside it (`NAME.sha256`)."""
UNKNOWN = "unknown"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HASH_CHUNK = 1 << 20


class Availability(StrEnum):
    """How a checkpoint reaches a machine."""

    DOWNLOAD = "download"
    """`url` is a direct file link that `drbfr weights fetch` downloads."""
    MANUAL = "manual"
    """`url` is a page (e.g. a shared folder) a person downloads the file from by hand."""


class Status(StrEnum):
    """What a check of one registry entry found."""

    VALID = "valid"
    """Present, and its sha256 matches the published one."""
    UNVERIFIED = "unverified"
    """Present; no sha256 has been published (see the detail for the recorded one)."""
    CORRUPT = "corrupt"
    """Present, but its size or sha256 differs: never loaded."""
    MISSING = "missing"
    """In no weights folder."""


@dataclass(frozen=True)
class WeightSpec:
    """One checkpoint file drbfr knows about (one table of models/manifest.toml)."""

    name: str
    filename: str
    url: str
    sha256: str | None
    """Published sha256 (lower-case hex), or None where none has been published."""
    size: int | None
    """Size in bytes, or None where unknown."""
    licence: str
    used_by: str
    availability: Availability = Availability.DOWNLOAD
    source: str = ""
    """Where url, sha256 and size come from."""


@dataclass(frozen=True)
class WeightCheck:
    """The result of checking one entry in the weights folders."""

    spec: WeightSpec
    status: Status
    path: Path | None
    size: int | None
    """Bytes on disk (None when missing)."""
    detail: str = ""


class WeightsMissingError(DrbfrError):
    """A checkpoint that is not present in any weights folder."""


class WeightsCorruptError(DrbfrError):
    """A checkpoint whose size or sha256 is wrong, or that cannot be deserialised."""


# --------------------------------------------------------------------------- registry


def parse_manifest(text: str) -> dict[str, WeightSpec]:
    """Parse manifest TOML (one table per file) into WeightSpecs; ValueError names a bad entry."""
    tables = tomllib.loads(text)
    return {name: _spec_from_table(name, table) for name, table in tables.items()}


def _spec_from_table(name: str, table: dict[str, Any]) -> WeightSpec:
    try:
        sha = table["sha256"]
        size = table["size"]
        if sha != UNKNOWN and not _HEX64.fullmatch(sha):
            raise ValueError(f"sha256 must be 64 lower-case hex digits or {UNKNOWN!r}")
        if size != UNKNOWN and (not isinstance(size, int) or size <= 0):
            raise ValueError(f"size must be a positive integer or {UNKNOWN!r}")
        return WeightSpec(
            name=name,
            filename=table["file"],
            url=table["url"],
            sha256=None if sha == UNKNOWN else sha,
            size=None if size == UNKNOWN else size,
            licence=table["licence"],
            used_by=table["used_by"],
            availability=Availability(table.get("availability", Availability.DOWNLOAD)),
            source=table.get("source", ""),
        )
    except KeyError as exc:
        raise ValueError(f"weights manifest entry {name!r}: missing key {exc}") from None
    except ValueError as exc:
        raise ValueError(f"weights manifest entry {name!r}: {exc}") from None


@cache
def load_registry() -> dict[str, WeightSpec]:
    """The registry shipped with drbfr (models/manifest.toml)."""
    path = zoo.models_dir() / MANIFEST_NAME
    return parse_manifest(path.read_text(encoding="utf-8"))


REGISTRY: dict[str, WeightSpec] = load_registry()


def spec(name: str) -> WeightSpec:
    """The registry entry called `name` (a DrbfrError listing the known names otherwise)."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise DrbfrError(f"unknown weights {name!r}; known: {known}") from None


# --------------------------------------------------------------------------- resolution


def home_dirs(kind: str, explicit: Path | None = None) -> list[Path]:
    """Folders of one kind of model file ("weights", "bundles") in resolution order: the one
    given on the command line, $DRBFR_HOME/<kind>, ~/.cache/drbfr/<kind>."""
    dirs: list[Path] = []
    if explicit is not None:
        dirs.append(Path(explicit))
    if home := os.environ.get("DRBFR_HOME"):
        dirs.append(Path(home) / kind)
    dirs.append(Path.home() / ".cache" / "drbfr" / kind)
    return dirs


def search_dirs(weights_dir: Path | None = None) -> list[Path]:
    """The weights folders in resolution order."""
    return home_dirs("weights", weights_dir)


def download_dir(weights_dir: Path | None = None) -> Path:
    """The folder new downloads go to: the first search folder."""
    return search_dirs(weights_dir)[0]


def find(name: str, weights_dir: Path | None = None) -> Path | None:
    """The path of the first copy of `name`'s file in the search folders, or None."""
    filename = spec(name).filename
    for folder in search_dirs(weights_dir):
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    return None


def _placement_hint(entry: WeightSpec, folder: Path) -> str:
    if entry.availability is Availability.MANUAL:
        return f"download {entry.filename} by hand from {entry.url} into {folder}"
    return f"run `drbfr weights fetch {entry.name}` or download {entry.url} into {folder}"


def require(name: str, weights_dir: Path | None = None) -> Path:
    """Like `find`, but a missing file raises WeightsMissingError naming the file and folder."""
    path = find(name, weights_dir)
    if path is None:
        entry = spec(name)
        hint = _placement_hint(entry, download_dir(weights_dir))
        raise WeightsMissingError(f"{entry.name}: {entry.filename} not found; {hint}")
    return path


# --------------------------------------------------------------------------- hashing


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def record_path(path: Path) -> Path:
    """Where the hash of an unverified file is recorded."""
    return path.with_name(path.name + RECORD_SUFFIX)


def read_record(path: Path) -> str | None:
    """The sha256 recorded for `path` on first download (sha256sum format), or None."""
    try:
        fields = record_path(path).read_text(encoding="utf-8").split()
    except OSError:
        return None
    return fields[0] if fields and _HEX64.fullmatch(fields[0]) else None


def write_record(path: Path, sha: str) -> None:
    """Record `sha` beside `path`, atomically, in sha256sum format."""
    target = record_path(path)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(f"{sha}  {path.name}\n", encoding="utf-8")
    os.replace(temporary, target)


def check_file(entry: WeightSpec, path: Path, *, hash_file: bool = True) -> WeightCheck:
    """Check one file against its entry: size first, then (if `hash_file`) sha256."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        detail = f"size {size} bytes, expected {entry.size}"
        return WeightCheck(entry, Status.CORRUPT, path, size, detail)
    if not hash_file:
        status = Status.VALID if entry.sha256 else Status.UNVERIFIED
        return WeightCheck(entry, status, path, size, "size checked, not hashed")
    actual = sha256_file(path)
    if entry.sha256 is not None:
        if actual == entry.sha256:
            return WeightCheck(entry, Status.VALID, path, size)
        detail = f"sha256 {actual[:12]}..., expected {entry.sha256[:12]}..."
        return WeightCheck(entry, Status.CORRUPT, path, size, detail)
    return _check_against_record(entry, path, size, actual)


def _check_against_record(entry: WeightSpec, path: Path, size: int, actual: str) -> WeightCheck:
    recorded = read_record(path)
    if recorded is None:
        detail = f"no published sha256; sha256 {actual}"
        return WeightCheck(entry, Status.UNVERIFIED, path, size, detail)
    if recorded != actual:
        detail = f"sha256 {actual[:12]}... differs from the one recorded on download"
        return WeightCheck(entry, Status.CORRUPT, path, size, detail)
    detail = "no published sha256; matches the one recorded on download"
    return WeightCheck(entry, Status.UNVERIFIED, path, size, detail)


def check(name: str, weights_dir: Path | None = None, *, hash_file: bool = True) -> WeightCheck:
    """Find and check the entry called `name`."""
    entry = spec(name)
    path = find(name, weights_dir)
    if path is None:
        return WeightCheck(entry, Status.MISSING, None, None)
    return check_file(entry, path, hash_file=hash_file)


def check_all(weights_dir: Path | None = None, *, hash_file: bool = True) -> list[WeightCheck]:
    """Check every registry entry, in registry order."""
    return [check(name, weights_dir, hash_file=hash_file) for name in REGISTRY]


# --------------------------------------------------------------------------- loading


def verified_path(name: str, weights_dir: Path | None = None) -> Path:
    """The path of `name`'s file after a size and sha256 check (WeightsCorruptError if bad).

    Use this before handing a file to any loader (ONNX, OpenCV, spandrel, facexlib).
    """
    path = require(name, weights_dir)
    result = check_file(spec(name), path)
    if result.status is Status.CORRUPT:
        raise _corrupt(name, path, result.detail)
    return path


def _corrupt(name: str, path: Path, detail: str) -> WeightsCorruptError:
    return WeightsCorruptError(
        f"{name}: {path} is corrupt ({detail}); delete it and run `drbfr weights fetch {name}`"
    )


def load_verified(
    name: str, weights_dir: Path | None = None, *, map_location: str = "cpu"
) -> dict[str, Any]:
    """Check `name`'s sha256, then `torch.load(..., weights_only=True)` it (.pth/.pt only)."""
    path = verified_path(name, weights_dir)
    if path.suffix not in {".pth", ".pt"}:
        raise DrbfrError(f"{name}: {path.name} is not a torch checkpoint; use verified_path")
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsCorruptError(f"{name}: {path} cannot be loaded: {first_line(exc)}") from None


# --------------------------------------------------------------------------- downloads


def offline_from_env() -> bool:
    """True when DRBFR_OFFLINE is set to 1/true/yes/on."""
    return os.environ.get("DRBFR_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes so far, total bytes or None) while downloading."""


def fetch(
    name: str,
    weights_dir: Path | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    timeout: float = 10.0,
) -> Path:
    """Download `name` into the first weights folder (resuming a `.part`), verify, rename.

    A file that is already present and valid is not downloaded again; a corrupt copy in the
    download folder is replaced. Raises DrbfrError (one line) on any failure.
    """
    entry = spec(name)
    present = find(name, weights_dir)
    if present is not None and check_file(entry, present).status is not Status.CORRUPT:
        return present
    folder = download_dir(weights_dir)
    target = folder / entry.filename
    if entry.availability is Availability.MANUAL:
        raise WeightsMissingError(
            f"{name}: cannot be downloaded automatically; {_placement_hint(entry, folder)}"
        )
    try:
        result = download(
            entry.url,
            target,
            sha256=entry.sha256,
            size=entry.size,
            on_progress=on_progress,
            timeout=timeout,
        )
    except DownloadError as exc:
        raise DrbfrError(f"{name}: {exc}; place {entry.filename} in {folder} by hand") from None
    if entry.sha256 is None:
        write_record(target, result.sha256)
    return target


def ensure(
    name: str,
    weights_dir: Path | None = None,
    *,
    offline: bool | None = None,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """A verified local copy of `name`: found, or downloaded unless offline.

    `offline=None` reads DRBFR_OFFLINE. For `restore` and `eval`; other code uses `require`.
    """
    if check_present(name, weights_dir, offline=offline) is None:
        fetch(name, weights_dir, on_progress=on_progress)
    return verified_path(name, weights_dir)


def check_present(
    name: str, weights_dir: Path | None = None, *, offline: bool | None = None
) -> Path | None:
    """What `ensure` would find, checked without reading the file (its size, not its sha256):
    the path, or None when it is to be downloaded. WeightsMissingError when it is missing and
    cannot be downloaded (offline, or a file fetched by hand), WeightsCorruptError for a file of
    the wrong size: `restore` calls this before any model loads.

    `offline=None` reads DRBFR_OFFLINE.
    """
    if offline is None:
        offline = offline_from_env()
    entry = spec(name)
    path = find(name, weights_dir)
    if path is None:
        hint = _placement_hint(entry, download_dir(weights_dir))
        if offline:
            raise WeightsMissingError(f"{name}: {entry.filename} not found (offline); {hint}")
        if entry.availability is Availability.MANUAL:
            raise WeightsMissingError(f"{name}: cannot be downloaded automatically; {hint}")
        return None
    result = check_file(entry, path, hash_file=False)
    if result.status is Status.CORRUPT:
        raise _corrupt(name, path, result.detail)
    return path
