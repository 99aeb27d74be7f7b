"""Writing outputs safely: atomic files and their temporaries, file names that fit in 255
bytes, output folders checked before anything is written."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from drbfr_cli.errors import DrbfrError, ImageWriteError

TEMP_PREFIX = ".drbfr-"
TEMP_SUFFIX = ".tmp"
TEMP_SESSION = secrets.token_hex(8)
"""This process's mark in the name of every temporary it creates: atomic writes go through
`.drbfr-SESSION-XXXXXXXX.tmp` in the target folder, then a rename. The name does not hold the
target's (a 255-byte name stays writable), and a restore run lists SESSION in its record file,
so cleanup deletes only temporaries that a recorded drbfr process created."""
_TEMP_NAME = re.compile(r"^\.drbfr-([0-9a-f]{16})-[0-9a-f]{8}\.tmp$")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name in the target folder, fsync, then rename over `path`."""
    with open_atomic(path) as handle:
        handle.write(data)


@contextmanager
def open_atomic(path: Path) -> Iterator[BinaryIO]:
    """A binary file handle whose content appears at `path` only when the block completes.

    The data goes to a temporary beside `path` (see TEMP_SESSION), is fsynced
    and renamed over `path`; an error inside the block or while writing removes the temporary.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = _create_temporary(path)
    except OSError as exc:
        raise ImageWriteError(path, f"cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise ImageWriteError(path, f"cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _create_temporary(path: Path) -> tuple[int, str]:
    """Create a temporary beside `path` for writing; returns (descriptor, name).

    Unlike tempfile.mkstemp (always 0600), the file gets 0666 less the process umask, as any
    file the user creates: 0644 under the usual umask 022.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        name = _temporary_name(path)
        try:
            return os.open(name, flags, 0o666), str(name)
        except FileExistsError:
            continue


def make_temporary_folder(path: Path) -> Path:
    """Create an empty temporary folder beside `path`, to fill and rename to `path`.

    Unlike tempfile.mkdtemp (always 0700), it gets 0777 less the process umask, as any folder
    the user creates: 0755 under the usual umask 022.
    """
    while True:
        name = _temporary_name(path)
        try:
            name.mkdir(0o777)
            return name
        except FileExistsError:
            continue


def _temporary_name(path: Path) -> Path:
    return path.parent / f"{TEMP_PREFIX}{TEMP_SESSION}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


NAME_MAX = 255
"""Longest file name in bytes on the common file systems (ext4, XFS, Btrfs, APFS)."""


def fit_name(stem: str, tail: str) -> str:
    """`stem + tail` as a file name of at most NAME_MAX bytes: a stem too long for it is cut
    and marked `~` plus 8 hex digits of its sha256, so that stems cut alike stay apart."""
    if len(os.fsencode(stem + tail)) <= NAME_MAX:
        return stem + tail
    mark = "~" + hashlib.sha256(os.fsencode(stem)).hexdigest()[:8]
    room = NAME_MAX - len(os.fsencode(mark + tail))
    while len(os.fsencode(stem)) > room:
        stem = stem[:-1]
    return stem + mark + tail


def make_output_folder(out_dir: Path) -> None:
    """Create an output folder (and its parents); one-line DrbfrError unless it is writable."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DrbfrError(
            f"{out_dir}: cannot create the output folder ({exc.strerror or exc})"
        ) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise DrbfrError(f"{out_dir}: output folder is not writable")


def check_folder_target(folder: Path) -> None:
    """One-line DrbfrError, creating nothing, when `folder` can be no writable folder: it, or
    the nearest folder above it that exists, is a file or is not writable (make_output_folder
    creates it later)."""
    target = Path(os.path.abspath(folder))
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        blocker = "a file of that name exists" if existing == target else f"{existing} is a file"
        raise DrbfrError(f"{folder}: cannot create the output folder ({blocker})")
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == target:
            raise DrbfrError(f"{folder}: output folder is not writable")
        raise DrbfrError(f"{folder}: cannot create the output folder ({existing} is not writable)")


def check_file_target(path: Path) -> None:
    """One-line DrbfrError, creating nothing, when no file can be written at `path`."""
    if path.is_dir():
        raise DrbfrError(f"{path}: is a folder, not a file")
    check_folder_target(path.parent)


def temporary_session(path: Path) -> str | None:
    """The TEMP_SESSION of the drbfr process that created the temporary `path`; None for a name
    that is not a drbfr temporary."""
    match = _TEMP_NAME.match(path.name)
    return match.group(1) if match else None


def is_temporary(path: Path, sessions: Iterable[str] | None = None) -> bool:
    """True for a temporary `open_atomic` creates (left behind only by a killed process); with
    `sessions`, only one that a process of those sessions created."""
    session = temporary_session(path)
    return session is not None and (sessions is None or session in set(sessions))
