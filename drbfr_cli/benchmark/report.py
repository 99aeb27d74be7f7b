"""Tables of benchmark results, for the terminal (rich) and for Markdown (BENCHMARKS.md): the
table type, cell formats, rendering, and the tables of `drbfr bench train` (those of `bench
restore` are in restore_report.py). Times in milliseconds, memory in MiB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Table:
    title: str
    headers: Sequence[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Formatting


def ms(seconds: float | None) -> str:
    return (
        "-"
        if seconds is None
        else f"{seconds * 1e3:.1f}"
        if seconds < 10
        else f"{seconds * 1e3:.0f}"
    )


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}" if value < 100 else f"{value:.0f}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def gflops(flops: float | None, seconds: float | None) -> str:
    if not flops or not seconds:
        return "-"
    return f"{flops / seconds / 1e9:.1f}"


def millions(count: float | None) -> str:
    return "-" if count is None else f"{count / 1e6:.2f} M"


def timing_note(settings: dict[str, Any]) -> str:
    repeats, warmup = settings["repeats"], settings["warmup"]
    if warmup == 0:
        return (
            f"times: median of {repeats} run(s) without warm-up: each includes first-call "
            "costs (kernel selection, allocation)"
        )
    return f"times: median of {repeats} run(s) after {warmup} warm-up run(s)"


# ---------------------------------------------------------------------------------------------
# Train


def train_tables(result: dict[str, Any]) -> list[Table]:
    machine = result["machine"]
    headers = [
        "stage",
        "precision",
        "batch",
        "items/s",
        "ms per step",
        "ms per batch of data",
        "trained parameters",
        "peak host MiB",
        "peak GPU MiB",
        "notes",
    ]
    rows = [
        [
            r["stage"],
            r["precision"],
            str(r["batch"]),
            rate(r.get("items_per_s")),
            ms(r.get("seconds_per_step")),
            ms(r.get("data_seconds_per_batch")),
            millions(r.get("trained_parameters")),
            mib(r.get("host_peak_mb")),
            mib(r.get("device_peak_mb")),
            "; ".join([*r["notes"], *([r["failed"]] if "failed" in r else [])]),
        ]
        for r in result["rows"]
    ]
    items = sorted({f"{r['stage']}: {r['item']}" for r in result["rows"]})
    notes = [
        f"items: {', '.join(items)}",
        f"machine: {machine['cpu']}, {machine['torch_threads']} torch threads, "
        f"{machine.get('gpu', 'no GPU')}; {machine['date']}",
        timing_note(result["settings"]),
    ]
    preset = result["settings"]["preset"]
    return [
        Table(f"One training step, {preset} preset ({machine['device']})", headers, rows, notes)
    ]


# ---------------------------------------------------------------------------------------------
# Rendering


def to_markdown(tables: Sequence[Table]) -> str:
    parts = []
    for table in tables:
        lines = [
            f"**{table.title}**",
            "",
            "| " + " | ".join(table.headers) + " |",
            "|" + "|".join("---" for _ in table.headers) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
        lines += [""] + [f"- {note}" for note in table.notes] if table.notes else []
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def to_rich(table: Table):
    """A rich renderable: the table, then its notes."""
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    rendered = RichTable(title=table.title, title_justify="left")
    for index, header in enumerate(table.headers):
        rendered.add_column(header, justify="left" if index == 0 else "right")
    for row in table.rows:
        rendered.add_row(*row)
    return Group(rendered, *(Text(f"  {note}") for note in table.notes), Text(""))
