"""Adopting an output folder written before the record file existed (drbfr 0.1.0).

Such a folder has drbfr's report.json but no OUT/report.records.jsonl, so without adoption
every output in it would count as a file drbfr did not write. Each "ok" record of that report
names the output it wrote; an output it names that still exists is taken as drbfr's, hashed,
and the record goes into a new record file, so a rerun skips the image with its old record.
Files the report does not name (face crops of that version included) stay foreign.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path, PurePath
from typing import Any

from drbfr_cli.errors import DrbfrError
from drbfr_cli.folders import RESTORED_IMGS
from drbfr_cli.imaging import open_atomic
from drbfr_cli.restore.records import RECORDS_NAME, record_files, sha256_of
from drbfr_cli.restore.report import REPORT_NAME, ImageRecord, ImageStatus


def adopt_legacy_report(out_dir: Path) -> int | None:
    """Write OUT's record file from its report.json when OUT has the report and no record file
    (the report must be drbfr's: see report.check_report_path). Returns how many outputs were
    adopted; None when there was nothing to adopt from."""
    report_path, records_path = out_dir / REPORT_NAME, out_dir / RECORDS_NAME
    if record_files(out_dir) or not report_path.is_file():
        return None
    adopted = [
        record
        for entry in _read_images(report_path)
        if (record := _adopted(entry, out_dir)) is not None
    ]
    with open_atomic(records_path) as handle:  # a kill leaves no half-adopted record file
        for record in adopted:
            handle.write(json.dumps(record.to_dict()).encode() + b"\n")
    return len(adopted)


def _read_images(path: Path) -> list[Any]:
    try:
        images = json.loads(path.read_bytes()).get("images", [])
    except (OSError, ValueError, AttributeError) as exc:
        raise DrbfrError(
            f"{path}: a drbfr report that cannot be read ({exc}); move it away or choose another -o"
        ) from None
    return images if isinstance(images, list) else []


def _adopted(entry: Any, out_dir: Path) -> ImageRecord | None:
    """An "ok" record with the sha256 of its output, when that output is still there."""
    if not isinstance(entry, dict) or entry.get("status") != ImageStatus.OK:
        return None
    try:
        record = ImageRecord.from_dict(entry)
    except (KeyError, TypeError, ValueError):
        return None
    key = output_key(record)
    path = out_dir / key if key else None
    if path is None or path.is_symlink():
        return None
    digest = sha256_of(path)
    return None if digest is None else replace(record, files={key: digest})


def output_key(record: ImageRecord) -> str | None:
    """The output of a record relative to OUT: restored_imgs/ and the last parts of the path
    (as many as the input's relative path has), so the key does not depend on the directory
    that run started in nor on where OUT was then. None for a path not of that shape."""
    output, relative = PurePath(record.output), PurePath(record.relative)
    depth = len(relative.parts)
    parts = output.parts[-depth - 1 :]
    if depth == 0 or len(parts) != depth + 1 or parts[0] != RESTORED_IMGS:
        return None
    if any(part in ("", ".", "..") for part in parts):
        return None
    return PurePath(*parts).as_posix()
