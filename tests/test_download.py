"""Resumable, verified downloads against a local HTTP server (no outside network)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from drbfr_cli.download import DownloadError, download, part_path
from tests.local_http import FileServer, closed_port, serve

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: more than one read chunk
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_and_renames(tmp_path: Path) -> None:
    target = tmp_path / "w" / "model.pth"
    seen: list[tuple[int, int | None]] = []
    with serve(FileServer({"/m": PAYLOAD})) as server:
        result = download(
            server.url("/m"),
            target,
            sha256=SHA,
            size=len(PAYLOAD),
            on_progress=lambda *a: seen.append(a),
        )
    assert target.read_bytes() == PAYLOAD
    assert result.sha256 == SHA and result.resumed_from == 0
    assert not part_path(target).exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_download_resumes_a_partial_file_with_a_range_request(tmp_path: Path) -> None:
    target = tmp_path / "model.pth"
    half = len(PAYLOAD) // 2
    part_path(target).write_bytes(PAYLOAD[:half])
    with serve(FileServer({"/m": PAYLOAD})) as server:
        result = download(server.url("/m"), target, sha256=SHA, size=len(PAYLOAD))
    assert server.requests == [("/m", f"bytes={half}-")]
    assert server.bytes_sent == len(PAYLOAD) - half
    assert result.resumed_from == half
    assert target.read_bytes() == PAYLOAD


def test_dropped_connection_keeps_the_part_and_the_next_run_resumes(tmp_path: Path) -> None:
    target = tmp_path / "model.pth"
    cut = 300_000
    with serve(FileServer({"/m": PAYLOAD}, cut_after=cut)) as server:
        with pytest.raises(DownloadError, match="kept"):
            download(server.url("/m"), target, sha256=SHA, size=len(PAYLOAD))
        assert not target.exists()
        assert part_path(target).stat().st_size == cut
        download(server.url("/m"), target, sha256=SHA, size=len(PAYLOAD))
    assert server.requests[-1] == ("/m", f"bytes={cut}-")
    assert server.bytes_sent == len(PAYLOAD)  # nothing was sent twice
    assert target.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(tmp_path: Path) -> None:
    target = tmp_path / "model.pth"
    part_path(target).write_bytes(b"x" * 1000)  # would be wrong if appended to
    with serve(FileServer({"/m": PAYLOAD}, honour_range=False)) as server:
        download(server.url("/m"), target, sha256=SHA, size=len(PAYLOAD))
    assert target.read_bytes() == PAYLOAD


def test_complete_part_is_verified_without_a_request(tmp_path: Path) -> None:
    target = tmp_path / "model.pth"
    part_path(target).write_bytes(PAYLOAD)
    with serve(FileServer({"/m": PAYLOAD})) as server:
        download(server.url("/m"), target, sha256=SHA, size=len(PAYLOAD))
    assert server.requests == []
    assert target.read_bytes() == PAYLOAD


def test_range_past_the_end_of_unknown_size_falls_back_to_verification(tmp_path: Path) -> None:
    target = tmp_path / "model.pth"
    part_path(target).write_bytes(PAYLOAD)
    with serve(FileServer({"/m": PAYLOAD})) as server:
        download(server.url("/m"), target, sha256=SHA, size=None)
    assert server.requests == [("/m", f"bytes={len(PAYLOAD)}-")]  # answered 416
    assert target.read_bytes() == PAYLOAD


def test_wrong_sha256_deletes_the_download_and_says_so(tmp_path: Path) -> None:
    target = tmp_path / "model.pth"
    with (
        serve(FileServer({"/m": PAYLOAD})) as server,
        pytest.raises(DownloadError, match=r"sha256 .* deleted"),
    ):
        download(server.url("/m"), target, sha256="0" * 64, size=len(PAYLOAD))
    assert not target.exists() and not part_path(target).exists()


def test_wrong_size_deletes_the_download(tmp_path: Path) -> None:
    target = tmp_path / "model.pth"
    with (
        serve(FileServer({"/m": PAYLOAD})) as server,
        pytest.raises(DownloadError, match="expected"),
    ):
        download(server.url("/m"), target, sha256=None, size=len(PAYLOAD) - 1)
    assert not target.exists() and not part_path(target).exists()


def test_http_error_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "w" / "model.pth"
    with serve(FileServer({})) as server, pytest.raises(DownloadError, match="HTTP 404") as info:
        download(server.url("/missing"), target, sha256=SHA)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "w").exists()


def test_refused_connection_fails_fast_and_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "w" / "model.pth"
    start = time.perf_counter()
    with pytest.raises(DownloadError, match=r"cannot download http://127.0.0.1"):
        download(f"http://127.0.0.1:{closed_port()}/m", target, sha256=SHA, timeout=2)
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "w").exists()
