"""`drbfr analyze <stage>`: measure what a trained stage learned."""

from __future__ import annotations

from pathlib import Path

import typer

from drbfr_cli.cli.common import console, user_errors
from drbfr_cli.errors import DrbfrError

app = typer.Typer(help="Analyse a trained stage.", no_args_is_help=True)


@app.command("drm")
def analyze_drm(
    drm: Path = typer.Option(..., help="DRM run folder (from drbfr train drm)."),
    data: Path = typer.Option(
        ..., help="Faces the DRM never saw (each scored by probes fitted on the others)."
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Report folder."),
    crop: int = typer.Option(
        192, min=32, help="Side of the central face region the DR is read from."
    ),
    draws: int = typer.Option(16, min=2, help="Degradations per face and type for the type probe."),
    seed: int = typer.Option(0, help="Seed for the degradations and the untrained encoder."),
) -> None:
    """Section 4.1 evidence: degradation-type probe, parameter R^2, content independence, Fig. 6."""
    import torch  # heavy libraries load only when the command runs

    from drbfr_cli.analysis.drm import AnalysisConfig, analyse_drm
    from drbfr_cli.analysis.report import summary_lines, write_report
    from drbfr_cli.data import load_faces
    from drbfr_cli.nets.drm import build_drm
    from drbfr_cli.train.drm import load_drm, model_config_from_saved

    with user_errors():
        modules, saved = load_drm(drm)
        config = model_config_from_saved(saved)
        faces = load_faces(data, config.face_size)
        if len(faces) < 2:
            raise DrbfrError(f"{data}: the analysis needs at least two faces")
        torch.manual_seed(seed)
        untrained = build_drm(config)["encoder"].eval()
        settings = AnalysisConfig(crop=min(crop, config.face_size), draws_per_type=draws, seed=seed)
        analysis = analyse_drm(modules, untrained, faces, settings)
        meta = {
            "drm": str(drm),
            "data": str(data),
            "crop": settings.crop,
            "knn_k": settings.knn_k,
            "draws_per_type": draws,
        }
        report = write_report(analysis, out, meta)
    for line in summary_lines(report):
        console.print(line, highlight=False)
    console.print(f"report: {out / 'report.md'}")
