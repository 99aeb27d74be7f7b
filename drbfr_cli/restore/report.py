"""What `drbfr restore` reports: one record per image, a run summary, report.json and CSV.

Records are spooled to an anonymous temporary file as they arrive (memory stays flat on any
number of images) and the report files are written atomically at the end of the run. The lasting
record of each finished image is OUT/report.records.jsonl (`records.py`), written as it finishes.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from drbfr_cli import __version__
from drbfr_cli.batch import ItemStatus
from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import open_atomic

REPORT_NAME = "report.json"
REPORT_VERSION = 1
CSV_COLUMNS = (
    "input",
    "output",
    "status",
    "faces",
    "scores",
    "seconds",
    "niqe_input",
    "niqe_restored",
    "identity",
    "error",
    "severity",
    "sigma",
    "r",
    "delta",
    "q",
    "clean",
)
DEGRADATION_COLUMNS = ("severity", "sigma", "r", "delta", "q")
"""Per-face estimate columns of the CSV: one value per face, joined by ';' in face order."""


ImageStatus = ItemStatus
"""An image's status in the records: ok (restored and written by this run), skipped (its
output was written by an earlier run, whose record it keeps; not redone without --overwrite),
no_face (a whole image with no face found: written as the upscaled background alone with
--no-face keep, not written with --no-face skip) or failed (could not be read or written, or a
file drbfr did not write is in the way; `error` says why)."""


@dataclass(frozen=True)
class FaceRecord:
    """One face of an image. Boxes and landmarks are in input-image pixels."""

    index: int
    box: tuple[float, float, float, float] | None
    """x0, y0, x1, y1; None for inputs that were already aligned."""
    score: float | None
    landmarks: tuple[tuple[float, float], ...] | None
    seed: int
    niqe_input: float | None = None
    """NIQE of the aligned input face (--metrics niqe; lower is more natural)."""
    niqe_restored: float | None = None
    identity: float | None = None
    """Identity distance of the restored face to the aligned input face (--metrics ids; dlib
    face ResNet embeddings, Euclidean; lower keeps the identity better)."""
    identity_failed: bool = False
    """--metrics ids was asked for but a face could not be embedded."""
    degradation: Mapping[str, float] | None = None
    """The face's degradation estimate (sigma, r, delta, q, severity; estimate.py), when the
    model carries a degradation head."""
    clean: bool = False
    """Pasted back untouched: its severity was below --skip-clean."""


@dataclass(frozen=True)
class ImageRecord:
    """The outcome of one input image."""

    input: str
    relative: str
    output: str
    status: ImageStatus
    error: str | None = None
    size: tuple[int, int] | None = None
    """Input (width, height)."""
    output_size: tuple[int, int] | None = None
    faces: tuple[FaceRecord, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    """Seconds per stage: read, detect, align, restore (this image's share of its batches),
    paste, metrics, write (encoding the files)."""
    files: Mapping[str, str] = field(default_factory=dict)
    """sha256 of every file written for this image, by path relative to OUT."""
    rank: int | None = None
    """The rank (of several processes, see ranks.py) that restored it; 0 when run alone, None
    with --engine ray."""
    host: str | None = None
    """The machine that restored it."""

    def to_dict(self) -> dict[str, Any]:
        return _rounded(asdict(self))

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> ImageRecord:
        """The inverse of `to_dict` (for records read back from the record file)."""
        faces = tuple(_face_from_dict(face) for face in record["faces"])
        changes = {
            "status": ImageStatus(record["status"]),
            "size": _tuple(record["size"]),
            "output_size": _tuple(record["output_size"]),
            "faces": faces,
        }
        return cls(**(dict(record) | changes))

    @property
    def seconds(self) -> float:
        return sum(self.timings.values())


def _rounded(value: Any) -> Any:
    """JSON-friendly copy: floats rounded to 4 decimals, tuples as lists."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(item) for item in value]
    return value


def _tuple(value: list | None) -> tuple | None:
    return None if value is None else tuple(value)


def _face_from_dict(face: Mapping[str, Any]) -> FaceRecord:
    landmarks = face["landmarks"]
    return FaceRecord(
        **dict(face)
        | {
            "box": _tuple(face["box"]),
            "landmarks": None if landmarks is None else tuple(map(tuple, landmarks)),
        }
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class RunSummary:
    """Totals over the records of a run; `add` one record at a time."""

    images: int = 0
    restored: int = 0
    no_face: int = 0
    """Images in which no face was found (ImageStatus.NO_FACE)."""
    skipped: int = 0
    failed: int = 0
    faces: int = 0
    """Faces in the records: restored by this run or by the earlier run of a skipped image."""
    faces_restored: int = 0
    """Faces restored by this run (not counting faces_clean)."""
    faces_clean: int = 0
    """Faces this run pasted back untouched (severity below --skip-clean)."""
    seconds: float = 0.0
    """Wall time of the run."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Summed per-image stage times of this run (stages overlap, so they can exceed
    `seconds`)."""
    niqe_input: list[float] = field(default_factory=list)
    niqe_restored: list[float] = field(default_factory=list)
    identity: list[float] = field(default_factory=list)
    identity_failed: int = 0
    """Faces --metrics ids could not embed (counted, never dropped silently)."""

    def add(self, record: ImageRecord) -> None:
        self.images += 1
        self.faces += len(record.faces)
        if record.status is ImageStatus.OK:
            self.restored += 1
            clean = sum(face.clean for face in record.faces)
            self.faces_restored += len(record.faces) - clean
            self.faces_clean += clean
        elif record.status is ImageStatus.NO_FACE:
            self.no_face += 1
        elif record.status is ImageStatus.SKIPPED:
            self.skipped += 1
            return  # its timings are the earlier run's
        else:
            self.failed += 1
        for stage, seconds in record.timings.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
        for face in record.faces:
            if face.niqe_input is not None and face.niqe_restored is not None:
                self.niqe_input.append(face.niqe_input)
                self.niqe_restored.append(face.niqe_restored)
            if face.identity is not None:
                self.identity.append(face.identity)
            self.identity_failed += face.identity_failed

    @property
    def niqe_means(self) -> tuple[float, float] | None:
        """Mean NIQE of the input faces and of their restorations (None when not scored)."""
        before, after = _mean(self.niqe_input), _mean(self.niqe_restored)
        return None if before is None or after is None else (before, after)

    @property
    def identity_mean(self) -> float | None:
        """Mean identity distance of restored to input faces (None when not scored)."""
        return _mean(self.identity)

    @property
    def faces_per_second(self) -> float:
        return self.faces_restored / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return _rounded(
            {
                "images": self.images,
                "restored": self.restored,
                "no_face": self.no_face,
                "skipped": self.skipped,
                "failed": self.failed,
                "faces": self.faces,
                "faces_restored": self.faces_restored,
                "faces_clean": self.faces_clean,
                "seconds": self.seconds,
                "faces_per_second": self.faces_per_second,
                "stage_seconds": self.stage_seconds,
                "niqe_input_mean": _mean(self.niqe_input),
                "niqe_restored_mean": _mean(self.niqe_restored),
                "identity_mean": self.identity_mean,
                "identity_faces": len(self.identity),
                "identity_failed": self.identity_failed,
            }
        )


_REPORT_HEAD = re.compile(rb'^\{\s*"drbfr":\s*"[^"]*",\s*"report_version":')
"""How every report.json drbfr writes begins."""


def check_report_path(path: Path) -> None:
    """DrbfrError when a file drbfr did not write (by its first bytes) sits at `path`."""
    try:
        with path.open("rb") as handle:
            head = handle.read(200)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DrbfrError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not _REPORT_HEAD.match(head):
        raise DrbfrError(
            f"{path}: not a drbfr report, so it is not replaced; move it away or choose another -o"
        )


class ReportWriter:
    """Collects records in a spool file; `close` writes report.json (and the CSV) atomically."""

    def __init__(self, path: Path, *, csv_path: Path | None, settings: Mapping[str, Any]) -> None:
        self.path, self.csv_path = path, csv_path
        self.settings = dict(settings)
        # Lives across add() calls; closed by close(). Unlinked at creation: a kill leaves nothing.
        self._spool = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115

    def add(self, record: ImageRecord) -> None:
        self._spool.write(json.dumps(record.to_dict()) + "\n")

    def close(self, summary: RunSummary) -> None:
        try:
            self._write_json(summary)
            if self.csv_path is not None:
                self._write_csv(self.csv_path)
        finally:
            self._spool.close()

    def _lines(self) -> io.TextIOBase:
        self._spool.flush()
        self._spool.seek(0)
        return self._spool

    def _write_json(self, summary: RunSummary) -> None:
        head = {"drbfr": __version__, "report_version": REPORT_VERSION}
        head |= {"settings": _rounded(self.settings), "summary": summary.to_dict()}
        text = json.dumps(head, indent=1)
        with open_atomic(self.path) as handle:
            handle.write(text[: text.rindex("}")].rstrip().encode())
            handle.write(b',\n "images": [')
            for number, line in enumerate(self._lines()):
                handle.write((",\n  " if number else "\n  ").encode() + line.rstrip().encode())
            handle.write(b"\n ]\n}\n")

    def _write_csv(self, path: Path) -> None:
        with open_atomic(path) as handle:
            text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
            writer = csv.writer(text)
            writer.writerow(CSV_COLUMNS)
            for line in self._lines():
                writer.writerow(csv_row(json.loads(line)))
            text.flush()
            text.detach()


def csv_row(record: Mapping[str, Any]) -> list[Any]:
    """One CSV row (CSV_COLUMNS) of a record dict; NIQE and identity columns are means over the
    faces."""
    faces = record["faces"]
    niqe_in = [f["niqe_input"] for f in faces if f["niqe_input"] is not None]
    niqe_out = [f["niqe_restored"] for f in faces if f["niqe_restored"] is not None]
    scores = ";".join(f"{f['score']:.3f}" for f in faces if f["score"] is not None)
    mean_in, mean_out = _mean(niqe_in), _mean(niqe_out)
    identity = _mean([f["identity"] for f in faces if f.get("identity") is not None])
    return [
        record["input"],
        record["output"],
        record["status"],
        len(faces),
        scores,
        round(sum(record["timings"].values()), 4),
        "" if mean_in is None else round(mean_in, 4),
        "" if mean_out is None else round(mean_out, 4),
        "" if identity is None else round(identity, 4),
        record["error"] or "",
        *degradation_cells(faces),
        sum(bool(f.get("clean")) for f in faces),
    ]


def degradation_cells(faces: list[Mapping[str, Any]]) -> list[str]:
    """The DEGRADATION_COLUMNS cells: each face's value, ';'-joined (empty without estimates)."""
    estimates = [f.get("degradation") for f in faces]
    if not any(estimates):
        return [""] * len(DEGRADATION_COLUMNS)
    return [
        ";".join("" if e is None else f"{e[key]:g}" for e in estimates)
        for key in DEGRADATION_COLUMNS
    ]
