"""`drbfr demo`: train a tiny bundle offline and show a before/after page (a demo, not quality)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from drbfr_cli.cli.common import console, user_errors
from drbfr_cli.errors import DrbfrError


def demo(
    out: Path = typer.Option(Path("out/demo"), "-o", "--out", help="New folder for everything."),
    drm_steps: int = typer.Option(150, min=1, help="DRM training steps."),
    vae_steps: int = typer.Option(500, min=2, help="VQ autoencoder training steps."),
    ldm_steps: int = typer.Option(500, min=1, help="Restoration model training steps."),
    seed: int = typer.Option(0, help="Seed for training, degradations and sampling."),
) -> None:
    """Train a tiny DRM, VAE and LDM on faces scikit-image ships (offline, minutes on a CPU),
    restore degraded held-out faces with them and write OUT/index.html (before / after)."""
    from drbfr_cli.demo import DemoConfig, run_demo

    started = time.monotonic()

    def step(message: str) -> None:
        console.print(f"[{time.monotonic() - started:6.0f} s] {message}", highlight=False)

    with user_errors():
        if out.exists() and any(out.iterdir()):
            raise DrbfrError(f"{out}: already exists and is not empty; choose a new folder")
        config = DemoConfig(
            out=out, drm_steps=drm_steps, vae_steps=vae_steps, ldm_steps=ldm_steps, seed=seed
        )
        page = run_demo(config, step)
    step(f"done: open {page} (the bundle is {out / 'bundle'}; use it with drbfr restore --model)")
