"""A tiny HTTP file server on 127.0.0.1 for download tests: Range requests, scripted faults."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FileServer:
    """Serves `files` (path -> bytes); records each request's Range header and bytes sent."""

    files: dict[str, bytes]
    honour_range: bool = True
    cut_after: int | None = None
    """Close the connection after this many body bytes (once), to simulate a dropped download."""
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    bytes_sent: int = 0
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            state.requests.append((self.path, self.headers.get("Range")))
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404, "Not Found")
                return
            start = self._range_start()
            if start is not None and start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
            body = data[start or 0 :]
            self.send_response(206 if start is not None else 200)
            if start is not None:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_after is not None:
                body, state.cut_after = body[: state.cut_after], None
            self.wfile.write(body)
            state.bytes_sent += len(body)

        def _range_start(self) -> int | None:
            header = self.headers.get("Range")
            if not state.honour_range or not header or not header.startswith("bytes="):
                return None
            return int(header[len("bytes=") :].split("-")[0])

    return Handler


@contextmanager
def serve(state: FileServer) -> Iterator[FileServer]:
    """Run `state` on a free port of 127.0.0.1 in a thread for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
