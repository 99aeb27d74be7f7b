"""`drbfr train <stage>`: train one stage on the shared accelerate loop.

Runs unchanged under `torchrun --nproc_per_node N -m drbfr_cli train ...` or `accelerate launch`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from drbfr_cli.choices import Ablation
from drbfr_cli.cli.common import console, user_errors

if TYPE_CHECKING:  # torch, accelerate: imported when a command runs
    from drbfr_cli.train.loop import LoopConfig, TrainResult

app = typer.Typer(
    help="Train a stage: drm (degradation representation), vae (first-stage VQ autoencoder),\n"
    "ldm (latent diffusion restoration module, on a trained drm and vae), fidelity (the\n"
    "pixel-space regressor that gives restorations their coarse structure).",
    no_args_is_help=True,
)


# Options every stage takes, defined once.
DataOption = Annotated[
    list[str],
    typer.Option(
        help="Folder of HQ faces (searched recursively); repeat it to mix folders, each as "
        "DIR or DIR:WEIGHT (a folder's faces are drawn WEIGHT times as often; default 1).",
    ),
]
OutOption = Annotated[
    Path, typer.Option("-o", "--out", help="Run folder (checkpoints, logs, samples).")
]
StepsOption = Annotated[
    int | None, typer.Option(min=1, help="Training steps (default: the preset's).")
]
LrOption = Annotated[float | None, typer.Option(min=0.0, help="Learning rate.")]
WarmupOption = Annotated[
    int | None,
    typer.Option(min=0, help="Steps of linear learning-rate warm-up (default: the preset's)."),
]
CooldownOption = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Cool the learning rate linearly to 0 over the last N steps (default: the "
        "preset's; a fine-tune from --init-from with N = --steps decays over the whole run).",
    ),
]
ResumeOption = Annotated[
    bool, typer.Option(help="Continue the run in OUT from its last checkpoint.")
]
WorkersOption = Annotated[int | None, typer.Option(min=0, help="Data-loader worker processes.")]
PrecisionOption = Annotated[
    Literal["auto", "no", "fp16", "bf16"],
    typer.Option(
        help="auto (bf16 on a CUDA GPU that supports it, fp16 with loss scaling on other CUDA "
        "GPUs, no = fp32 on the CPU), no, fp16 or bf16; the run config records the choice."
    ),
]
CheckpointEveryOption = Annotated[int, typer.Option(min=1, help="Steps between checkpoints.")]
SampleEveryOption = Annotated[
    int, typer.Option(min=0, help="Steps between sample grids (0: never).")
]
LogEveryOption = Annotated[int, typer.Option(min=1, help="Steps between log lines.")]


def print_result(stage: str, result: TrainResult) -> None:
    """The last logged terms and where the weights are."""
    terms = ", ".join(f"{k} {v:.4f}" for k, v in result.last_terms.items())
    console.print(f"{stage} trained to step {result.step}: {terms}")
    console.print(f"weights: {result.final_dir}")


def loop_config(defaults: dict[str, Any], **overrides: object) -> LoopConfig:
    """LoopConfig from a preset's [train] table, with the options the user gave on top."""
    from drbfr_cli.train.accel import training_mixed_precision
    from drbfr_cli.train.loop import LoopConfig

    values = {**defaults, **{k: v for k, v in overrides.items() if v is not None}}
    requested = str(values.get("mixed_precision", "auto"))
    values["mixed_precision"] = training_mixed_precision(requested, cpu=bool(values.get("cpu")))
    return LoopConfig(**values)


