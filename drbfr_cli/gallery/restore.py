"""The before/after gallery of `drbfr restore`: OUT/index.html (and index-2.html, ... at most
`PER_PAGE` images each), written from report.json at the end of a run.

One card per image: a before/after slider over the input and the restored image at full
resolution, face boxes on demand, each face's input and restored crop side by side with its
seed and scores, and the image's timings. Failed and skipped images are listed with their
reasons; each page shows the run settings and timings. Face crops are cut from the input and
the output image through the alignment of the record's landmarks (so they exist without
--save-faces) and written once to OUT/gallery/faces/ under a name that changes with the output;
inputs and outputs a browser cannot show (TIFF) get a full-size PNG in OUT/gallery/full/.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from drbfr_cli.errors import DrbfrError
from drbfr_cli.faces.align import FACE_SIZE, estimate_affine, warp_face
from drbfr_cli.gallery.page import (
    BROWSER_EXTENSIONS,
    esc,
    link,
    mark_thumbs,
    number,
    page_name,
    pager,
    remove_pages_after,
    table,
    write_page,
)
from drbfr_cli.imaging import encode_image, read_image, write_bytes_atomic
from drbfr_cli.restore.report import REPORT_NAME

PER_PAGE = 200
THUMB = 192
"""Side of a face thumbnail (shown at 160 px)."""
LISTED_FAILURES = 200
"""Failed images named in each page's header (report.json lists them all)."""
_OURS = re.compile(r"^[0-9a-f]{20}_")
SKIPPED_REASON = "restored by an earlier run into this folder (--overwrite redoes it)"
NO_FACE_NOTE = "no face found: lower --det-threshold or --det-retry, or try another --detector"
BADGES = {"ok": "restored", "no_face": "no face", "skipped": "skipped", "failed": "failed"}


@dataclass(frozen=True)
class Run:
    """One restore run's report: settings, summary and image records."""

    report: Path
    settings: Mapping[str, Any]
    summary: Mapping[str, Any]
    images: list[dict[str, Any]]


def load_run(report: Path) -> Run:
    """A report.json (one-line DrbfrError when it cannot be read)."""
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DrbfrError(f"{report}: cannot read the report for the gallery ({exc})") from None
    return Run(report, data.get("settings", {}), data.get("summary", {}), data.get("images", []))


