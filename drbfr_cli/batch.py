"""What every batch command shares: restore, align and degrade each run a set of input images
through their stages, and each needs the same few things around that.

    ItemStatus          what became of one input (the strings restore writes to its records)
    item_seed           a seed per item from the run seed and the item's keys
    failure             the one-line reason an item failed; ITEM_ERRORS, what fails an item
    claim_outputs       every output claimed by one input only; clashing_input
    remove_temporaries  what killed drbfr processes left (drbfr-named temporaries only)
    RecordFile          append-only JSON Lines (restore's records, align's manifest, degrade's
                        degradations.jsonl); read_records, write_records

Nothing here knows a command: each runner keeps its own stages, records and messages.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypeVar

import cv2

from drbfr_cli.errors import DrbfrError, first_line
from drbfr_cli.imaging.atomic import TEMP_PREFIX, is_temporary, open_atomic
from drbfr_cli.imaging.inputs import ImageSource, real_path

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class ItemStatus(StrEnum):
    """What became of one input of a batch (the values are written to restore's records)."""

    OK = "ok"
    """Done by this run: its outputs are written."""
    SKIPPED = "skipped"
    """Done by an earlier run (its outputs are there and recorded); not redone."""
    NO_FACE = "no_face"
    """Read and searched; no face was found in it."""
    FAILED = "failed"
    """Could not be read, processed or written; the item's error says why."""


ITEM_ERRORS: tuple[type[BaseException], ...] = (DrbfrError, cv2.error, MemoryError)
"""Exceptions that fail one item (see `failure`), never the whole run."""


def item_seed(run_seed: int, *keys: str | int, bits: int = 53) -> int:
    """A `bits`-bit seed for one item from the run seed and the item's keys (its relative path,
    a face index): the same in any order, batch, worker count or rerun.

    The top `bits` of the first 8 bytes (little-endian) of the sha256 of the run seed and the
    keys joined by NUL. 53 bits are exact in any JSON reader (restore's faces); degrade's sets
    were made with 63.
    """
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must lie in 1-64, got {bits}")
    text = "\x00".join(str(part) for part in (run_seed, *keys))
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") >> (64 - bits)


def failure(path: Path | str, exc: BaseException, *, memory_hint: str = "free memory") -> str:
    """The one-line reason an item (the image at `path`) failed with `exc`, one of ITEM_ERRORS:
    a DrbfrError's message (it names the file), OpenCV's reason, or out of memory with
    `memory_hint` (what the user can do)."""
    if isinstance(exc, cv2.error):
        return f"{path}: OpenCV failed on this image ({exc.err or first_line(exc)})"
    if isinstance(exc, MemoryError):
        return f"{path}: out of memory ({str(exc) or 'MemoryError'}); {memory_hint}"
    return str(exc)


def claim_outputs(
    claims: Iterable[tuple[K, Path]],
    *,
    describe: Callable[[K], object] = str,
    hint: str = "rename one",
) -> dict[K, Path]:
    """Output -> the input that writes it, from (output, input path) pairs in input order;
    DrbfrError when two inputs claim one output (`describe` names it in the message)."""
    owners: dict[K, Path] = {}
    for output, source in claims:
        if output in owners:
            raise DrbfrError(
                f"{owners[output]} and {source} would both be written to {describe(output)}; {hint}"
            )
        owners[output] = source
    return owners


def clashing_input(
    outputs: Iterable[Path], sources: Sequence[ImageSource]
) -> tuple[Path, Path] | None:
    """The first (output, input path) where an output is an input file (symbolic links
    resolved); None when no output would replace an input."""
    inputs = {real_path(source.path): source.path for source in sources}
    for output in outputs:
        found = inputs.get(real_path(output))
        if found is not None:
            return output, found
    return None


def remove_temporaries(
    folders: Iterable[Path], *, sessions: Iterable[str] | None = None, recursive: bool = False
) -> int:
    """Delete the temporaries of atomic writes (imaging/atomic.py) left in `folders` (and their
    subfolders when `recursive`) by killed drbfr processes; with `sessions`, only those of the
    processes a record lists. Nothing else is touched. Returns how many were deleted."""
    wanted = None if sessions is None else set(sessions)
    pattern = f"{TEMP_PREFIX}*"
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        found = folder.rglob(pattern) if recursive else folder.glob(pattern)
        for path in [p for p in found if is_temporary(p, wanted) and p.is_file()]:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


# --------------------------------------------------------------------------- record files


class RecordFile:
    """Appends to a JSON Lines record file: each `append` is whole lines in one write, flushed
    (and fsynced with `sync`) before it returns, so a kill leaves at most one line cut short.
    The file is opened (and created) by `open` or the first append; opening ends a line cut
    short, so that it stays one line that readers skip."""

    def __init__(self, path: Path, *, sync: bool = True) -> None:
        self.path = path
        self._sync = sync
        self._handle: BinaryIO | None = None

    def open(self) -> BinaryIO:
        """The file, opened for appending if it is not yet (OSError when it cannot be)."""
        if self._handle is None:
            self._handle = self.path.open("ab")
            if self._handle.tell() and not _ends_with_newline(self.path):
                self._handle.write(b"\n")
        return self._handle

    def append(self, *records: dict[str, Any] | str) -> None:
        """Add records (dicts, or JSON texts without a newline) in one write."""
        if not records:
            return
        handle = self.open()
        lines = (r if isinstance(r, str) else json.dumps(r) for r in records)
        handle.write("".join(line + "\n" for line in lines).encode())
        handle.flush()
        if self._sync:
            os.fsync(handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


PARSE_ERRORS = (ValueError, KeyError, TypeError, IndexError)
"""What a parser passed to `read_records` raises for a line that is not a record."""


def read_records(
    path: Path, parse: Callable[[str], T], *, name: str, strict: bool = False
) -> list[T]:
    """The records of a record file, parsed line by line (none when there is no file; blank
    lines skipped). A line that does not parse is skipped; with `strict` it is a DrbfrError
    (`name` says what the file should be), unless it is the last line and cut short by a kill
    (no newline after it). A file that cannot be read is a DrbfrError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise DrbfrError(f"{path}: cannot read the {name} ({exc}); delete it") from None
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(parse(line))
        except PARSE_ERRORS as exc:
            cut = number == len(lines) - 1 and not text.endswith("\n")
            if strict and not cut:
                raise DrbfrError(f"{path}: not a drbfr {name} ({exc})") from None
    return records


def write_records(path: Path, lines: Iterable[str]) -> None:
    """Replace a record file atomically with `lines` (JSON texts, one per line)."""
    with open_atomic(path) as handle:
        handle.write("".join(line + "\n" for line in lines).encode())
