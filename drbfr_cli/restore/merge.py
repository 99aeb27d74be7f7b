"""One report.json (and CSV) from the report parts of the ranks of a run (see ranks.py).

Each rank writes OUT/report.parts/<run id>/rank-NNNNN.jsonl, a line per image of its shard
(the image's place in the whole input list and its record), then rank-NNNNN.done.json, its
marker (settings, start and end). The rank that finds every marker of the run present merges
them, in input order, into report.json as one process would have written it; `drbfr report merge
OUT` does the same by hand. The parts of a merged run are deleted: only the files of those names
(and drbfr's temporaries), never anything else in report.parts/.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import is_temporary, open_atomic
from drbfr_cli.restore.report import (
    REPORT_NAME,
    ImageRecord,
    ReportWriter,
    RunSummary,
    check_report_path,
)

PARTS_DIR = "report.parts"
_CLAIM = "merging"
"""Created exclusively by the one rank that merges a run."""
_PART_FILE = re.compile(r"^rank-[0-9]{5}\.(jsonl|done\.json)$")


def parts_dir(out_dir: Path, run_id: str) -> Path:
    return out_dir / PARTS_DIR / run_id


def part_path(folder: Path, rank: int) -> Path:
    return folder / f"rank-{rank:05d}.jsonl"


def marker_path(folder: Path, rank: int) -> Path:
    return folder / f"rank-{rank:05d}.done.json"


def remove_parts(out_dir: Path, runs: Iterable[str], sessions: Iterable[str]) -> None:
    """Delete the parts of the recorded earlier `runs` (killed before they merged: a rerun
    reports all), with the temporaries of the recorded `sessions` in them; report.parts/ goes
    when nothing else is left in it."""
    root = out_dir / PARTS_DIR
    for run_id in runs:
        remove_run_parts(root / run_id, sessions)
    with contextlib.suppress(OSError):
        root.rmdir()


def remove_run_parts(folder: Path, sessions: Iterable[str] = ()) -> None:
    """Delete a run's part files, claim and markers (by name) and the temporaries of
    `sessions` in `folder`, then the folder when it is empty."""
    if folder.is_symlink() or not folder.is_dir():
        return
    sessions = set(sessions)
    for path in folder.iterdir():
        ours = path.name == _CLAIM or _PART_FILE.match(path.name) or is_temporary(path, sessions)
        if ours and not path.is_symlink() and path.is_file():
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


class PartWriter:
    """A rank's report part: `add` each record (in the order of `indexes`, the images' places in
    the whole input list), then `close` writes the marker."""

    def __init__(
        self,
        folder: Path,
        rank: int,
        world_size: int,
        indexes: list[int],
        *,
        settings: Mapping[str, Any],
        csv_path: Path | None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.rank, self.world_size = folder, rank, world_size
        self.settings, self.csv_path = dict(settings), csv_path
        self._indexes = iter(indexes)
        self._started = time.time()
        self._handle = part_path(folder, rank).open("w", encoding="utf-8")

    def add(self, record: ImageRecord) -> None:
        line = {"index": next(self._indexes), "record": record.to_dict()}
        self._handle.write(json.dumps(line) + "\n")

    def close(self, summary: RunSummary) -> None:
        """Flush the part and write the marker that says this rank is done."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        marker = {
            "rank": self.rank,
            "world_size": self.world_size,
            "started": self._started,
            "ended": time.time(),
            "images": summary.images,
            "settings": self.settings,
            "report_csv": None if self.csv_path is None else str(self.csv_path),
        }
        with open_atomic(marker_path(self.folder, self.rank)) as handle:
            handle.write(json.dumps(marker).encode())


def merge_if_complete(out_dir: Path, run_id: str, world_size: int) -> RunSummary | None:
    """Merge the run's parts when every rank's marker is there and no other rank claimed the
    merge first; the merged summary, or None when this rank does not merge."""
    folder = parts_dir(out_dir, run_id)
    if not all(marker_path(folder, rank).exists() for rank in range(world_size)):
        return None
    try:
        os.close(os.open(folder / _CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    return _merge(out_dir, folder, world_size)


def merge_reports(out_dir: Path) -> RunSummary:
    """`drbfr report merge OUT`: merge the parts of the run in OUT (one-line DrbfrError when
    there is none, or when a rank of it did not finish)."""
    root = out_dir / PARTS_DIR
    runs = sorted(root.iterdir(), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not runs:
        raise DrbfrError(f"{out_dir}: no report parts to merge (the report is already merged)")
    folder = runs[-1]
    markers = sorted(folder.glob("rank-*.done.json"))
    if not markers:
        raise DrbfrError(f"{folder}: no rank finished this run; rerun the restore")
    world_size = int(_read_json(markers[0])["world_size"])
    missing = [r for r in range(world_size) if not marker_path(folder, r).exists()]
    if missing:
        raise DrbfrError(
            f"{folder}: rank(s) {', '.join(map(str, missing))} of {world_size} did not finish; "
            "rerun the restore (finished images are skipped)"
        )
    return _merge(out_dir, folder, world_size)


def _merge(out_dir: Path, folder: Path, world_size: int) -> RunSummary:
    markers = [_read_json(marker_path(folder, rank)) for rank in range(world_size)]
    settings = {**markers[0]["settings"], "world_size": world_size}
    settings.pop("device", None)
    settings["devices"] = sorted({m["settings"].get("device", "") for m in markers})
    csv_text = markers[0]["report_csv"]
    check_report_path(out_dir / REPORT_NAME)
    report = ReportWriter(
        out_dir / REPORT_NAME,
        csv_path=None if csv_text is None else Path(csv_text),
        settings=settings,
    )
    summary = RunSummary()
    for record in _records_in_order(folder, world_size):
        summary.add(record)
        report.add(record)
    summary.seconds = max(m["ended"] for m in markers) - min(m["started"] for m in markers)
    report.close(summary)
    remove_run_parts(folder)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()  # report.parts/, when no other run's parts are in it
    return summary


def _records_in_order(folder: Path, world_size: int) -> Iterator[ImageRecord]:
    """Every rank's records, merged into input order (each part is in that order)."""
    handles = [part_path(folder, rank).open(encoding="utf-8") for rank in range(world_size)]
    try:
        lines = (map(json.loads, handle) for handle in handles)
        for line in heapq.merge(*lines, key=lambda item: item["index"]):
            yield ImageRecord.from_dict(line["record"])
    finally:
        for handle in handles:
            handle.close()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DrbfrError(f"{path}: unreadable report part ({exc})") from None