def write_restore_gallery(
    page_dir: Path,
    reports: Sequence[Path],
    *,
    title: str = "drbfr restore",
    note: str = "",
    references: Mapping[str, Path] | None = None,
    per_page: int = PER_PAGE,
) -> list[Path]:
    """Write the gallery pages of the runs in `reports` into `page_dir`; returns the pages.

    `references` maps an input path (as in the report) to an image shown beside its faces
    (the undegraded original of a synthetic input)."""
    runs = [load_run(report) for report in reports]
    items = [(run_no, record) for run_no, run in enumerate(runs) for record in run.images]
    pages = max(1, -(-len(items) // per_page))
    thumbs = mark_thumbs(page_dir)
    context = _Context(page_dir, thumbs, references or {}, set())
    failures = _failures(items, per_page)
    written = []
    for page in range(1, pages + 1):
        start = (page - 1) * per_page
        cards = [
            _card(start + offset, runs[run_no], record, context)
            for offset, (run_no, record) in enumerate(items[start : start + per_page])
        ]
        body = _page_body(title, note, runs, failures, cards, page, pages)
        path = page_dir / page_name(page)
        write_page(path, title if pages == 1 else f"{title} ({page}/{pages})", body)
        written.append(path)
    remove_pages_after(page_dir, pages)
    _prune(thumbs, context.kept)
    return written


def write_run_gallery(out_dir: Path, notice: Callable[[str], None]) -> None:
    """OUT/index.html from the report.json a restore run just completed (a failure is a notice:
    the outputs and the report are complete)."""
    try:
        write_restore_gallery(out_dir, [out_dir / REPORT_NAME])
    except DrbfrError as exc:
        notice(f"the gallery was not written: {exc}")


@dataclass(frozen=True)
class _Context:
    page_dir: Path
    thumbs: Path
    references: Mapping[str, Path]
    kept: set[str]
    """Names of the thumbnail files the pages use (others of ours are pruned)."""


def _failures(items: list[tuple[int, dict[str, Any]]], per_page: int) -> list[str]:
    """Header lines for the failed images: a link to the card and the reason."""
    lines = []
    for index, (_run, record) in enumerate(items):
        if record["status"] == "failed":
            href = f"{page_name(index // per_page + 1)}#img-{index}"
            lines.append(
                f'<li><a href="{href}">{esc(record["relative"])}</a>: '
                f'<span class="error">{esc(record.get("error") or "failed")}</span></li>'
            )
    return lines


def _page_body(
    title: str,
    note: str,
    runs: Sequence[Run],
    failures: list[str],
    cards: list[str],
    page: int,
    pages: int,
) -> str:
    nav = pager(page, pages)
    parts = [f"<header><h1>{esc(title)}</h1>"]
    if note:
        parts.append(f"<p>{esc(note)}</p>")
    parts += [_run_summary(run, len(runs) > 1) for run in runs]
    parts.append(_not_restored(runs, failures))
    parts.append(
        '<p><label><input type="checkbox" id="all-boxes"> show the face boxes on every image'
        f"</label>{_sort_control(runs)} · drag a picture (or focus it and use the arrow keys) "
        "to compare input and restored</p></header>"
    )
    parts += [nav, f'<main class="cards">{"".join(cards)}</main>', nav]
    return "\n".join(parts)


def _sort_control(runs: Sequence[Run]) -> str:
    """The card order menu, when any face carries a degradation estimate."""
    faces = (f for run in runs for record in run.images for f in record.get("faces", []))
    if not any(face.get("degradation") for face in faces):
        return ""
    return (
        ' · <label>order: <select id="sort-cards"><option value="input">input</option>'
        '<option value="worst">most degraded first</option>'
        '<option value="mildest">least degraded first</option></select></label>'
    )


def card_severity(record: Mapping[str, Any]) -> float | None:
    """The severity of an image's most degraded face (None without estimates)."""
    values = [f["degradation"]["severity"] for f in record["faces"] if f.get("degradation")]
    return max(values) if values else None


def _run_summary(run: Run, named: bool) -> str:
    s = run.summary
    rows = [
        ("images", s.get("images")),
        ("restored", s.get("restored")),
        ("no face found", s.get("no_face", 0)),
        ("skipped (finished before)", s.get("skipped")),
        ("failed", s.get("failed")),
        ("faces restored", s.get("faces_restored")),
        ("faces kept as they were (--skip-clean)", s.get("faces_clean", 0)),
        ("wall time (s)", number(s.get("seconds"), 1)),
        ("faces / s", number(s.get("faces_per_second"), 2)),
    ]
    if s.get("niqe_input_mean") is not None:
        before, after = number(s["niqe_input_mean"]), number(s.get("niqe_restored_mean"))
        rows.append(("mean NIQE input → restored", f"{before} → {after}"))
    if s.get("identity_mean") is not None:
        rows.append(("mean identity distance to input", number(s["identity_mean"])))
    stages = [(stage, number(sec, 2)) for stage, sec in s.get("stage_seconds", {}).items()]
    settings = [(key, json.dumps(value)) for key, value in run.settings.items()]
    heading = f"<h2>{esc(str(run.report.parent))}</h2>" if named else ""
    return (
        f'<section>{heading}<div class="summary">{table(rows)}'
        f"<details><summary>time per stage, summed over images (s)</summary>{table(stages)}"
        f"</details><details><summary>run settings</summary>{table(settings)}</details>"
        "</div></section>"
    )


def _not_restored(runs: Sequence[Run], failures: list[str]) -> str:
    skipped = sum(int(run.summary.get("skipped") or 0) for run in runs)
    no_face = sum(int(run.summary.get("no_face") or 0) for run in runs)
    parts = []
    if no_face:
        parts.append(f"<p>{no_face} image(s) with {esc(NO_FACE_NOTE)}; marked below.</p>")
    if failures:
        more = len(failures) - LISTED_FAILURES
        tail = f"<li>… and {more} more (all are in report.json)</li>" if more > 0 else ""
        parts.append(
            f"<details open><summary>{len(failures)} failed image(s)</summary><ul>"
            f"{''.join(failures[:LISTED_FAILURES])}{tail}</ul></details>"
        )
    if skipped:
        parts.append(f"<p>{skipped} image(s) skipped: {esc(SKIPPED_REASON)}; marked below.</p>")
    return "".join(parts)


# --------------------------------------------------------------------------- cards


def _card(index: int, run: Run, record: dict[str, Any], context: _Context) -> str:
    status = record["status"]
    name = esc(record["relative"])
    badge = BADGES.get(status, status)
    severity = card_severity(record)
    order = f' data-order="{index}" data-severity="{-1 if severity is None else severity}"'
    head = (
        f'<article class="card" id="img-{index}"{order}>'
        f'<h2>{name}<span class="badge {status}">{badge}</span></h2>'
    )
    if status == "failed":
        reason = esc(record.get("error") or "failed")
        return f'{head}<p class="error">{reason}</p>{_input_link(record, context)}</article>'
    if status == "no_face" and not record.get("files"):  # --no-face skip: nothing written
        return f"{head}<p>{esc(NO_FACE_NOTE)}</p>{_input_link(record, context)}</article>"
    try:
        views = _Views.of(record, context)
    except DrbfrError as exc:
        return f'{head}<p class="error">gallery: {esc(str(exc))}</p></article>'
    notes = {"skipped": SKIPPED_REASON, "no_face": NO_FACE_NOTE}.get(status)
    notes = f"<p>{esc(notes)}</p>" if notes else ""
    return (
        f"{head}{notes}{_slider(record, views)}{_tools(record, views)}"
        f"{_faces(record, views, context)}</article>"
    )


def _input_link(record: dict[str, Any], context: _Context) -> str:
    path = Path(record["input"])
    if not path.is_file():
        return ""
    return f'<p class="tools"><a href="{link(path, context.page_dir)}">input file</a></p>'


@dataclass(frozen=True)
class _Views:
    """URLs of one image's pictures: full-size input and output, face thumbnails."""

    before: str
    after: str
    faces: list[tuple[str, str]]
    reference: str | None

    @classmethod
    def of(cls, record: dict[str, Any], context: _Context) -> _Views:
        key = _key(record)
        source, output = Path(record["input"]), Path(record["output"])
        pictures = _Pictures(source, output)
        before = _viewable(source, context, f"{key}_in.png", pictures.input)
        after = _viewable(output, context, f"{key}_out.png", pictures.output)
        faces = []
        for face in record["faces"]:
            names = [f"{key}_{face['index']:02d}_{side}.jpg" for side in ("in", "out")]
            for name in names:
                context.kept.add(name)
            target = [context.thumbs / "faces" / name for name in names]
            if not all(path.is_file() for path in target):
                crops = _face_crops(face, record, pictures)
                for path, crop in zip(target, crops, strict=True):
                    write_bytes_atomic(path, encode_image(path, crop, quality=90))
            faces.append(tuple(link(path, context.page_dir) for path in target))
        reference = context.references.get(record["input"])
        ref_url = link(reference, context.page_dir) if reference else None
        return cls(before, after, faces, ref_url)


class _Pictures:
    """An image's input and output pixels, read when first needed."""

    def __init__(self, source: Path, output: Path) -> None:
        self._paths = {"input": source, "output": output}
        self._read: dict[str, np.ndarray] = {}

    def _get(self, which: str) -> np.ndarray:
        if which not in self._read:
            self._read[which] = read_image(self._paths[which]).rgb
        return self._read[which]

    def input(self) -> np.ndarray:
        return self._get("input")

    def output(self) -> np.ndarray:
        return self._get("output")


def _key(record: dict[str, Any]) -> str:
    """20 hex digits naming an image's thumbnails; new whenever its output is rewritten."""
    files = json.dumps(record.get("files", {}), sort_keys=True)
    text = f"{record['input']}\0{record['output']}\0{files}\0{record.get('output_size')}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _viewable(path: Path, context: _Context, name: str, pixels) -> str:
    """The URL of a full-size picture: the file itself where browsers show its format, else a
    PNG copy in gallery/full/."""
    if path.suffix.lower() in BROWSER_EXTENSIONS:
        return link(path, context.page_dir)
    context.kept.add(name)
    preview = context.thumbs / "full" / name
    if not preview.is_file():
        write_bytes_atomic(preview, encode_image(preview, pixels()))
    return link(preview, context.page_dir)


def _face_crops(
    face: dict[str, Any], record: dict[str, Any], pictures: _Pictures
) -> tuple[np.ndarray, np.ndarray]:
    """THUMB-sized input and restored crops of one face, aligned as restore aligned it."""
    source, restored = pictures.input(), pictures.output()
    if face.get("landmarks") is None:  # an aligned input: the image is the face
        return _thumb(source), _thumb(restored)
    affine = estimate_affine(np.asarray(face["landmarks"]), FACE_SIZE)
    scale = restored.shape[1] / source.shape[1]
    out_affine = affine.copy()
    out_affine[:, :2] /= scale
    return (
        _thumb(warp_face(source, affine).crop),
        _thumb(warp_face(restored, out_affine).crop),
    )


def _thumb(rgb: np.ndarray) -> np.ndarray:
    return np.clip(cv2.resize(rgb, (THUMB, THUMB), interpolation=cv2.INTER_AREA), 0.0, 1.0)


def _slider(record: dict[str, Any], views: _Views) -> str:
    width, height = record.get("output_size") or record.get("size") or (1, 1)
    boxes = _boxes(record)
    label = esc(f"compare input and restored {record['relative']}")
    return (
        f'<div class="ba" style="aspect-ratio:{width}/{height};'
        f'width:min(100%,calc(75vh*{width}/{height}))">'
        f'<img class="after" src="{views.after}" width="{width}" height="{height}" '
        f'alt="restored" loading="lazy" decoding="async">'
        f'<img class="before" src="{views.before}" alt="input" loading="lazy" decoding="async">'
        f"{boxes}"
        '<span class="label in">input</span><span class="label out">restored</span>'
        f'<input type="range" class="slider" min="0" max="100" value="50" aria-label="{label}">'
        '<span class="handle"></span></div>'
    )


def _boxes(record: dict[str, Any]) -> str:
    """An SVG overlay of the face boxes, in input pixels (hidden until asked for)."""
    size = record.get("size")
    faces = [f for f in record["faces"] if f.get("box") is not None]
    if not size or not faces:
        return ""
    shapes = "".join(
        f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}"/>'
        f'<text x="{x0 + 4:.1f}" y="{y0 + 16:.1f}">{face["index"]}</text>'
        for face in faces
        for x0, y0, x1, y1 in [face["box"]]
    )
    return (
        f'<svg class="boxes" viewBox="0 0 {size[0]} {size[1]}" preserveAspectRatio="none">'
        f"{shapes}</svg>"
    )


def _tools(record: dict[str, Any], views: _Views) -> str:
    size, out = record.get("size"), record.get("output_size")
    sizes = f"{size[0]}x{size[1]} → {out[0]}x{out[1]} px" if size and out else ""
    timings = " · ".join(f"{stage} {sec:.2f}" for stage, sec in record.get("timings", {}).items())
    total = sum(record.get("timings", {}).values())
    toggle = (
        '<label><input type="checkbox" class="toggle-boxes"> face boxes</label> · '
        if any(f.get("box") is not None for f in record["faces"])
        else ""
    )
    return (
        f'<p class="tools">{toggle}full size: <a href="{views.before}">input</a> · '
        f'<a href="{views.after}">restored</a> · {sizes} · {len(record["faces"])} face(s)'
        f"<br>seconds: {timings} (total {total:.2f})</p>"
    )


def _faces(record: dict[str, Any], views: _Views, context: _Context) -> str:
    figures = []
    for face, (before, after) in zip(record["faces"], views.faces, strict=True):
        facts = [f"face {face['index']}", f"seed {face['seed']}"]
        if face.get("score") is not None:
            facts.append(f"detection {face['score']:.3f}")
        if face.get("niqe_input") is not None:
            facts.append(f"NIQE {face['niqe_input']:.3f} → {face['niqe_restored']:.3f}")
        if face.get("identity") is not None:
            facts.append(f"identity distance {face['identity']:.3f}")
        elif face.get("identity_failed"):
            facts.append("identity: not embedded")
        facts += degradation_facts(face)
        reference = (
            f'<img src="{views.reference}" alt="original" loading="lazy">'
            if views.reference
            else ""
        )
        figures.append(
            f'<figure class="face"><div class="pair">'
            f'<img src="{before}" alt="input face {face["index"]}" loading="lazy">'
            f'<img src="{after}" alt="restored face {face["index"]}" loading="lazy">{reference}'
            f"</div><figcaption>{esc(' · '.join(facts))}</figcaption></figure>"
        )
    caption = "input | restored" + (" | original" if views.reference else "")
    heading = f'<p class="tools">faces ({caption})</p>' if figures else ""
    return f'{heading}<div class="faces">{"".join(figures)}</div>'


def degradation_facts(face: Mapping[str, Any]) -> list[str]:
    """A face's estimate for its caption (nothing without one)."""
    e = face.get("degradation")
    if not e:
        return []
    facts = [
        f"severity {e['severity']:.2f}",
        f"est. blur {e['sigma']:.1f} px, scale 1/{e['r']:.1f}, noise {e['delta']:.0f}, "
        f"JPEG {e['q']:.0f}",
    ]
    return facts + (["kept as it was (--skip-clean)"] if face.get("clean") else [])


def _prune(thumbs: Path, kept: set[str]) -> None:
    """Delete drbfr's thumbnails that no page uses any more."""
    for folder in (thumbs / "faces", thumbs / "full"):
        if folder.is_dir():
            for path in folder.iterdir():
                if _OURS.match(path.name) and path.name not in kept:
                    path.unlink(missing_ok=True)
