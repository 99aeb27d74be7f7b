"""OUT/report.records.jsonl: the append-only record of every image a restore finished.

Each line is one image's record (the report's), written and flushed before that image's files
appear, with the sha256 of every file written for it (`files`, paths relative to OUT). So a
killed run leaves the records of all it finished, a rerun takes the records of the images it
skips from here, and a file at an output path counts as drbfr's only when this log lists it
with its current content. Later lines win; a line cut short by a kill is ignored.

Several processes restoring into one OUT (`ranks.py`) each append to their own file,
report.records.rank-NNNNN.jsonl; every process reads all of them, so a rerun with any number of
processes resumes from the records of all. A file counts as drbfr's when any record file lists
its present content.

Each process that restores into OUT first appends a session line to its record file: its
TEMP_SESSION (the mark in the names of its temporaries, imaging/atomic.py) and the run id of
its report parts. A later run deletes only the temporaries and report parts of recorded
sessions, so a file of the user's in OUT is never taken for one of drbfr's.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drbfr_cli.batch import RecordFile
from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import TEMP_SESSION

RECORDS_NAME = "report.records.jsonl"
RECORDS_GLOB = "report.records*.jsonl"
"""Every record file of an output folder: RECORDS_NAME and the shards of ranks."""
_FIRST_KEY = b'{"input": '
"""Every record line starts so (ImageRecord's first field): how a file is known as ours."""
SESSION_STATUS = "session"
"""The status of a session line (not an image's record)."""
_SESSION = re.compile(r"^[0-9a-f]{16}$")
_RUN = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Sessions:
    """What the session lines of OUT's record files list: the TEMP_SESSION of every process
    that restored into OUT, and the run ids of their report parts."""

    temporaries: set[str] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)

    def add(self, record: dict[str, Any]) -> None:
        """Take a session line's values (only well-formed ones: a run id becomes a path)."""
        session, run = record.get("session"), record.get("run")
        if isinstance(session, str) and _SESSION.match(session):
            self.temporaries.add(session)
        if isinstance(run, str) and _RUN.match(run):
            self.runs.add(run)


def not_ours(path: Path) -> str:
    """The error of an image whose output path holds a file drbfr did not write."""
    return (
        f"{path}: a file drbfr did not write (or that changed since; see {RECORDS_NAME}) is "
        "in the way; it is kept: move it away to restore this image"
    )


def session_line(run_id: str | None) -> dict[str, Any]:
    """The session line of this process (see Sessions)."""
    return {"input": None, "status": SESSION_STATUS, "session": TEMP_SESSION, "run": run_id}


def is_image_record(record: dict[str, Any]) -> bool:
    """False for a session line."""
    return record.get("status") != SESSION_STATUS


def recorded_sessions(out_dir: Path) -> Sessions:
    """The sessions listed by OUT's record files (a file that is not drbfr's lists none)."""
    sessions = Sessions()
    marker = f'"status": "{SESSION_STATUS}"'.encode()
    for path in record_files(out_dir):
        with path.open("rb") as handle:
            if handle.read(len(_FIRST_KEY)) != _FIRST_KEY:
                continue
            handle.seek(0)
            for line in handle:
                if marker in line and (record := _parse(line)) is not None:
                    sessions.add(record)
    return sessions


def records_name(rank: int | None) -> str:
    """The record file a process appends to: RECORDS_NAME alone, a shard per rank when sharded."""
    return RECORDS_NAME if rank is None else f"report.records.rank-{rank:05d}.jsonl"


def record_files(out_dir: Path) -> list[Path]:
    """The record files in OUT, in name order."""
    return sorted(path for path in out_dir.glob(RECORDS_GLOB) if path.is_file())


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
    """The record files of one output folder: what is in them at load time, and appends to
    this process's own file (`name`).

    Only offsets and digests are held in memory; a record is read back when asked for.
    `finished` and `owns` may run in one thread while `append` runs in another.
    """

    def __init__(self, out_dir: Path, name: str = RECORDS_NAME) -> None:
        self.out_dir = out_dir
        self.path = out_dir / name
        self._files: list[Path] = []
        self._written: dict[str, dict[int, tuple[str, int]]] = {}
        """File (relative to OUT) -> record file index -> (sha256 of the content written there
        last, offset of that record): the latest record of every record file that wrote it."""
        others = [path for path in record_files(out_dir) if path != self.path]
        for path in [*others, self.path]:  # its own file last: its records are checked first
            self._load(path)
        self._file = RecordFile(self.path)  # appends are fsynced
        self._file.open()  # now: OSError here, before anything is written

    def _load(self, path: Path) -> None:
        number = len(self._files)
        self._files.append(path)
        if not path.exists():
            return
        with path.open("rb") as handle:
            if handle.read(len(_FIRST_KEY)) not in (b"", _FIRST_KEY):
                raise DrbfrError(
                    f"{path}: not a drbfr record file; move it away or choose another -o"
                )
            handle.seek(0)
            offset = 0
            for line in handle:
                self._index(line, number, offset)
                offset += len(line)

    def _index(self, line: bytes, number: int, offset: int) -> None:
        record = _parse(line)
        if record is None:
            return
        for name, digest in record.get("files", {}).items():
            self._written.setdefault(name, {})[number] = (digest, offset)

    def key(self, path: Path) -> str:
        """How the records name a file of OUT."""
        return path.relative_to(self.out_dir).as_posix()

    def _match(self, path: Path) -> tuple[int, int] | None:
        """(record file index, offset) of a record that wrote `path` with its present content;
        the latest such record of this process's own file first."""
        written = self._written.get(self.key(path))
        if not written:
            return None
        digest = sha256_of(path)
        for number in sorted(written, reverse=True):
            expected, offset = written[number]
            if expected == digest:
                return number, offset
        return None

    def owns(self, path: Path) -> bool:
        """True when drbfr wrote `path` with its present content."""
        return self._match(path) is not None

    def finished(self, output: Path) -> dict[str, Any] | None:
        """The record that wrote `output`, when the file is still what it wrote; else None."""
        found = self._match(output)
        if found is None:
            return None
        number, offset = found
        with self._files[number].open("rb") as handle:
            handle.seek(offset)
            return _parse(handle.readline())

    def begin(self, run_id: str | None = None) -> None:
        """Record this process's session (before it writes anything into OUT)."""
        self.append(session_line(run_id))

    def append(self, record: dict[str, Any]) -> None:
        """Add one record and flush it to disk before returning."""
        self._file.append(record)

    def close(self) -> None:
        self._file.close()


def _parse(line: bytes) -> dict[str, Any] | None:
    """A record line as a dict; None for a line cut short or not a record."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "status" in record else None
