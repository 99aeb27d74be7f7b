"""`drbfr bench train`: items/s and peak memory of one optimizer step of each training stage.

A step is what the training loop does per step with grad_accum 1: forward and loss under
accelerate's autocast, backward, gradient clipping, AdamW step. Its batch is made once (the
loop makes batches in loader workers, beside the step); the time to make one batch in the main
process is reported on its own. The VAE step is taken after its warm-up phases, so it includes
quantization and (for presets with one) the discriminator; when LPIPS's VGG16 weights are not
in the weights folder, a random-weight VGG16 of the same shape stands in (the same cost).
The networks start from random weights: a step costs the same whatever they hold.
"""

from __future__ import annotations

import gc
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drbfr_cli.benchmark.inputs import synthetic_image
from drbfr_cli.benchmark.measure import Measurement, machine_info, measure, parameter_count
from drbfr_cli.devices import free_memory, is_out_of_memory, resolve_device
from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import to_uint8
from drbfr_cli.train.datasets import load_faces

STAGES = ("drm", "vae", "ldm")
ITEMS = {
    "drm": "patch pairs (two LQ and two HQ patches)",
    "vae": "HQ patches",
    "ldm": "HQ/LQ face pairs",
}
"""What one item of each stage's batch is."""
DRM_MIN_BATCH = 2
"""The DRM's contrastive loss needs another item as its negative."""
SYNTHETIC_FACES = 8
Notice = Callable[[str], None]


@dataclass(frozen=True)
class TrainBenchConfig:
    """What `drbfr bench train` measures."""

    preset: str = "tiny"
    stages: tuple[str, ...] = STAGES
    batch_sizes: tuple[int, ...] = (8,)
    device: str = "auto"
    precisions: tuple[str, ...] = ("auto",)
    """no, fp16, bf16 (accelerate's mixed precision); auto: no on the CPU, fp16 and bf16 on
    CUDA."""
    repeats: int = 3
    warmup: int = 1
    data: Path | None = None
    """HQ faces to draw batches from; None: synthetic pictures."""
    weights_dir: Path | None = None
    seed: int = 0
    loop_steps: int = 0
    """> 0: also run the real training loop (`train ldm`'s, loader worker included) this many
    steps per pair_reuse value and report its steady items/s (the later half of the steps)."""
    pair_reuse: tuple[int, ...] = (1,)
    """The ldm loop runs' items per encoded pair (1: each item freshly encoded, as before the
    replay pool)."""
    workers: int | None = None
    """Loader workers of the loop runs (None: the preset's)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.stages) - set(STAGES))
        if unknown or not self.stages:
            raise ValueError(f"stages must be among {', '.join(STAGES)}, got {list(self.stages)}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch sizes must be positive, got {list(self.batch_sizes)}")
        if self.loop_steps < 0 or not self.pair_reuse or min(self.pair_reuse) < 1:
            raise ValueError("loop steps must be >= 0 and pair reuse values >= 1")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError("repeats must be at least 1 and warmup at least 0")
        bad = sorted(set(self.precisions) - {"auto", "no", "fp16", "bf16"})
        if bad:
            raise ValueError(f"precisions are auto, no, fp16 or bf16, got {', '.join(bad)}")


def stage_batch_sizes(stage: str, batch_sizes: Sequence[int]) -> list[int]:
    """The batch sizes a stage runs at: the DRM's are at least DRM_MIN_BATCH."""
    low = DRM_MIN_BATCH if stage == "drm" else 1
    return sorted({max(low, size) for size in batch_sizes})


def resolve_mixed_precisions(precisions: Sequence[str], device: torch.device) -> list[str]:
    out: list[str] = []
    for precision in precisions:
        chosen = [precision]
        if precision == "auto":
            chosen = ["fp16", "bf16"] if device.type == "cuda" else ["no"]
        out += [p for p in chosen if p not in out]
    return out


# ---------------------------------------------------------------------------------------------
# Tasks


class _FaceSource:
    """Faces (uint8 RGB) at a given size, from a folder or synthetic, read once per size."""

    def __init__(self, folder: Path | None, seed: int) -> None:
        self.folder, self.seed = folder, seed
        self._cache: dict[int, list[np.ndarray]] = {}

    def __call__(self, size: int) -> list[np.ndarray]:
        if size not in self._cache:
            if self.folder is not None:
                self._cache[size] = load_faces(self.folder, size)
            else:
                rng = np.random.default_rng(self.seed)
                images = [synthetic_image(rng, size) for _ in range(SYNTHETIC_FACES)]
                self._cache[size] = [to_uint8(image) for image in images]
        return self._cache[size]


