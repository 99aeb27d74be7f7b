"""`drbfr export`: assemble a model bundle from trained DRM, VAE and LDM runs."""

from __future__ import annotations

from pathlib import Path

import typer

from drbfr_cli.cli.common import console, user_errors


def export(
    ldm: Path = typer.Option(..., help="LDM run folder (from drbfr train ldm)."),
    out: Path = typer.Option(..., "-o", "--out", help="New bundle folder."),
    drm: Path | None = typer.Option(
        None, help="DRM run folder (default: the one the LDM run was trained on)."
    ),
    vae: Path | None = typer.Option(
        None, help="VAE run folder (default: the one the LDM run was trained on)."
    ),
) -> None:
    """Write one bundle folder (config + safetensors of E_DR, VAE, denoiser and its EMA) that
    `drbfr restore --model` and `drbfr analyze ldm --model` load."""
    from drbfr_cli.bundle import load_bundle
    from drbfr_cli.train.export import export_bundle

    with user_errors():
        path = export_bundle(ldm, out, drm_run=drm, vae_run=vae)
        bundle = load_bundle(path)  # proves the bundle loads and its parts agree
    size = sum(f.stat().st_size for f in path.iterdir()) / 2**20
    sampling = bundle.sampling
    console.print(
        f"bundle: {path} ({size:.1f} MiB; {bundle.face_size} px faces, "
        f"DR {'on' if bundle.use_dr else 'off (DR-None)'}, default sampling "
        f"{sampling.sampler} {sampling.steps} steps, start_t {sampling.start_t})"
    )
