"""Resumable, verified HTTP(S) downloads with the standard library only.

The bytes go to `TARGET.part`; an interrupted download is resumed with an HTTP Range request.
The size and sha256 are checked before the `.part` is renamed to the target, so the target
name only ever holds a complete, verified file. A `.part` is created only once bytes arrive,
so a download that cannot connect leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from pathlib import Path

from drbfr_cli.errors import DrbfrError

PART_SUFFIX = ".part"
_CHUNK = 1 << 20
_USER_AGENT = "drbfr-weights/1 (+urllib)"

ProgressCallback = Callable[[int, int | None], None]


class DownloadError(DrbfrError):
    """A download that failed: network, HTTP status, size or sha256 mismatch."""


@dataclass(frozen=True)
class DownloadResult:
    """A completed download."""

    path: Path
    sha256: str
    size: int
    resumed_from: int
    """Bytes that were already in the `.part` file and were not downloaded again."""


def part_path(target: Path) -> Path:
    """The temporary name a download of `target` is written to."""
    return target.with_name(target.name + PART_SUFFIX)


def download(
    url: str,
    target: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    on_progress: ProgressCallback | None = None,
    timeout: float = 10.0,
) -> DownloadResult:
    """Download `url` to `target`, resuming `target.part`; verify size/sha256; rename.

    `timeout` bounds the connection and each read (seconds). A wrong size or sha256 deletes
    the `.part` and raises DownloadError; a network failure keeps it for the next attempt.
    """
    part = part_path(target)
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is None or offset < size:
        offset = _transfer(url, part, offset, on_progress, timeout)
    actual = _verify(part, sha256, size, url)
    os.replace(part, target)
    return DownloadResult(target, actual, target.stat().st_size, offset)


def _transfer(
    url: str, part: Path, offset: int, on_progress: ProgressCallback | None, timeout: float
) -> int:
    """Fetch from `offset` onwards, appending to `part`; returns the bytes kept from before."""
    try:
        with _open(url, offset, timeout) as response:
            if response.status != 206 and offset:
                offset = 0  # the server ignored the Range header: start over
            total = _total_size(response, offset)
            done = _stream(response, part, offset, total, on_progress)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part already holds the whole file
            return offset
        raise DownloadError(f"cannot download {url} (HTTP {exc.code} {exc.reason})") from None
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        kept = f" ({part.stat().st_size} bytes kept in {part})" if part.is_file() else ""
        raise DownloadError(f"cannot download {url} ({_describe(reason)}){kept}") from None
    if total is not None and done < total:
        raise DownloadError(
            f"cannot download {url} (connection closed after {done} of {total} bytes; "
            f"{done} bytes kept in {part}, run again to resume)"
        )
    return offset


def _open(url: str, offset: int, timeout: float) -> HTTPResponse:
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)


def _total_size(response: HTTPResponse, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _stream(
    response: HTTPResponse,
    part: Path,
    offset: int,
    total: int | None,
    on_progress: ProgressCallback | None,
) -> int:
    """Append the body to `part`; returns the bytes the `.part` holds afterwards."""
    done = offset
    stream = None
    try:
        while chunk := response.read(_CHUNK):
            if stream is None:  # create or truncate the .part only once bytes arrive
                part.parent.mkdir(parents=True, exist_ok=True)
                stream = open(part, "ab" if offset else "wb")  # noqa: SIM115
            stream.write(chunk)
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, total)
    finally:
        if stream is not None:
            stream.close()
    return done


def _verify(part: Path, sha256: str | None, size: int | None, url: str) -> str:
    if not part.is_file():
        raise DownloadError(f"cannot download {url} (the server sent no data)")
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        raise DownloadError(
            f"{url} gave {actual_size} bytes, expected {size}; the partial file was deleted"
        )
    digest = hashlib.sha256()
    with open(part, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    actual = digest.hexdigest()
    if sha256 is not None and actual != sha256:
        part.unlink()
        raise DownloadError(
            f"{url} has sha256 {actual}, expected {sha256}; the downloaded file was deleted"
        )
    return actual


def _describe(reason: object) -> str:
    if isinstance(reason, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return f"no network or unknown host: {reason.strerror or reason}"
    return str(reason) or type(reason).__name__
