"""Reports of the restoration analysis: analysis.json, report.md and restorations.png."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from drbfr_cli.analysis.ldm import RestorationAnalysis
from drbfr_cli.imaging import write_bytes_atomic, write_image

_LABELS = {"lq": "LQ input", "vae_round_trip": "VAE round trip of the LQ"}


def _plain(value: Any) -> Any:
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else str(value)


def headline_rows(analysis: RestorationAnalysis) -> list[str]:
    """One line per method: PSNR / SSIM and the PSNR gain over the LQ input."""
    lq = analysis.scores["lq"].psnr
    return [
        f"{_LABELS.get(name, 'restored, ' + name):<40} PSNR {s.psnr:6.2f} dB ({s.psnr - lq:+.2f})"
        f"  SSIM {s.ssim:.4f}"
        for name, s in analysis.scores.items()
    ]


def markdown(summary: dict[str, Any], rows: list[str]) -> str:
    lines = [f"# Restoration analysis: {summary.get('model', '')}", ""]
    lines += [
        f"{summary['pairs']} degraded pairs of {summary['faces']} unseen faces from "
        f"{summary.get('data', '')}; Eq. (11) ranges {summary.get('ranges')}; seed "
        f"{summary.get('seed')}. PSNR/SSIM on RGB in [0, 1] against the HQ face.",
        "",
        "| method | PSNR (dB) | gain over LQ (dB) | SSIM |",
        "|---|---|---|---|",
    ]
    lq = summary["scores"]["lq"]["psnr"]
    for name, s in summary["scores"].items():
        label = _LABELS.get(name, f"restored, {name}")
        lines.append(f"| {label} | {s['psnr']:.2f} | {s['psnr'] - lq:+.2f} | {s['ssim']:.4f} |")
    lines += ["", "Rows of restorations.png: HQ, " + ", ".join(
        _LABELS.get(n, f"restored ({n})") for n in summary["scores"]
    ) + ".", ""]  # fmt: skip
    return "\n".join(lines)


def write_report(analysis: RestorationAnalysis, out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    summary = {**{k: _plain(v) if is_dataclass(v) else v for k, v in meta.items()}}
    summary |= analysis.summary()
    text = json.dumps(summary, indent=2, default=_plain) + "\n"
    write_bytes_atomic(out / "analysis.json", text.encode())
    write_bytes_atomic(out / "report.md", markdown(summary, headline_rows(analysis)).encode())
    write_image(out / "restorations.png", analysis.grid)
    return summary
