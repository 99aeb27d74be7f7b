"""OUT/report.records.jsonl: the append-only record of every image a restore finished.

Each line is one image's record (the report's), written and flushed before that image's files
appear, with the sha256 of every file written for it (`files`, paths relative to OUT). So a
killed run leaves the records of all it finished, a rerun takes the records of the images it
skips from here, and a file at an output path counts as drbfr's only when this log lists it
with its current content. Later lines win; a line cut short by a kill is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from drbfr_cli.errors import DrbfrError

RECORDS_NAME = "report.records.jsonl"
_FIRST_KEY = b'{"input": '
"""Every record line starts so (ImageRecord's first field): how a file is known as ours."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_of(path: Path) -> str | None:
    """The sha256 of a file's content, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


class RecordLog:
    """The record file of one output folder: what is in it at load time, and appends.

    Only offsets and digests are held in memory; a record is read back when asked for.
    `finished` and `owns` may run in one thread while `append` runs in another.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.path = out_dir / RECORDS_NAME
        self._owned: dict[str, str] = {}
        """File (relative to OUT) -> sha256 of the content drbfr wrote there last."""
        self._line_of: dict[str, int] = {}
        """File (relative to OUT) -> offset of the latest record that wrote it."""
        self._load()
        self._handle = self.path.open("ab")
        if self._handle.tell() and not self._ends_with_newline():
            self._handle.write(b"\n")  # close a line a kill cut short

    def _load(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            if handle.read(len(_FIRST_KEY)) not in (b"", _FIRST_KEY):
                raise DrbfrError(
                    f"{self.path}: not a drbfr record file; move it away or choose another -o"
                )
            handle.seek(0)
            offset = 0
            for line in handle:
                self._index(line, offset)
                offset += len(line)

    def _index(self, line: bytes, offset: int) -> None:
        record = _parse(line)
        if record is None:
            return
        for name, digest in record.get("files", {}).items():
            self._owned[name] = digest
            self._line_of[name] = offset

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"

    def key(self, path: Path) -> str:
        """How the records name a file of OUT."""
        return path.relative_to(self.out_dir).as_posix()

    def owns(self, path: Path) -> bool:
        """True when drbfr wrote `path` with its present content."""
        expected = self._owned.get(self.key(path))
        return expected is not None and sha256_of(path) == expected

    def finished(self, output: Path) -> dict[str, Any] | None:
        """The record that wrote `output`, when the file is still what it wrote; else None."""
        offset = self._line_of.get(self.key(output))
        if offset is None or not self.owns(output):
            return None
        with self.path.open("rb") as handle:
            handle.seek(offset)
            return _parse(handle.readline())

    def append(self, record: dict[str, Any]) -> None:
        """Add one record and flush it to disk before returning."""
        self._handle.write(json.dumps(record).encode() + b"\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def _parse(line: bytes) -> dict[str, Any] | None:
    """A record line as a dict; None for a line cut short or not a record."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "status" in record else None