def build_task(stage: str, config: TrainBenchConfig, faces: _FaceSource) -> tuple[Any, list[str]]:
    """The TrainTask of `stage` for the preset, on `faces`, and notes on what was changed."""
    preset, seed, notes = config.preset, config.seed, []
    if stage == "drm":
        from drbfr_cli.presets import drm_config_from_preset
        from drbfr_cli.train.drm import DRMTask, DRMTaskConfig

        model, _ = drm_config_from_preset(preset)
        settings = DRMTaskConfig(model=model, data="", preset=preset, seed=seed)
        return DRMTask(settings, faces=faces(model.face_size)), notes
    if stage == "vae":
        return _vae_task(config, faces, notes), notes
    from drbfr_cli.benchmark.random_bundle import random_bundle
    from drbfr_cli.presets import ldm_config_from_preset
    from drbfr_cli.train.ldm import LDMTask, LDMTaskConfig

    model, _ = ldm_config_from_preset(preset)
    parts = random_bundle(preset, seed=seed).parts
    settings = LDMTaskConfig(model=model, data="", preset=preset, drm="", vae="", seed=seed)
    notes.append("frozen DRM encoder and VAE with random weights")
    return LDMTask(settings, faces=faces(model.data.face_sides[1]), parts=parts), notes


def _vae_task(config: TrainBenchConfig, faces: _FaceSource, notes: list[str]):
    from drbfr_cli.presets import vae_config_from_preset
    from drbfr_cli.train.vae import VAETask, VAETaskConfig

    model, _ = vae_config_from_preset(config.preset)
    weights_dir = str(config.weights_dir) if config.weights_dir else None
    settings = VAETaskConfig(
        model=model, data="", preset=config.preset, seed=config.seed, weights_dir=weights_dir
    )
    try:
        task = VAETask(settings, faces=faces(model.data.face_sides[1]))
    except DrbfrError:  # the LPIPS backbone is absent: time a random one of the same shape
        settings = replace(settings, perceptual=False)
        task = VAETask(settings, faces=faces(model.data.face_sides[1]))
    task.modules()["vae"].quantizer.initialised.fill_(True)  # no k-means start in the timing
    if model.loss.perceptual_weight > 0 and task.lpips is None:
        from drbfr_cli.choices import LpipsNet
        from drbfr_cli.metrics.lpips_net import LpipsNetwork

        task.lpips = LpipsNetwork(LpipsNet.VGG)
        notes.append("LPIPS with a random-weight VGG16 (its weights are not here)")
    if model.loss.disc_weight > 0:
        notes.append("with the PatchGAN discriminator")
    return task


def steady_step(task: Any) -> int:
    """A step number past every warm-up phase of the task (VAE: quantization, discriminator)."""
    loss = getattr(task.model_config, "loss", None)  # only the VAE has warm-up phases
    return 1 + (max(loss.quantize_after, loss.disc_start) if loss is not None else 0)


# ---------------------------------------------------------------------------------------------
# One step


def bench_step(
    task: Any, batch_size: int, precision: str, device: torch.device, config: TrainBenchConfig
) -> dict[str, Any]:
    """Time one optimizer step of `task` at `batch_size` and mixed precision `precision`."""
    from drbfr_cli.train.accel import make_accelerator
    from drbfr_cli.train.batches import fixed_batch, to_device
    from drbfr_cli.train.loop import LoopConfig

    loop = LoopConfig(
        steps=1,
        batch_size=batch_size,
        lr=1e-4,
        mixed_precision=precision,
        cpu=device.type == "cpu",
    )
    accelerator = make_accelerator(loop)
    raw = task.modules()
    for module in raw.values():
        module.train()
    params = [p for module in raw.values() for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=loop.lr)
    *wrapped, optimizer = accelerator.prepare(*raw.values(), optimizer)
    modules = dict(zip(raw, wrapped, strict=True))
    dataset = task.dataset()
    data = measure(
        lambda: fixed_batch(dataset, batch_size, config.seed), device=device, repeats=1, warmup=0
    )
    batch = to_device(fixed_batch(dataset, batch_size, config.seed), accelerator.device)
    step = steady_step(task)

    def one_step() -> None:
        with accelerator.autocast():
            loss = task.compute_loss(modules, batch, step).total
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    timing = measure(
        one_step, device=accelerator.device, repeats=config.repeats, warmup=config.warmup
    )
    return _row(timing, batch_size, data, params)


