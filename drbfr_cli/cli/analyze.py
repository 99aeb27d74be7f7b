"""`drbfr analyze <stage>`: measure what a trained stage learned."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from drbfr_cli.choices import Sampler
from drbfr_cli.cli.common import console, err_console, parse_range, user_errors
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
    from drbfr_cli.nets.drm import build_drm
    from drbfr_cli.train.datasets import load_faces
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


def _lpips_or_notice(
    weights_dir: Path | None, backbone: Path | None = None
) -> tuple[nn.Module | None, str]:
    """LPIPS VGG from the registry, or the net of a named backbone file (its sha256 noted)."""
    import torch

    from drbfr_cli.metrics.lpips import LpipsNet, backbone_file, describe, load_lpips
    from drbfr_cli.weights import WeightsMissingError

    cpu = torch.device("cpu")
    if backbone is not None:
        net, named = backbone_file(backbone, None)
        return load_lpips(net, None, cpu, backbone=backbone), describe(net, named)
    try:
        return load_lpips(LpipsNet.VGG, weights_dir, cpu), "LPIPS: VGG"
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
    lpips_backbone: Path | None = typer.Option(
        None, help="LPIPS backbone file (torchvision AlexNet or VGG16 layout; not hash-checked)."
    ),
) -> None:
    """Reconstruction PSNR/SSIM (LPIPS) of unseen faces against the bicubic codec."""
    from drbfr_cli.analysis import vae as vae_analysis
    from drbfr_cli.analysis import vae_report
    from drbfr_cli.imaging import from_uint8
    from drbfr_cli.train.datasets import load_faces
    from drbfr_cli.train.vae import load_vae

    with user_errors():
        trained = load_vae(vae)
        cfg = trained.config
        faces_uint8 = load_faces(data, cfg.data.face_sides[1])
        faces = [from_uint8(f) for f in load_faces(data, cfg.image_size)]
        crops = vae_analysis.unseen_patches(
            faces_uint8, cfg.data.face_sides, cfg.data.patch_size, patches, seed
        )
        lpips_model, lpips_note = _lpips_or_notice(weights_dir, lpips_backbone)
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


@app.command("ldm")
def analyze_ldm(
    model: Path = typer.Option(..., help="Bundle folder (from drbfr export)."),
    data: Path = typer.Option(..., help="HQ faces the bundle never saw."),
    out: Path = typer.Option(Path("ldm-analysis"), "-o", "--out", help="Report folder."),
    per_face: int = typer.Option(8, min=1, help="Degradations per face."),
    blur: str = typer.Option("0.1,2", help="Eq. (11) blur sigma range LO,HI."),
    scale: str = typer.Option("1,2", help="Eq. (11) downsampling range LO,HI."),
    noise: str = typer.Option("5,15", help="Eq. (11) noise range LO,HI (0-255 scale)."),
    jpeg: str = typer.Option("70,100", help="Eq. (11) JPEG quality range LO,HI."),
    start_t: list[float] = typer.Option(
        [1.0], help="Sampling start (1: pure noise; < 1: truncated); repeat to compare."
    ),
    steps: int | None = typer.Option(None, min=1, help="Sampling steps (default: the bundle's)."),
    sampler: Sampler | None = typer.Option(None, help="Sampler (default: the bundle's)."),
    tem_t: float | None = typer.Option(None, min=0.0, max=0.99, help="Texture pass start."),
    guidance: list[float] = typer.Option(
        [1.0], min=0.0, help="Guidance scale (1: conditional only); repeat to compare."
    ),
    samples: int | None = typer.Option(
        None, min=1, help="Restorations averaged per face (default: the bundle's)."
    ),
    seed: int = typer.Option(0, help="Seed for the degradations."),
) -> None:
    """Restoration PSNR/SSIM on degraded unseen faces, against the LQ and its VAE round trip."""
    from dataclasses import replace

    from drbfr_cli.analysis import ldm as ldm_analysis
    from drbfr_cli.analysis.ldm_report import headline_rows, write_report
    from drbfr_cli.bundle import load_bundle
    from drbfr_cli.degradations import DegradationRanges
    from drbfr_cli.imaging import from_uint8
    from drbfr_cli.train.datasets import load_faces

    with user_errors():
        ranges = DegradationRanges(
            blur=parse_range(blur, "--blur"), scale=parse_range(scale, "--scale"),
            noise=parse_range(noise, "--noise"), jpeg=parse_range(jpeg, "--jpeg"),
        )  # fmt: skip
        bundle = load_bundle(model)
        changes = {"steps": steps, "sampler": sampler, "tem_t": tem_t, "samples": samples}
        base = replace(bundle.sampling, **{k: v for k, v in changes.items() if v is not None})
        variants = {
            f"start_t={t:g}" + (f", guidance={g:g}" if guidance != [1.0] else ""): replace(
                base, start_t=t, guidance_scale=g
            )
            for g in guidance
            for t in start_t
        }
        faces = [from_uint8(f) for f in load_faces(data, bundle.face_size)]
        pairs = ldm_analysis.degraded_pairs(faces, ranges, per_face, seed)
        analysis = ldm_analysis.analyse_restoration(bundle, pairs, variants)
        meta = {"model": str(model), "data": str(data), "seed": seed, "ranges": ranges}
        write_report(analysis, out, meta)
    for line in headline_rows(analysis):
        console.print(line, highlight=False)
    console.print(f"report: {out / 'report.md'}")
