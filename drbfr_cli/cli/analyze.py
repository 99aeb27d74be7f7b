"""`drbfr analyze <stage>`: measure what a trained stage learned."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from drbfr_cli.cli.common import console, err_console, user_errors
from drbfr_cli.errors import DrbfrError

if TYPE_CHECKING:  # torch: imported when a command runs
    from torch import nn

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


def _lpips_or_notice(weights_dir: Path | None) -> tuple[nn.Module | None, str]:
    import torch

    from drbfr_cli.metrics.lpips import LpipsNet, load_lpips
    from drbfr_cli.weights import WeightsMissingError

    try:
        return load_lpips(LpipsNet.VGG, weights_dir, torch.device("cpu")), "LPIPS: VGG"
    except WeightsMissingError as exc:
        return None, f"LPIPS skipped (backbone weights missing): {exc}"


@app.command("vae")
def analyze_vae(
    vae: Path = typer.Option(..., help="VAE run folder (from drbfr train vae)."),
    data: Path = typer.Option(..., help="Faces the autoencoder never saw."),
    out: Path = typer.Option(Path("vae-analysis"), "-o", "--out", help="Report folder."),
    patches: int = typer.Option(64, min=0, help="Random patches of the faces to score too."),
    seed: int = typer.Option(0, help="Seed for the patches."),
    weights_dir: Path | None = typer.Option(None, help="Folder holding the LPIPS VGG16 backbone."),
) -> None:
    """Reconstruction PSNR/SSIM (LPIPS) of unseen faces against the bicubic codec."""
    from drbfr_cli.analysis import vae as vae_analysis
    from drbfr_cli.analysis import vae_report
    from drbfr_cli.data import load_faces
    from drbfr_cli.imaging import from_uint8
    from drbfr_cli.train.vae import load_vae

    with user_errors():
        trained = load_vae(vae)
        cfg = trained.config
        faces_uint8 = load_faces(data, cfg.face_sides[1])
        faces = [from_uint8(f) for f in load_faces(data, cfg.image_size)]
        crops = vae_analysis.unseen_patches(
            faces_uint8, cfg.face_sides, cfg.patch_size, patches, seed
        )
        lpips_model, lpips_note = _lpips_or_notice(weights_dir)
        if lpips_model is None:
            err_console.print(f"notice: {lpips_note}", highlight=False, soft_wrap=True)
        settings = vae_analysis.AnalysisConfig(patches=patches, seed=seed)
        analysis = vae_analysis.analyse_vae(trained.model, faces, crops, lpips_model, settings)
        latent = None if trained.latent is None else vae_report.asdict(trained.latent)
        meta = {
            "vae": str(vae),
            "data": str(data),
            "seed": seed,
            "lpips_note": lpips_note,
            "latent": latent,
        }
        vae_report.write_report(analysis, out, meta)
    console.print("faces   " + vae_report.headline(analysis.faces))
    if analysis.patches is not None:
        console.print("patches " + vae_report.headline(analysis.patches))
    console.print(f"report: {out / 'report.md'}")