@app.command("drm")
def train_drm(
    data: DataOption,
    out: OutOption,
    preset: str = typer.Option(
        "tiny",
        help="Model preset: tiny, base or paper (models/presets/drm.toml; "
        "paper is paper-sized, not the authors' recipe: see its provenance table).",
    ),
    steps: StepsOption = None,
    batch_size: int | None = typer.Option(None, min=2, help="Patch pairs per step (per process)."),
    lr: LrOption = None,
    seed: int = typer.Option(0, help="Seed for weights, data and noise."),
    ablation: Ablation = typer.Option(
        Ablation.NONE, help="none (DR-ALL), cl (DR-CL) or rec (DR-REC)."
    ),
    resume: ResumeOption = False,
    workers: WorkersOption = None,
    mixed_precision: PrecisionOption = "auto",
    checkpoint_every: CheckpointEveryOption = 500,
    sample_every: SampleEveryOption = 500,
    log_every: LogEveryOption = 10,
) -> None:
    """Train the Degradation Representation Module (paper Eqs. 1-7)."""
    from drbfr_cli.presets import drm_config_from_preset
    from drbfr_cli.train.drm import DRMTask, DRMTaskConfig
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
            mixed_precision=mixed_precision,
            checkpoint_every=checkpoint_every,
            sample_every=sample_every,
            log_every=log_every,
        )
        task = DRMTask(
            DRMTaskConfig(
                model=model, data=",".join(data), preset=preset, ablation=ablation, seed=seed
            )
        )
        result = train(task, loop, out, resume=resume)
    print_result("drm", result)


@app.command("vae")
def train_vae_command(
    data: DataOption,
    out: OutOption,
    preset: str = typer.Option(
        "tiny",
        help="Preset: tiny, base or paper (models/presets/vae.toml; "
        "paper is paper-sized, not the authors' recipe: see its provenance table).",
    ),
    steps: StepsOption = None,
    batch_size: int | None = typer.Option(None, min=1, help="Patches per step (per process)."),
    lr: LrOption = None,
    seed: int = typer.Option(0, help="Seed for weights, patches and codebook."),
    resume: ResumeOption = False,
    workers: WorkersOption = None,
    mixed_precision: PrecisionOption = "auto",
    checkpoint_every: CheckpointEveryOption = 500,
    sample_every: SampleEveryOption = 500,
    log_every: LogEveryOption = 10,
    weights_dir: Path | None = typer.Option(None, help="Folder holding the LPIPS VGG16 backbone."),
    no_perceptual: bool = typer.Option(
        False,
        "--no-perceptual",
        help="Train without the LPIPS term the preset weighs (recorded in the run config); "
        "without this, a missing VGG16 backbone is an error.",
    ),
) -> None:
    """Train the first-stage VQ autoencoder on patches of HQ faces (paper section 2)."""
    from drbfr_cli.presets import vae_config_from_preset
    from drbfr_cli.train.vae import VAETask, VAETaskConfig, train_vae

    with user_errors():
        model, defaults = vae_config_from_preset(preset)
        loop = loop_config(
            defaults, steps=steps, batch_size=batch_size, lr=lr, seed=seed, num_workers=workers,
            mixed_precision=mixed_precision, checkpoint_every=checkpoint_every,
            sample_every=sample_every, log_every=log_every,
            find_unused_parameters=True if model.loss.disc_weight > 0 else None,
        )  # fmt: skip
        settings = VAETaskConfig(
            model=model, data=",".join(data), preset=preset, seed=seed,
            weights_dir=str(weights_dir) if weights_dir else None, perceptual=not no_perceptual,
        )  # fmt: skip
        task = VAETask(settings)
        result, stats = train_vae(task, loop, out, resume=resume)
    terms = ", ".join(f"{k} {v:.4f}" for k, v in result.last_terms.items())
    console.print(f"vae trained to step {result.step}: {terms}")
    if stats is not None:
        console.print(
            f"latent scaling factor {stats.scaling_factor:.4f} (latent std {stats.std:.4f}, "
            f"mean {stats.mean:.4f} on {stats.samples} training patches)"
        )
    console.print(f"weights: {result.final_dir}")


