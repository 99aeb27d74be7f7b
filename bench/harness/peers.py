"""`bench/restore`: `drbfr bench restore` with its peers (GFPGAN v1 clean and CodeFormer, random
weights) timed in the same run, on the same device, precision and faces, and drbfr's time per
face over theirs.

    bench/restore [--baselines gfpgan,codeformer|none] [--baseline-batch-sizes 1]
                  [DRBFR_BENCH_RESTORE_OPTIONS...]

Every other option is `drbfr bench restore`'s; the peers reach it as the click context's object
(a RestorePeers), so the wheel holds no baseline.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.harness.baselines import BUILDERS, FACE_SIZE, Baseline, baseline_facts, build_baseline
from drbfr_cli.benchmark.report import Table, mib, millions, ms, rate, ratio
from drbfr_cli.benchmark.restore_model import Runner, face_batch, timing_row
from drbfr_cli.benchmark.restore_report import SAMPLING_FIELDS, sampling_label
from drbfr_cli.errors import first_line

BASELINE_NAMES = {"gfpgan": "GFPGAN v1 clean", "codeformer": "CodeFormer"}


@dataclass(frozen=True)
class Baselines:
    """The baselines to time at each batch size: a RestorePeers for run_restore_bench."""

    names: tuple[str, ...] = ("gfpgan", "codeformer")
    batch_sizes: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.names) - set(BUILDERS))
        if unknown:
            raise ValueError(
                f"unknown baseline(s) {', '.join(unknown)}; known: {', '.join(BUILDERS)}"
            )
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"baseline batch sizes must be positive, got {list(self.batch_sizes)}")

    def measure(
        self, runner: Runner, faces: Sequence[np.ndarray], seed: int
    ) -> dict[str, dict[str, Any]]:
        return baseline_results(self.names, runner, faces, self.batch_sizes, seed=seed)

    def ratios(
        self, rows: Sequence[dict[str, Any]], peers: dict[str, dict[str, Any]], *, estimated: bool
    ) -> list[dict[str, Any]]:
        return ratio_rows(rows, peers, estimated=estimated)

    def tables(self, run: dict[str, Any], label: str) -> list[Table]:
        return baseline_tables(run, label)


def baseline_results(
    names: Sequence[str],
    runner: Runner,
    faces: Sequence[np.ndarray],
    batch_sizes: Sequence[int],
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Each baseline (random weights) on FACE_SIZE faces at each batch size, same device and
    precision as the restorer; {"skipped": why} for one that cannot be built or run here."""
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        built = build_baseline(name, runner.device, seed=seed)
        if not isinstance(built, Baseline):
            results[name] = {"skipped": built.reason}
            continue
        rows = []
        for batch in batch_sizes:
            x = face_batch(faces, FACE_SIZE, batch).to(runner.device) * 2.0 - 1.0
            try:
                measurement = runner.measure(lambda b=built, x=x: b(x))
            except RuntimeError as exc:  # e.g. an operator without fp16 / bf16 kernels
                rows.append({"batch": batch, "failed": first_line(exc)})
                continue
            rows.append({"batch": batch, **timing_row(measurement, batch)})
        results[name] = {**baseline_facts(built), "rows": rows}
        del built
    return results


def ratio_rows(
    rows: Sequence[dict[str, Any]], baselines: dict[str, dict[str, Any]], *, estimated: bool
) -> list[dict[str, Any]]:
    """Time per face of each restorer row over each baseline's (at the same batch size when the
    baseline was run at it, else at batch 1): above 1, drbfr is that many times slower."""
    out = []
    for row in rows:
        ratio_row: dict[str, Any] = {
            "batch": row["batch"],
            **{k: row[k] for k in SAMPLING_FIELDS if k in row},
            "seconds_per_face": row["seconds_per_face"],
            "estimated": estimated,
        }
        for name, result in baselines.items():
            measured = {r["batch"]: r for r in result.get("rows", []) if "seconds_per_face" in r}
            base = measured.get(row["batch"]) or measured.get(1)
            if base is None:
                continue
            ratio_row[f"x_{name}"] = row["seconds_per_face"] / base["seconds_per_face"]
            ratio_row[f"{name}_batch"] = base["batch"]
        out.append(ratio_row)
    return out