def _row(
    timing: Measurement, batch_size: int, data: Measurement, params: list[torch.nn.Parameter]
) -> dict[str, Any]:
    return {
        "batch": batch_size,
        "items_per_s": batch_size / timing.seconds,
        "seconds_per_step": timing.seconds,
        "data_seconds_per_batch": data.seconds,
        "trained_parameters": sum(p.numel() for p in params),
        **timing.to_dict(),
    }


# ---------------------------------------------------------------------------------------------
# The run


def run_train_bench(config: TrainBenchConfig, notice: Notice | None = None) -> dict[str, Any]:
    """One optimizer step of each stage, batch size and precision; a JSON-ready dict."""
    say = notice or (lambda _message: None)
    device = resolve_device(config.device)
    precisions = resolve_mixed_precisions(config.precisions, device)
    faces = _FaceSource(config.data, config.seed)
    rows = []
    for stage in config.stages:
        for precision in precisions:
            for batch_size in stage_batch_sizes(stage, config.batch_sizes):
                say(f"{stage}: batch {batch_size}, mixed precision {precision}")
                rows.append(_stage_row(stage, batch_size, precision, device, config, faces))
    if config.loop_steps and "ldm" in config.stages:
        for reuse in config.pair_reuse:
            say(f"ldm loop: {config.loop_steps} steps, pair reuse {reuse}")
            rows.append(_loop_row(reuse, device, config, faces))
    return {
        "kind": "train",
        "machine": machine_info(device),
        "settings": {
            **asdict(config),
            "data": str(config.data) if config.data else "synthetic pictures",
            "weights_dir": str(config.weights_dir) if config.weights_dir else None,
        },
        "rows": rows,
    }


def _stage_row(
    stage: str,
    batch_size: int,
    precision: str,
    device: torch.device,
    config: TrainBenchConfig,
    faces: _FaceSource,
) -> dict[str, Any]:
    task, notes = build_task(stage, config, faces)
    if stage == "drm" and min(config.batch_sizes) < DRM_MIN_BATCH:
        notes.append(f"batches of at least {DRM_MIN_BATCH}: the contrastive loss needs negatives")
    modules = {name: parameter_count(module) for name, module in task.modules().items()}
    try:
        row = bench_step(task, batch_size, precision, device, config)
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
        row = {"batch": batch_size, "failed": "out of memory"}
    finally:
        del task
        gc.collect()
        free_memory()
    return {
        "stage": stage,
        "preset": config.preset,
        "precision": precision,
        "item": ITEMS[stage],
        "module_parameters": modules,
        "notes": notes,
        **row,
    }


# ---------------------------------------------------------------------------------------------
# The real loop


def _loop_row(
    reuse: int, device: torch.device, config: TrainBenchConfig, faces: _FaceSource
) -> dict[str, Any]:
    """items/s of `train` itself on the ldm task with `reuse` items per encoded pair: loader
    worker, encoding, U-Net step and logging together, in a temporary run folder."""
    from drbfr_cli.presets import ldm_config_from_preset
    from drbfr_cli.train.loop import LoopConfig, train

    task, notes = build_task("ldm", config, faces)
    task.model_config = replace(task.model_config, pair_reuse=reuse)
    _, defaults = ldm_config_from_preset(config.preset)
    batch = max(config.batch_sizes)
    workers = defaults.get("num_workers", 0) if config.workers is None else config.workers
    log_every = max(1, config.loop_steps // 10)
    loop = LoopConfig(
        steps=config.loop_steps, batch_size=batch, lr=1e-4, num_workers=workers,
        log_every=log_every, checkpoint_every=0, cpu=device.type == "cpu", seed=config.seed,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        train(task, loop, Path(folder) / "run")
        lines = (Path(folder) / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    half = len(records) // 2  # the steady half: after start-up and the pool's warm-up
    start, end = records[half - 1] if half else {"step": 0, "elapsed": 0.0}, records[-1]
    elapsed, steps = end["elapsed"] - start["elapsed"], end["step"] - start["step"]
    return {
        "stage": "ldm loop",
        "preset": config.preset,
        "precision": "no",
        "item": ITEMS["ldm"],
        "notes": [*notes, f"pair reuse {reuse}, {workers} loader worker(s)"],
        "batch": batch,
        "pair_reuse": reuse,
        "items_per_s": steps * batch / max(elapsed, 1e-9),
        "seconds_per_step": elapsed / max(steps, 1),
    }
