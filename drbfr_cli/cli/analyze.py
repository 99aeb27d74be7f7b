"""`drbfr analyze <stage>`: measure what a trained stage learned."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from drbfr_cli.analysis import vae as vae_analysis
from drbfr_cli.analysis import vae_report
from drbfr_cli.analysis.drm import AnalysisConfig, analyse_drm
from drbfr_cli.analysis.report import write_report
from drbfr_cli.cli.common import console, err_console, user_errors
from drbfr_cli.data import load_faces
from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import from_uint8
from drbfr_cli.metrics.lpips import LpipsNet, load_lpips
from drbfr_cli.nets.drm import build_drm
from drbfr_cli.train import load_modules
from drbfr_cli.train.drm import model_config_from_saved
from drbfr_cli.train.vae import load_vae
from drbfr_cli.weights import WeightsMissingError

app = typer.Typer(help="Analyse a trained stage.", no_args_is_help=True)


def load_drm(run_dir: Path) -> tuple[dict[str, torch.nn.Module], dict]:
    """The DRM networks of a run (final weights, else the latest checkpoint), in eval mode."""
    states, saved = load_modules(run_dir)
    if saved.get("stage") != "drm":
        raise DrbfrError(f"{run_dir}: not a DRM run (stage {saved.get('stage')!r})")
    networks = build_drm(model_config_from_saved(saved))
    modules = {name: networks[name] for name in states}
    for name, module in modules.items():
        try:
            module.load_state_dict(states[name])
        except RuntimeError as exc:
            raise DrbfrError(
                f"{run_dir}: {name} weights do not match its config ({str(exc).splitlines()[0]})"
            ) from None
        module.eval()
    return modules, saved


@app.command("drm")
def analyze_drm(
    drm: Path = typer.Option(..., help="DRM run folder (from drbfr train drm)."),
    data: Path = typer.Option(
        ..., help="Faces the DRM never saw (half fit the probes, half score them)."
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Report folder."),
    crop: int = typer.Option(
        192, min=32, help="Side of the central face region the DR is read from."
    ),
    draws: int = typer.Option(16, min=2, help="Degradations per face and type for the type probe."),
    seed: int = typer.Option(0, help="Seed for the degradations and the untrained encoder."),
) -> None:
    """Section 4.1 evidence: degradation-type probe, parameter R^2, content independence, Fig. 6."""
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
    probe, untrained_probe = report["type_probe"], report["type_probe_untrained"]
    console.print(
        f"(a) degradation type: linear {probe['linear']:.3f}, kNN {probe['knn']:.3f} "
        f"(untrained: {untrained_probe['linear']:.3f} / {untrained_probe['knn']:.3f}; chance 0.25)"
    )
    console.print("(b) R^2: " + ", ".join(f"{k} {v:.3f}" for k, v in report["r2"].items()))
    console.print(
        f"(c) cosine same degradation {report['cosine_same_degradation_different_faces']:.3f} "
        f"vs same face {report['cosine_same_face_different_degradations']:.3f}"
    )
    rec = report["reconstruction"]
    if rec["psnr_glq_vs_lq"] is not None:
        console.print(
            f"(d) G_LQ vs LQ: {rec['psnr_glq_vs_lq']:.2f} dB / SSIM {rec['ssim_glq_vs_lq']:.3f} "
            f"(shuffled DR {rec['psnr_glq_shuffled_dr_vs_lq']:.2f} dB, "
            f"HQ vs LQ {rec['psnr_hq_vs_lq']:.2f} dB)"
        )
    console.print(f"report: {out / 'report.md'}")


def _lpips_or_notice(weights_dir: Path | None) -> tuple[torch.nn.Module | None, str]:
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
