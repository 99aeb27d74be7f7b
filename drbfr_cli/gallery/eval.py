"""The page of `drbfr eval --out DIR`: DIR/index.html with the metric table, a histogram of
each per-image metric (inline SVG), and the best and worst faces of each metric beside their
LQ input and ground truth (thumbnails in DIR/gallery/eval/)."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from drbfr_cli.choices import Metric
from drbfr_cli.errors import DrbfrError
from drbfr_cli.gallery.page import (
    PAGE_NAME,
    esc,
    histogram_svg,
    link,
    mark_thumbs,
    table,
    write_page,
)
from drbfr_cli.imaging import collect_images, encode_image, read_image, write_bytes_atomic
from drbfr_cli.metrics.evaluate import HIGHER_IS_BETTER, EvalResult, Pair

RANKED = 4
"""Best and worst images shown per metric."""
THUMB = 160
_OURS = re.compile(r"^[0-9a-f]{20}\.jpg$")


def write_eval_page(
    out: Path,
    result: EvalResult,
    inputs: Mapping[str, str | None],
    *,
    lq_dir: Path | None,
    rows: list[tuple[str, str, str]],
    max_pixels: int,
) -> Path:
    """Write DIR/index.html; returns its path. `rows` are (metric, value, direction)."""
    folder = mark_thumbs(out) / "eval"
    thumbs = _Thumbs(out, folder, max_pixels)
    pairs = {pair.name: pair for pair in result.pairing.pairs}
    lq = _lq_files(lq_dir)
    parts = ["<header><h1>drbfr eval</h1>", _inputs(inputs), _metric_table(result, rows)]
    parts.append("</header><main>")
    parts.append(_histograms(result))
    for name in result.means:
        parts.append(_ranked(result, name, pairs, lq, thumbs))
    parts.append(_problems(result))
    parts.append("</main>")
    page = out / PAGE_NAME
    write_page(page, "drbfr eval", "\n".join(parts))
    thumbs.prune()
    return page


def _inputs(inputs: Mapping[str, str | None]) -> str:
    items = "".join(f"<li>{esc(k)}: <code>{esc(v)}</code></li>" for k, v in inputs.items() if v)
    return f"<ul>{items}</ul>"


def _metric_table(result: EvalResult, rows: list[tuple[str, str, str]]) -> str:
    full = [(m, v, d, result.protocol.get(m.lower(), "")) for m, v, d in rows]
    count = sum(1 for r in result.images if not r.error)
    return f"<p>{count} image(s) scored.</p>" + table(full, ("metric", "mean", "", "protocol"))


def _histograms(result: EvalResult) -> str:
    figures = [
        histogram_svg([r.values[name] for r in result.images if name in r.values], name.upper())
        for name in result.means
    ]
    return f"<section><h2>Per-image values</h2>{''.join(figures)}</section>" if figures else ""


def _lq_files(lq_dir: Path | None) -> dict[Path, Path]:
    found = collect_images([lq_dir]) if lq_dir else []
    return {source.relative.with_suffix(""): source.path for source in found}


class _Thumbs:
    """Small JPEG copies of images for the page, named by file path, size and mtime."""

    def __init__(self, page_dir: Path, folder: Path, max_pixels: int) -> None:
        self.page_dir, self.folder, self.max_pixels = page_dir, folder, max_pixels
        self.kept: set[str] = set()

    def url(self, path: Path) -> str:
        stat = path.stat()
        text = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
        name = hashlib.sha256(text.encode()).hexdigest()[:20] + ".jpg"
        target = self.folder / name
        self.kept.add(name)
        if not target.is_file():
            rgb = read_image(path, max_pixels=self.max_pixels).rgb
            small = cv2.resize(rgb, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
            write_bytes_atomic(target, encode_image(target, np.clip(small, 0, 1), quality=90))
        return link(target, self.page_dir)

    def prune(self) -> None:
        for path in self.folder.iterdir() if self.folder.is_dir() else ():
            if _OURS.match(path.name) and path.name not in self.kept:
                path.unlink(missing_ok=True)


def _ranked(
    result: EvalResult,
    name: str,
    pairs: Mapping[str, Pair],
    lq: Mapping[Path, Path],
    thumbs: _Thumbs,
) -> str:
    """The best and worst RANKED images of one metric, each beside its LQ input and GT."""
    scored = [(r.values[name], r.name) for r in result.images if name in r.values]
    scored = [(v, n) for v, n in scored if math.isfinite(v)]
    if not scored:
        return ""
    higher = Metric(name) in HIGHER_IS_BETTER
    ordered = sorted(scored, reverse=higher)
    best = ordered[:RANKED]
    worst = [item for item in ordered[::-1][:RANKED] if item not in best]
    sections = []
    for label, items in (("best", best), ("worst", worst)):
        figures = "".join(_figure(v, n, name, pairs[n], lq, thumbs) for v, n in items)
        if figures:
            sections.append(f"<h3>{label}</h3><div class='ranked'>{figures}</div>")
    arrow = "higher is better" if higher else "lower is better"
    return f"<section><h2>{esc(name.upper())} ({arrow})</h2>{''.join(sections)}</section>"


def _figure(
    value: float, image: str, metric: str, pair: Pair, lq: Mapping[Path, Path], thumbs: _Thumbs
) -> str:
    key = pair.restored.relative.with_suffix("")
    sides = [("LQ", lq.get(key)), ("restored", pair.restored.path)]
    sides.append(("GT", pair.gt.path if pair.gt else None))
    cells = []
    for label, path in sides:
        if path is None:
            continue
        try:
            url = thumbs.url(path)
        except (OSError, DrbfrError):
            continue
        cells.append(f'<a href="{link(path, thumbs.page_dir)}"><img src="{url}" alt="{label}"></a>')
    shown = " | ".join(label for label, path in sides if path is not None)
    return (
        f'<figure class="face"><div class="pair">{"".join(cells)}</div>'
        f"<figcaption>{esc(image)}: {esc(metric.upper())} {value:.4f}<br>{esc(shown)}"
        "</figcaption></figure>"
    )


def _problems(result: EvalResult) -> str:
    lines = []
    lines += [f"<li>{esc(r.name)}: {esc(r.error)}</li>" for r in result.images if r.error]
    lines += [f"<li>{esc(k)} skipped: {esc(v)}</li>" for k, v in result.skipped.items()]
    for metric, names in result.unscored.items():
        lines.append(f"<li>{esc(metric)} could not score {len(names)} image(s)</li>")
    pairing = result.pairing
    for label, names in (
        ("restored without ground truth", pairing.unmatched_restored),
        ("ground truth without restored", pairing.unmatched_gt),
    ):
        if names:
            lines.append(f"<li>{len(names)} {label}: {esc(', '.join(names[:20]))}</li>")
    return f"<section><h2>Problems</h2><ul>{''.join(lines)}</ul></section>" if lines else ""
