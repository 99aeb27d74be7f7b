"""Evaluation reports: summary.json, metrics.csv, report.md and a comparison grid PNG (the
index.html page beside them is gallery/eval.py's, written by the CLI)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import cv2
import numpy as np

from drbfr_cli.imaging import (
    collect_images,
    from_uint8,
    is_broken_link,
    read_image,
    to_uint8,
    write_bytes_atomic,
    write_image,
)
from drbfr_cli.metrics.evaluate import HIGHER_IS_BETTER, EvalResult, Metric, Pair

SUMMARY_FILE, CSV_FILE, MARKDOWN_FILE, GRID_FILE = (
    "summary.json",
    "metrics.csv",
    "report.md",
    "comparison.png",
)
TILE = 192  # grid tile side in pixels


def summary_dict(result: EvalResult, inputs: dict[str, str | None]) -> dict:
    """The JSON-ready summary: inputs, protocol, means, FID, counts, skipped and unmatched."""
    failed = [{"image": r.name, "error": r.error} for r in result.images if r.error]
    return {
        "inputs": inputs,
        "protocol": result.protocol,
        "means": {k: _json_number(v) for k, v in result.means.items()},
        "fid": result.fid,
        "images": len(result.images),
        "failed": failed,
        "skipped_metrics": result.skipped,
        "unscored": {
            metric: {"count": len(names), "images": names}
            for metric, names in result.unscored.items()
        },
        "unmatched_restored": result.pairing.unmatched_restored,
        "unmatched_gt": result.pairing.unmatched_gt,
    }


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def csv_text(result: EvalResult) -> str:
    """Per-image metrics: one row per image, one column per metric (empty where not computed)."""
    names = [k for k in result.means]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", *names, "error"])
    for image in result.images:
        row = [_fmt(image.values[n]) if n in image.values else "" for n in names]
        writer.writerow([image.name, *row, image.error or ""])
    return buffer.getvalue()


def _fmt(value: float) -> str:
    return f"{value:.6f}" if math.isfinite(value) else str(value)


def summary_rows(result: EvalResult) -> list[tuple[str, str, str]]:
    """(metric, value, direction) rows for tables: per-image means, then FID."""
    rows = []
    for name, value in result.means.items():
        arrow = "higher is better" if Metric(name) in HIGHER_IS_BETTER else "lower is better"
        rows.append((name.upper(), f"{value:.4f}", arrow))
    if result.fid is not None:
        rows.append(("FID", f"{result.fid:.4f}", "lower is better"))
    return rows


def markdown_text(result: EvalResult, inputs: dict[str, str | None], grid: bool) -> str:
    """report.md: inputs, results table, protocol, skipped metrics, failures, unmatched files."""
    lines = ["# drbfr evaluation", ""]
    lines += [f"- {k}: `{v}`" for k, v in inputs.items() if v]
    lines += [
        "",
        f"{len(result.images)} images evaluated.",
        "",
        "| metric | value | |",
        "|---|---|---|",
    ]
    lines += [f"| {m} | {v} | {d} |" for m, v, d in summary_rows(result)]
    lines += ["", "## Protocol", ""] + [f"- {k}: {v}" for k, v in result.protocol.items()]
    if result.skipped:
        lines += ["", "## Skipped metrics", ""]
        lines += [f"- {k}: {v}" for k, v in result.skipped.items()]
    for metric, names in result.unscored.items():
        lines += ["", f"## Not scored by {metric} ({len(names)})", ""] + [f"- {n}" for n in names]
    failed = [r for r in result.images if r.error]
    if failed:
        lines += ["", "## Failed images", ""] + [f"- {r.name}: {r.error}" for r in failed]
    for title, names in (
        ("restored without ground truth", result.pairing.unmatched_restored),
        ("ground truth without restored", result.pairing.unmatched_gt),
    ):
        if names:
            lines += ["", f"## Unmatched: {title}", ""] + [f"- {n}" for n in names]
    if grid:
        lines += ["", "## Comparison", "", f"![comparison]({GRID_FILE})"]
    return "\n".join(lines) + "\n"


def sample_pairs(pairs: list[Pair], count: int) -> list[Pair]:
    """`count` pairs spread evenly over the sorted list."""
    if count <= 0 or not pairs:
        return []
    step = max(1, len(pairs) // count)
    return pairs[::step][:count]


def comparison_grid(pairs: list[Pair], lq_dir: Path | None, max_pixels: int) -> np.ndarray:
    """Rows of LQ / restored / GT tiles (float32 RGB in [0, 1]); columns that exist only."""
    found = collect_images([lq_dir]) if lq_dir else []
    lq = {s.relative.with_suffix(""): s.path for s in found if not is_broken_link(s.path)}
    rows = []
    for pair in pairs:
        key = pair.restored.relative.with_suffix("")
        paths = [lq.get(key), pair.restored.path, pair.gt.path if pair.gt else None]
        tiles = [
            _tile(p, label, max_pixels)
            for p, label in zip(paths, ("LQ", "restored", "GT"), strict=True)
            if p is not None
        ]
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, axis=0)


def _tile(path: Path, label: str, max_pixels: int) -> np.ndarray:
    rgb = read_image(path, max_pixels=max_pixels).rgb
    tile = to_uint8(cv2.resize(rgb, (TILE, TILE), interpolation=cv2.INTER_AREA))
    cv2.putText(
        tile, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA
    )
    return from_uint8(tile)


def write_reports(
    out: Path,
    result: EvalResult,
    inputs: dict[str, str | None],
    *,
    lq_dir: Path | None,
    grid_samples: int,
    max_pixels: int,
) -> list[Path]:
    """Write summary.json, metrics.csv, the comparison grid and report.md into `out`
    (atomically each); returns their paths. The index.html page is gallery/eval.py's."""
    written = []
    summary = json.dumps(summary_dict(result, inputs), indent=2) + "\n"
    for name, text in ((SUMMARY_FILE, summary), (CSV_FILE, csv_text(result))):
        write_bytes_atomic(out / name, text.encode())
        written.append(out / name)
    ok = {r.name for r in result.images if not r.error}
    sample = sample_pairs([p for p in result.pairing.pairs if p.name in ok], grid_samples)
    if sample:
        write_image(out / GRID_FILE, comparison_grid(sample, lq_dir, max_pixels))
        written.append(out / GRID_FILE)
    markdown = markdown_text(result, inputs, grid=bool(sample))
    write_bytes_atomic(out / MARKDOWN_FILE, markdown.encode())
    written.append(out / MARKDOWN_FILE)
    return written
