"""Headless Chromium (Debian's `chromium` package) for tests that render drbfr's pages.

Outside CI a missing browser skips those tests, saying why; with CI=true it fails them (.ci/run
installs the package). The browser runs offline: no background networking, no updates, a
fresh profile.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CHROMIUM = Path(os.environ.get("DRBFR_CHROMIUM", "/usr/bin/chromium"))
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_chromium() -> Path:
    """The browser's path; a failure under CI=true, a skip elsewhere, when it is missing."""
    if not CHROMIUM.is_file():
        message = f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"
        if _in_ci():
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if _in_ci():
            pytest.fail("CI=true but the playwright package is missing (the test extra)")
        pytest.skip("needs the playwright package (pip install -e '.[test]')")
    return CHROMIUM


@contextmanager
def chromium_context() -> Iterator[Any]:
    """A persistent Chromium context with a throwaway profile (1200x900 viewport)."""
    from playwright.sync_api import sync_playwright

    executable = require_chromium()
    profile = tempfile.mkdtemp(prefix="drbfr-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(executable),
                args=FLAGS,
                headless=True,
                viewport={"width": 1200, "height": 900},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class PageProblems:
    """Console errors, uncaught exceptions and failed requests of one page."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("requestfailed", lambda r: self.errors.append(f"failed request {r.url}"))


def open_page(context: Any, path: Path) -> tuple[Any, PageProblems]:
    """Open a file page, load every image (lazy ones too) and wait until all are decoded."""
    page = context.new_page()
    problems = PageProblems(page)
    page.goto(path.resolve().as_uri())
    page.evaluate("document.querySelectorAll('img').forEach(img => { img.loading = 'eager'; })")
    page.wait_for_function("Array.from(document.images).every(img => img.complete)")
    return page, problems


def broken_images(page: Any) -> list[str]:
    """The src of every image that did not load (naturalWidth 0)."""
    return page.evaluate(
        "Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src)"
    )


def screenshot(locator: Any) -> np.ndarray:
    """An element's screenshot as an RGB array."""
    import cv2

    data = np.frombuffer(locator.screenshot(), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]