# ---------------------------------------------------------------------------------------------
# Tables


def baseline_tables(run: dict[str, Any], label: str) -> list[Table]:
    """The baselines' own table and drbfr's ratios over them (none without baselines)."""
    baselines = run.get("baselines")
    if not baselines:
        return []
    tables = [_measured_table(baselines, label)]
    names = [n for n in baselines if "rows" in baselines[n]]
    if names and run["ratios"]:
        tables.append(_ratio_table(run["ratios"], names, label))
    return tables


def _measured_table(baselines: dict[str, dict[str, Any]], label: str) -> Table:
    rows, notes = [], []
    for name, result in baselines.items():
        title = BASELINE_NAMES.get(name, name)
        if "skipped" in result:
            notes.append(f"{title} skipped: {result['skipped']}")
            continue
        for row in result["rows"]:
            if "failed" in row:
                notes.append(f"{title} at batch {row['batch']} failed: {row['failed']}")
                continue
            flops = result["flops_per_face"]
            rows.append(
                [
                    title,
                    str(row["batch"]),
                    ms(row["seconds_per_face"]),
                    rate(row["faces_per_s"]),
                    millions(result["parameters"]),
                    f"{flops / 1e9:.0f}" if flops else "-",
                    mib(row["host_peak_mb"]),
                    mib(row["device_peak_mb"]),
                ]
            )
    headers = ["model", "batch", "ms per face", "faces/s", "parameters", "GFLOP per face"]
    headers += ["peak host MiB", "peak GPU MiB"]
    return Table(f"Baselines, random weights, 512 px faces ({label})", headers, rows, notes)


def _ratio_table(ratios: list[dict[str, Any]], names: list[str], label: str) -> Table:
    headers = ["drbfr batch", "sampling", "ms per face"]
    headers += [f"x {BASELINE_NAMES.get(n, n)} time" for n in names]
    rows = [
        [
            str(r["batch"]),
            sampling_label(r),
            ms(r["seconds_per_face"]),
            *[ratio(r.get(f"x_{n}")) for n in names],
        ]
        for r in ratios
    ]
    notes = [
        "time per face of drbfr over the baseline's (at the baseline's batch 1 unless it "
        "ran at the same batch): above 1, drbfr is that many times slower"
    ]
    if ratios[0]["estimated"]:
        notes.append("drbfr times are extrapolated from single network calls")
    return Table(f"drbfr against the baselines, same run ({label})", headers, rows, notes)


# ---------------------------------------------------------------------------------------------
# bench/restore


def _numbers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a comma list of numbers, got {text!r}") from None


def parse(argv: Sequence[str]) -> tuple[Baselines | None, list[str]]:
    """(the baselines, or None with --baselines none; `drbfr bench restore`'s own arguments)."""
    parser = argparse.ArgumentParser(
        prog="bench/restore",
        description="drbfr bench restore with GFPGAN and CodeFormer (random weights) timed in "
        "the same run; every other option is drbfr bench restore's (see drbfr bench restore "
        "--help).",
    )
    parser.add_argument("--baselines", default="gfpgan,codeformer", help="or none")
    parser.add_argument("--baseline-batch-sizes", type=_numbers, default=(1,))
    known, rest = parser.parse_known_args(argv)
    names = tuple(n.strip() for n in known.baselines.split(",") if n.strip() not in ("", "none"))
    if not names:
        return None, rest
    try:
        return Baselines(names, known.baseline_batch_sizes), rest
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    """Run `drbfr bench restore REST` with the baselines of ARGV as its peers."""
    import sys

    from drbfr_cli.cli.main import app

    peers, rest = parse(sys.argv[1:] if argv is None else argv)
    app(["bench", "restore", *rest], obj=peers, prog_name="bench/restore")
    return 0
