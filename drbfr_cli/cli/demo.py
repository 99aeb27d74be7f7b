"""`drbfr demo`: the shipped model on real photos, with a before/after page (no training)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from drbfr_cli.cli.common import console, user_errors
from drbfr_cli.errors import DrbfrError


def demo(
    out: Path = typer.Option(Path("out/demo"), "-o", "--out", help="New folder for everything."),
    weights_dir: Path | None = typer.Option(
        None, "--weights-dir", file_okay=False, help="Detector and TAEF2 weights folder."
    ),
    extra: Path | None = typer.Option(
        None,
        exists=True,
        file_okay=False,
        help="Also restore photos of this folder's whole/ and aligned/ subfolders.",
    ),
    extra_count: int = typer.Option(
        3, min=0, help="Images taken from each --extra subfolder, by name (0: all)."
    ),
    model: str | None = typer.Option(
        None, help="Model bundle folder or name (default: the shipped drbfr-small)."
    ),
    steps: int | None = typer.Option(None, min=1, help="Sampling steps (default: the model's)."),
    samples: int | None = typer.Option(
        None, min=1, help="Restorations averaged per face (default: the model's)."
    ),
    seed: int = typer.Option(0, help="Seed for the degradations and sampling."),
    device: str = typer.Option("auto", help="auto, cpu, cuda[:N] or mps."),
) -> None:
    """Restore scikit-image's astronaut (the whole photo, and its aligned face degraded at a
    moderate and a strong setting), plus --extra photos, with the shipped model, and write
    OUT/index.html (before / after). Minutes on a CPU; nothing is trained."""
    from drbfr_cli.demo import DemoConfig, run_demo

    started = time.monotonic()

    def step(message: str) -> None:
        console.print(f"[{time.monotonic() - started:6.0f} s] {message}", highlight=False)

    with user_errors():
        if out.exists() and any(out.iterdir()):
            raise DrbfrError(f"{out}: already exists and is not empty; choose a new folder")
        config = DemoConfig(
            out=out, model=model, weights_dir=weights_dir, extra=extra, extra_count=extra_count,
            steps=steps, samples=samples, seed=seed, device=device,
        )  # fmt: skip
        page = run_demo(config, step)
    step(f"done: open {page}")
