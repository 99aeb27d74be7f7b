"""`drbfr train <stage>`: train one stage on the shared accelerate loop.

Runs unchanged under `torchrun --nproc_per_node N -m drbfr_cli train ...` or `accelerate launch`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import typer

from drbfr_cli.choices import Ablation
from drbfr_cli.cli.common import console, user_errors

if TYPE_CHECKING:  # torch, accelerate: imported when a command runs
    from drbfr_cli.train.loop import LoopConfig

app = typer.Typer(help="Train a stage: drm (degradation representation).", no_args_is_help=True)


def loop_config(defaults: dict[str, Any], **overrides: object) -> LoopConfig:
    """LoopConfig from a preset's [train] table, with the options the user gave on top."""
    from drbfr_cli.train.loop import LoopConfig

    values = {**defaults, **{k: v for k, v in overrides.items() if v is not None}}
    return LoopConfig(**values)


@app.command("drm")
def train_drm(
    data: Path = typer.Option(..., help="Folder of HQ faces (searched recursively)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder (checkpoints, logs, samples)."),
    preset: str = typer.Option(
        "tiny", help="Model preset: tiny, base or paper (models/presets/drm.toml)."
    ),
    steps: int | None = typer.Option(None, min=1, help="Training steps (default: the preset's)."),
    batch_size: int | None = typer.Option(None, min=2, help="Patch pairs per step (per process)."),
    lr: float | None = typer.Option(None, min=0.0, help="Learning rate."),
    seed: int = typer.Option(0, help="Seed for weights, data and noise."),
    ablation: Ablation = typer.Option(
        Ablation.NONE, help="none (DR-ALL), cl (DR-CL) or rec (DR-REC)."
    ),
    resume: bool = typer.Option(False, help="Continue the run in OUT from its last checkpoint."),
    workers: int | None = typer.Option(None, min=0, help="Data-loader worker processes."),
    mixed_precision: str = typer.Option("no", help="no, fp16 or bf16."),
    checkpoint_every: int = typer.Option(500, min=1, help="Steps between checkpoints."),
    sample_every: int = typer.Option(500, min=0, help="Steps between sample grids (0: never)."),
    log_every: int = typer.Option(10, min=1, help="Steps between log lines."),
) -> None:
    """Train the Degradation Representation Module (paper Eqs. 1-7)."""
    if mixed_precision not in ("no", "fp16", "bf16"):
        raise typer.BadParameter("--mixed-precision must be no, fp16 or bf16")
    precision: Literal["no", "fp16", "bf16"] = mixed_precision  # type: ignore[assignment]
    from drbfr_cli.train.drm import DRMTask, DRMTaskConfig, drm_config_from_preset
    from drbfr_cli.train.loop import train

    with user_errors():
        model, defaults = drm_config_from_preset(preset)
        loop = loop_config(
            defaults,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            num_workers=workers,
            mixed_precision=precision,
            checkpoint_every=checkpoint_every,
            sample_every=sample_every,
            log_every=log_every,
        )
        task = DRMTask(
            DRMTaskConfig(model=model, data=str(data), preset=preset, ablation=ablation, seed=seed)
        )
        result = train(task, loop, out, resume=resume)
    console.print(
        f"drm trained to step {result.step}: "
        + ", ".join(f"{k} {v:.4f}" for k, v in result.last_terms.items())
    )
    console.print(f"weights: {result.final_dir}")
