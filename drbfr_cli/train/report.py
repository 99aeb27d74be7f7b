"""What a training run reports: the metrics log (JSONL) and the progress bar."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import write_bytes_atomic

METRICS_FILE = "metrics.jsonl"


class TermMeter:
    """Sums of named loss terms over the steps since the last log line."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0

    def add(self, terms: dict[str, float]) -> None:
        """Add one optimizer step's terms (already averaged over its micro-batches)."""
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.steps += 1

    def means(self) -> dict[str, float]:
        """Mean of each term since the last reset."""
        return {key: value / max(self.steps, 1) for key, value in sorted(self.sums.items())}

    def reset(self) -> None:
        """Start a new interval."""
        self.sums, self.steps = {}, 0


def check_finite(step: int, terms: dict[str, float]) -> None:
    """One-line error when training diverged."""
    bad = [key for key, value in terms.items() if not math.isfinite(value)]
    if bad:
        raise DrbfrError(
            f"training diverged at step {step}: {', '.join(bad)} is not finite; "
            "lower the learning rate or use fp32 (--mixed-precision no)"
        )


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to RUN/metrics.jsonl."""
    with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Drop lines logged after `last_step` (a killed run logged past its last checkpoint)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a kill
    write_bytes_atomic(path, "".join(kept).encode())


def make_progress(total: int, completed: int, *, enabled: bool) -> Progress:
    """A rich progress bar on stderr with step, loss and images/s; silent when not a terminal."""
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and sys.stderr.isatty()),
        transient=False,
    )
    progress.add_task("train", total=total, completed=completed, status="")
    return progress


def status_text(record: dict[str, Any]) -> str:
    """`loss 0.1234  img/s 56.7` for the progress bar."""
    return f"loss {record['loss']:.4g}  img/s {record['images_per_s']:.1f}"
