"""Render the README's gallery screenshots from a restore's OUT/index.html.

    python docs/gallery_screenshots.py OUT [CARD_NAME]

Writes docs/gallery-slider.png (the top of the page: summary and the first card) and
docs/gallery-faces.png (the card of CARD_NAME with its face boxes drawn), as 256-colour PNGs
to keep them small. Needs Debian's chromium and playwright (the test extra).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.browser import chromium_context, open_page

DOCS = Path(__file__).resolve().parent


def save_small(png: bytes, path: Path) -> None:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path}: {image.size[0]}x{image.size[1]}, {path.stat().st_size // 1024} kB")


def main(out: Path, card_name: str) -> None:
    with chromium_context() as context:
        page, problems = open_page(context, out / "index.html")
        page.set_viewport_size({"width": 1100, "height": 820})
        save_small(page.screenshot(), DOCS / "gallery-slider.png")
        card = page.locator(".card", has_text=card_name).first
        card.locator(".toggle-boxes").check()
        card.locator(".slider").fill("35")
        save_small(card.screenshot(), DOCS / "gallery-faces.png")
        if problems.errors:
            raise SystemExit(f"page problems: {problems.errors}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "example.jpg")
