"""`drbfr export`: assemble a model bundle from trained DRM, VAE and LDM runs."""

from __future__ import annotations

from pathlib import Path

import typer

from drbfr_cli.cli.common import console, user_errors


def export(
    ldm: Path | None = typer.Option(None, help="LDM run folder (from drbfr train ldm)."),
    out: Path = typer.Option(..., "-o", "--out", help="New bundle folder."),
    drm: Path | None = typer.Option(
        None, help="DRM run folder or bundle (default: the one the LDM run was trained on)."
    ),
    vae: Path | None = typer.Option(
        None, help="VAE run folder (default: the one the LDM run was trained on)."
    ),
    half: bool = typer.Option(False, "--half", help="Store the weights as float16 (shipping)."),
    ema_only: bool = typer.Option(
        False, "--ema-only", help="Store only the EMA denoiser, not the trained weights (shipping)."
    ),
    fidelity: Path | None = typer.Option(
        None,
        help="Fidelity run folder (from drbfr train fidelity), or a bundle carrying F, whose F "
        "the bundle carries (for a run of train ldm --fidelity BUNDLE: the same BUNDLE).",
    ),
    fidelity_weights: str = typer.Option(
        "ema",
        help="Of the --fidelity run: ema (its EMA weights, when kept) or trained (the weights "
        "of its last step).",
    ),
    drm_head: Path | None = typer.Option(
        None,
        "--drm-head",
        help="Degradation-head run folder (from drbfr train drm-head on this E_DR), or a "
        "bundle with this E_DR that carries one, whose head the bundle carries (per-face "
        "estimates for drbfr inspect, the restore report and --fidelity auto).",
    ),
    from_bundle: Path | None = typer.Option(
        None,
        "--from-bundle",
        help="Instead of --ldm: copy this bundle, adding (or replacing) the --fidelity network "
        "and/or the --drm-head.",
    ),
    low_freq: float | None = typer.Option(
        None,
        "--low-freq",
        min=0.0,
        help="With --from-bundle: the bundle's new default --low-freq sigma (px).",
    ),
    weights_dir: Path | None = typer.Option(
        None, "--weights-dir", file_okay=False, help="Weights folder for the TAEF2 check load."
    ),
) -> None:
    """Write one bundle folder (config + safetensors of E_DR, VAE, denoiser and its EMA) that
    `drbfr restore --model` and `drbfr analyze ldm --model` load. A bundle to ship is made with
    --half --ema-only (half the size of the EMA alone; loads as float32)."""
    from drbfr_cli.bundle import load_bundle
    from drbfr_cli.errors import DrbfrError
    from drbfr_cli.train.export import export_bundle, repack_bundle

    with user_errors():
        if fidelity_weights not in ("ema", "trained"):
            raise DrbfrError(f"--fidelity-weights is ema or trained, got {fidelity_weights!r}")
        fidelity_ema = fidelity_weights == "ema"
        if (ldm is None) == (from_bundle is None):
            raise DrbfrError("give exactly one of --ldm RUN and --from-bundle BUNDLE")
        if from_bundle is not None:
            if fidelity is None and drm_head is None:
                raise DrbfrError(
                    "--from-bundle needs --fidelity RUN and/or --drm-head RUN (the parts it adds)"
                )
            path = repack_bundle(
                from_bundle, out, fidelity_run=fidelity, drm_head_run=drm_head,
                low_freq_sigma=low_freq, fidelity_ema=fidelity_ema,
            )  # fmt: skip
        else:
            if low_freq is not None:
                raise DrbfrError("--low-freq goes with --from-bundle (set it in the LDM preset)")
            path = export_bundle(
                ldm, out, drm_run=drm, vae_run=vae, half=half, ema_only=ema_only,
                fidelity_run=fidelity, fidelity_ema=fidelity_ema, drm_head_run=drm_head,
            )  # fmt: skip
        bundle = load_bundle(
            path, weights_dir=weights_dir
        )  # proves the bundle loads and its parts agree
    size = sum(f.stat().st_size for f in path.iterdir()) / 2**20
    sampling = bundle.sampling
    console.print(
        f"bundle: {path} ({size:.1f} MiB; {bundle.face_size} px faces, "
        f"DR {'on' if bundle.use_dr else 'off (DR-None)'}, "
        f"fidelity network {'on' if bundle.fidelity is not None else 'off'}, "
        f"degradation head {'on' if bundle.drm_head is not None else 'off'}, default sampling "
        f"{sampling.sampler} {sampling.steps} steps, start_t {sampling.start_t}, "
        f"low-freq sigma {sampling.low_freq_sigma:g})"
    )