@app.command("fidelity")
def train_fidelity_command(
    data: DataOption,
    out: OutOption,
    preset: str = typer.Option("small", help="Preset (models/presets/fidelity.toml)."),
    init_from: Path | None = typer.Option(
        None,
        "--init-from",
        exists=True,
        help="Bundle carrying F, or fidelity run, whose weights start this run (new optimizer).",
    ),
    steps: StepsOption = None,
    batch_size: int | None = typer.Option(None, min=1, help="Patches per step (per process)."),
    lr: LrOption = None,
    seed: int = typer.Option(0, help="Seed for weights, patches and degradations."),
    resume: ResumeOption = False,
    workers: WorkersOption = None,
    mixed_precision: PrecisionOption = "auto",
    checkpoint_every: CheckpointEveryOption = 500,
    sample_every: SampleEveryOption = 500,
    log_every: LogEveryOption = 10,
) -> None:
    """Train the fidelity network F, the pixel-space regressor (L1) that gives the LDRM's
    restoration its coarse structure (nets/fidelity.py)."""
    from drbfr_cli.presets import fidelity_config_from_preset
    from drbfr_cli.train.fidelity import FidelityTask, FidelityTaskConfig
    from drbfr_cli.train.loop import train

    with user_errors():
        model, defaults = fidelity_config_from_preset(preset)
        loop = loop_config(
            defaults, steps=steps, batch_size=batch_size, lr=lr, seed=seed, num_workers=workers,
            mixed_precision=mixed_precision, checkpoint_every=checkpoint_every,
            sample_every=sample_every, log_every=log_every,
        )  # fmt: skip
        task = FidelityTask(
            FidelityTaskConfig(
                model=model,
                data=",".join(data),
                preset=preset,
                seed=seed,
                init_from=str(init_from) if init_from else None,
            )
        )
        result = train(task, loop, out, resume=resume)
    print_result("fidelity", result)


@app.command("ldm")
def train_ldm_command(
    data: DataOption,
    out: OutOption,
    drm: Path = typer.Option(
        ..., help="Run folder of the trained DRM, or a bundle whose E_DR it uses (frozen)."
    ),
    vae: Path | None = typer.Option(
        None, help="Run folder of the trained VQ autoencoder (frozen); not for TAEF2 presets."
    ),
    weights_dir: Path | None = typer.Option(
        None, "--weights-dir", file_okay=False, help="Weights folder to look in first (TAEF2)."
    ),
    init_from: Path | None = typer.Option(
        None,
        "--init-from",
        exists=True,
        help="Bundle or LDM run whose denoiser starts this run (fine-tuning, new optimizer).",
    ),
    fidelity: Path | None = typer.Option(
        None,
        "--fidelity",
        exists=True,
        help="Bundle carrying F, or fidelity run: its frozen F cleans each LQ patch first, so "
        "the LDRM learns on F's outputs (export the run with the same F).",
    ),
    preset: str = typer.Option(
        "tiny",
        help="Preset: tiny, small, small-face, base or paper (models/presets/ldm.toml; "
        "paper is paper-sized, not the authors' recipe: see its provenance table).",
    ),
    no_dr: bool = typer.Option(
        False, "--no-dr", help="DR-None ablation: condition on the LQ latent only."
    ),
    steps: StepsOption = None,
    batch_size: int | None = typer.Option(None, min=1, help="Patches per step (per process)."),
    patch_size: int | None = typer.Option(
        None,
        min=8,
        help="Side of the training crops in px (default: the preset's; TAEF2 presets take any "
        "multiple of 8 that the U-Net's downsampling divides, up to the smallest face side).",
    ),
    pair_reuse: int | None = typer.Option(
        None,
        "--pair-reuse",
        min=1,
        help="Items each encoded pair serves, drawn from a pool in the loader worker "
        "(default: the preset's; 1: every item freshly encoded).",
    ),
    lr: LrOption = None,
    warmup_steps: WarmupOption = None,
    cooldown_steps: CooldownOption = None,
    seed: int = typer.Option(0, help="Seed for weights, patches, degradations and noise."),
    resume: ResumeOption = False,
    workers: WorkersOption = None,
    mixed_precision: PrecisionOption = "auto",
    checkpoint_every: CheckpointEveryOption = 500,
    sample_every: SampleEveryOption = 500,
    log_every: LogEveryOption = 10,
) -> None:
    """Train the latent diffusion restoration module (paper Eqs. 8-10) on frozen DRM and VAE."""
    from drbfr_cli.presets import ldm_config_from_preset, with_patch_size
    from drbfr_cli.train.ldm import LDMTask, LDMTaskConfig
    from drbfr_cli.train.loop import train

    with user_errors():
        model, defaults = ldm_config_from_preset(preset)
        if patch_size is not None:
            model = with_patch_size(model, patch_size)
        if pair_reuse is not None:
            model = replace(model, pair_reuse=pair_reuse)
        loop = loop_config(
            defaults, steps=steps, batch_size=batch_size, lr=lr, seed=seed, num_workers=workers,
            mixed_precision=mixed_precision, checkpoint_every=checkpoint_every,
            sample_every=sample_every, log_every=log_every, warmup_steps=warmup_steps,
            cooldown_steps=cooldown_steps,
        )  # fmt: skip
        settings = LDMTaskConfig(
            model=model, data=",".join(data), preset=preset, drm=str(drm),
            vae=str(vae) if vae else "", use_dr=not no_dr, seed=seed,
            weights_dir=str(weights_dir) if weights_dir else None,
            init_from=str(init_from) if init_from else None,
            fidelity=str(fidelity) if fidelity else None,
        )  # fmt: skip
        result = train(LDMTask(settings), loop, out, resume=resume)
    print_result("ldm", result)


