"""User-facing errors: each carries a one-line, actionable message."""

from __future__ import annotations

from pathlib import Path


class DrbfrError(Exception):
    """An error caused by input, configuration or environment; shown as one line, no traceback."""


class ImageReadError(DrbfrError):
    """An image file that cannot be read: missing, empty, not an image, truncated, too large."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class ImageWriteError(DrbfrError):
    """An output that cannot be written (unwritable folder, full disk, unknown extension)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason
