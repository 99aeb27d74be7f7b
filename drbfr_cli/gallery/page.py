"""The one HTML writer of drbfr: static, self-contained pages (inline CSS and JS, no network,
no external fonts or scripts) that open from disk, with their thumbnails in a `gallery/`
folder beside them.

Trust: a page is replaced only when drbfr wrote it (it starts with `HEAD`), and the thumbnail
folder only when it holds drbfr's marker file; anything else at those paths is a user's and
makes `check_targets` refuse the run before any work is done. Every file is written atomically.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import quote

from drbfr_cli.errors import DrbfrError
from drbfr_cli.folders import THUMBS
from drbfr_cli.imaging import write_bytes_atomic

PAGE_NAME = "index.html"
MARKER_NAME = "drbfr-gallery.txt"
_MARKER_TEXT = (
    "Thumbnails and previews of the index*.html pages beside this folder, written by drbfr.\n"
    "drbfr rewrites and prunes the files here on every run that writes those pages.\n"
)
HEAD = "<!doctype html>\n<!-- drbfr gallery -->\n"
"""How every page drbfr writes begins (how a page is known as drbfr's)."""
_EXTRA_PAGE = re.compile(r"^index-([0-9]+)\.html$")
BROWSER_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp"})
"""Image formats every browser shows (TIFF is not among them)."""

esc = html.escape


def page_name(number: int) -> str:
    """index.html for page 1, index-N.html after it."""
    return PAGE_NAME if number == 1 else f"index-{number}.html"


def is_ours(path: Path) -> bool:
    """True when drbfr wrote the page at `path` (by its first bytes)."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(HEAD)) == HEAD.encode()
    except OSError:
        return False


def check_targets(page_dir: Path) -> None:
    """DrbfrError when a page or thumbnail folder that drbfr did not write is in the way."""
    pages = [page_dir / PAGE_NAME]
    if page_dir.is_dir():
        pages += [p for p in page_dir.iterdir() if _EXTRA_PAGE.match(p.name)]
    for page in pages:
        if page.exists() and not is_ours(page):
            raise DrbfrError(
                f"{page}: not a drbfr page, so it is not replaced; move it away, choose "
                "another output folder, or pass --no-gallery"
            )
    folder = page_dir / THUMBS
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER_NAME).is_file():
        raise DrbfrError(
            f"{folder}: a folder drbfr did not write is in the way of the gallery's thumbnails; "
            "move it away, choose another output folder, or pass --no-gallery"
        )


def mark_thumbs(page_dir: Path) -> Path:
    """The thumbnail folder, created with its marker file."""
    folder = page_dir / THUMBS
    if not (folder / MARKER_NAME).is_file():
        write_bytes_atomic(folder / MARKER_NAME, _MARKER_TEXT.encode())
    return folder


def write_page(path: Path, title: str, body: str) -> None:
    """Write one page atomically (DrbfrError when a page drbfr did not write is there)."""
    if path.exists() and not is_ours(path):
        raise DrbfrError(f"{path}: not a drbfr page, so it is not replaced")
    text = (
        f'{HEAD}<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
        f"<script>{SCRIPT}</script>\n</body></html>\n"
    )
    write_bytes_atomic(path, text.encode())


def remove_pages_after(page_dir: Path, count: int) -> None:
    """Delete drbfr's index-N.html pages with N > count (left by a longer earlier run)."""
    for path in page_dir.iterdir():
        match = _EXTRA_PAGE.match(path.name)
        if match and int(match.group(1)) > count and is_ours(path):
            path.unlink()


def link(target: Path, page_dir: Path) -> str:
    """A URL for `target` relative to a page in `page_dir` (a file: URL across drives)."""
    target, page_dir = Path(os.path.abspath(target)), Path(os.path.abspath(page_dir))
    try:
        relative = os.path.relpath(target, page_dir)
    except ValueError:
        return target.as_uri()
    return quote(Path(relative).as_posix())


def pager(number: int, pages: int) -> str:
    """Links to the previous, next, first, last and nearby pages ('' for a single page)."""
    if pages <= 1:
        return ""
    shown = sorted({1, pages, *range(max(1, number - 3), min(pages, number + 3) + 1)})
    items, last = [], 0
    for page in shown:
        if page > last + 1:
            items.append("<span>…</span>")
        if page == number:
            items.append(f'<span aria-current="page">{page}</span>')
        else:
            items.append(f'<a href="{page_name(page)}">{page}</a>')
        last = page
    previous = f'<a rel="prev" href="{page_name(number - 1)}">← previous</a>' if number > 1 else ""
    following = f'<a rel="next" href="{page_name(number + 1)}">next →</a>' if number < pages else ""
    return f'<nav class="pager" aria-label="pages">{previous} {" ".join(items)} {following}</nav>'


def table(rows: Iterable[Sequence[object]], header: Sequence[str] = ()) -> str:
    """An HTML table of escaped cells."""
    head = "".join(f"<th>{esc(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return (
        f"<table>{f'<thead><tr>{head}</tr></thead>' if head else ''}<tbody>{body}</tbody></table>"
    )


def number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def histogram_svg(values: Sequence[float], label: str, bins: int = 20) -> str:
    """An inline SVG histogram of the finite `values` (bars, counts and the value range)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return f"<p>{esc(label)}: no finite values</p>"
    low, high = min(finite), max(finite)
    width, height, top = 400, 140, 10
    span = high - low or 1.0
    counts = [0] * bins
    for value in finite:
        counts[min(bins - 1, int((value - low) / span * bins))] += 1
    tallest = max(counts)
    bar = width / bins
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{top + height - c / tallest * height:.1f}" '
        f'width="{bar - 1:.1f}" height="{c / tallest * height:.1f}"><title>{c}</title></rect>'
        for i, c in enumerate(counts)
        if c
    )
    axis = top + height + 14
    return (
        f'<figure class="hist"><svg viewBox="0 0 {width} {axis + 4}" role="img" '
        f'aria-label="{esc(label)} histogram">{rects}'
        f'<text x="0" y="{axis}">{low:.4g}</text>'
        f'<text x="{width}" y="{axis}" text-anchor="end">{high:.4g}</text></svg>'
        f"<figcaption>{esc(label)}: {len(finite)} images, most in one bin {tallest}"
        "</figcaption></figure>"
    )


CSS = """
:root{color-scheme:light dark;--fg:#1d1d1f;--bg:#f5f5f7;--card:#fff;--muted:#6e6e73;--ok:#1a7f37;
--warn:#9a6700;--bad:#cf222e;--box:#ff2d55}
@media (prefers-color-scheme:dark){:root{--fg:#e8e8ed;--bg:#111;--card:#1c1c1e;--muted:#a1a1a6}}
*{box-sizing:border-box}
body{margin:0;padding:1rem 1.5rem 3rem;font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;
color:var(--fg);background:var(--bg)}
h1{font-size:1.5rem;margin:.2rem 0 .6rem}h2{font-size:1.05rem;margin:0 0 .5rem;word-break:break-all}
a{color:inherit}
table{border-collapse:collapse;margin:.4rem 0}td,th{padding:.15rem .6rem;text-align:left;
border-bottom:1px solid #8884;vertical-align:top}
.summary{display:flex;flex-wrap:wrap;gap:1rem 2.5rem}
.pager{margin:1rem 0;display:flex;flex-wrap:wrap;gap:.5rem;align-items:center}
.pager a,.pager span{padding:.1rem .45rem;border-radius:4px}
.pager [aria-current]{background:var(--fg);color:var(--bg)}
.cards{display:grid;gap:1.2rem}
.card{background:var(--card);border-radius:10px;padding:1rem;box-shadow:0 1px 3px #0002;
max-width:1100px}
.badge{font-size:.75rem;padding:.1rem .4rem;border-radius:4px;color:#fff;margin-left:.4rem;
vertical-align:middle}
.badge.ok{background:var(--ok)}.badge.skipped{background:var(--warn)}.badge.failed{background:var(--bad)}
.badge.no_face{background:var(--warn)}
.ba{position:relative;--pos:50%;max-width:100%;line-height:0;background:#8882;user-select:none}
.ba img{display:block;width:100%;height:auto}
.ba img.before{position:absolute;inset:0;height:100%;clip-path:inset(0 calc(100% - var(--pos)) 0 0)}
.ba .boxes{position:absolute;inset:0;width:100%;height:100%;display:none;pointer-events:none}
.show-boxes .ba .boxes{display:block}
.boxes rect{fill:none;stroke:var(--box);stroke-width:3;vector-effect:non-scaling-stroke}
.boxes text{fill:var(--box);font:bold 14px sans-serif}
.ba .handle{position:absolute;top:0;bottom:0;left:var(--pos);width:2px;margin-left:-1px;
background:#fff;box-shadow:0 0 0 1px #0008;pointer-events:none}
.ba .label{position:absolute;top:.5rem;padding:.2rem .4rem;background:#000a;color:#fff;
font-size:.75rem;line-height:1.2;border-radius:3px;pointer-events:none}
.ba .label.in{left:.5rem}.ba .label.out{right:.5rem}
.ba input[type=range]{position:absolute;inset:0;width:100%;height:100%;margin:0;opacity:0;
cursor:ew-resize}
.ba:focus-within .handle{background:#ffd60a;width:4px;margin-left:-2px}
.tools{color:var(--muted);font-size:.85rem;margin:.5rem 0}
.faces{display:flex;flex-wrap:wrap;gap:.8rem}
.face{margin:0;font-size:.8rem;color:var(--muted)}
.face .pair{display:flex;gap:2px}.face img{width:160px;height:160px;display:block}
.error{color:var(--bad)}
.hist svg{width:420px;max-width:100%;fill:#0a84ff}.hist text{fill:var(--muted);font-size:12px}
.hist{display:inline-block;margin:0 1.5rem 1rem 0}
.ranked{display:flex;flex-wrap:wrap;gap:1rem}.ranked .face img{width:128px;height:128px}
"""

SCRIPT = """
document.addEventListener('input', function (event) {
  var slider = event.target;
  if (slider.classList.contains('slider')) {
    slider.parentElement.style.setProperty('--pos', slider.value + '%');
  }
});
document.addEventListener('change', function (event) {
  var box = event.target;
  if (box.classList.contains('toggle-boxes')) {
    box.closest('.card').classList.toggle('show-boxes', box.checked);
  } else if (box.id === 'all-boxes') {
    document.querySelectorAll('.toggle-boxes').forEach(function (other) {
      other.checked = box.checked;
      other.closest('.card').classList.toggle('show-boxes', box.checked);
    });
  } else if (box.id === 'sort-cards') {
    var cards = document.querySelector('.cards');
    var key = box.value === 'input' ? 'order' : 'severity';
    var sign = box.value === 'worst' ? -1 : 1;
    Array.from(cards.children).sort(function (a, b) {
      return sign * (parseFloat(a.dataset[key]) - parseFloat(b.dataset[key]));
    }).forEach(function (card) { cards.appendChild(card); });
  }
});
"""