@app.command("drm-head")
def train_drm_head_command(
    data: DataOption,
    out: OutOption,
    drm: Path = typer.Option(
        ..., exists=True, help="DRM run folder, or a bundle, whose frozen E_DR feeds the head."
    ),
    preset: str = typer.Option(
        "small", help="Preset: small or tiny (models/presets/drm_head.toml)."
    ),
    lpips_backbone: Path | None = typer.Option(
        None,
        "--lpips-backbone",
        exists=True,
        dir_okay=False,
        help="torchvision AlexNet state dict for the severity targets (default: the registry's "
        "lpips-alexnet, looked up in --weights-dir first).",
    ),
    weights_dir: Path | None = typer.Option(
        None, "--weights-dir", file_okay=False, help="Weights folder to look in first."
    ),
    steps: StepsOption = None,
    batch_size: int | None = typer.Option(None, min=1, help="Crops per step (per process)."),
    lr: LrOption = None,
    seed: int = typer.Option(0, help="Seed for weights, crops and degradations."),
    resume: ResumeOption = False,
    workers: WorkersOption = None,
    checkpoint_every: CheckpointEveryOption = 500,
    log_every: LogEveryOption = 10,
) -> None:
    """Train the degradation head: a small MLP on the frozen E_DR's tokens that estimates each
    face's blur, downscale, noise and JPEG quality and a severity in [0, 1] (drbfr inspect)."""
    from drbfr_cli.presets import drm_head_config_from_preset
    from drbfr_cli.train.drm_head import DRMHeadTask, DRMHeadTaskConfig
    from drbfr_cli.train.loop import train

    with user_errors():
        model, defaults = drm_head_config_from_preset(preset)
        loop = loop_config(
            defaults, steps=steps, batch_size=batch_size, lr=lr, seed=seed, num_workers=workers,
            mixed_precision="no", checkpoint_every=checkpoint_every, sample_every=0,
            log_every=log_every,
        )  # fmt: skip
        settings = DRMHeadTaskConfig(
            model=model, data=",".join(data), preset=preset, drm=str(drm), seed=seed,
            weights_dir=str(weights_dir) if weights_dir else None,
            lpips_backbone=str(lpips_backbone) if lpips_backbone else None,
        )  # fmt: skip
        result = train(DRMHeadTask(settings), loop, out, resume=resume)
    print_result("drm-head", result)
