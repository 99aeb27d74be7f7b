"""Reports of the autoencoder analysis: analysis.json, report.md and reconstructions.png."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from drbfr_cli.analysis.vae import SetScores, VAEAnalysis
from drbfr_cli.imaging import write_bytes_atomic, write_image

_CODECS = (
    ("vae", "VQ autoencoder (quantized)"),
    ("vae_unquantized", "VQ autoencoder, continuous latent"),
    ("bicubic", "bicubic codec"),
)


def summary(analysis: VAEAnalysis, meta: dict[str, Any]) -> dict[str, Any]:
    """Everything measured, as plain JSON values."""
    sets = {"faces": asdict(analysis.faces)}
    if analysis.patches is not None:
        sets["patches"] = asdict(analysis.patches)
    return {**meta, **sets}


def _table(name: str, scores: dict[str, Any]) -> list[str]:
    lines = [
        f"## {name}: {scores['count']} images of {scores['size']} px",
        "",
        f"Stored values per image: latent {scores['latent_values']}; bicubic codec "
        f"{scores['bicubic_side']} x {scores['bicubic_side']} x 3 = {scores['bicubic_values']}.",
        "",
        "| codec | PSNR (dB) | SSIM | LPIPS |",
        "|---|---|---|---|",
    ]
    for key, label in _CODECS:
        row = scores[key]
        lpips = "n/a" if row["lpips"] is None else f"{row['lpips']:.4f}"
        lines.append(f"| {label} | {row['psnr']:.2f} | {row['ssim']:.4f} | {lpips} |")
    return [*lines, ""]


def markdown(data: dict[str, Any]) -> str:
    lines = [f"# VQ autoencoder analysis: {data.get('vae', '')}", ""]
    lines += [f"Faces from {data.get('data', '')}; {data.get('lpips_note', '')}", ""]
    lines += _table("Whole faces", data["faces"])
    if "patches" in data:
        lines += _table("Patches at random scales", data["patches"])
    return "\n".join(lines)


def headline(scores: SetScores) -> str:
    """One line: VAE vs bicubic PSNR with the value counts."""
    return (
        f"{scores.count} x {scores.size} px: VAE {scores.vae.psnr:.2f} dB / SSIM "
        f"{scores.vae.ssim:.4f} ({scores.latent_values} latent values), continuous latent "
        f"{scores.vae_unquantized.psnr:.2f} dB, bicubic {scores.bicubic.psnr:.2f} dB / SSIM "
        f"{scores.bicubic.ssim:.4f} ({scores.bicubic_values} values)"
    )


def write_report(analysis: VAEAnalysis, out_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write analysis.json, report.md and reconstructions.png into `out_dir`; return the summary."""
    data = summary(analysis, meta)
    write_bytes_atomic(out_dir / "analysis.json", (json.dumps(data, indent=2) + "\n").encode())
    write_bytes_atomic(out_dir / "report.md", markdown(data).encode())
    write_image(out_dir / "reconstructions.png", analysis.grid)
    return data
