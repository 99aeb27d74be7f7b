"""The training loop every stage shares (DRM, VQ autoencoder, latent diffusion).

A stage is a `TrainTask`: it names its modules, its dataset, its loss and (optionally) a sample
grid; `train` does the rest on accelerate, so one code path runs on a CPU, one GPU, or many
processes: `torchrun` (gloo between CPU processes, NCCL between GPUs, several nodes with its
rendezvous options) or `accelerate launch --multi_gpu` (which starts torchrun's launcher).

- One step is one optimizer step over `grad_accum` micro-batches of `batch_size` items per
  process, so a step sees batch_size * grad_accum * world_size items.
- Learning rate: linear warm-up (lr * k / warmup_steps at step k), then constant, so a run can be
  extended by resuming with more `steps` without changing its past; with `cooldown_steps` it
  then decays linearly to 0 over the last cooldown_steps (extending such a run moves the decay).
- Optimizer: AdamW over all trainable parameters of all modules, in the task's parameter
  groups (`TrainTask.param_groups`: own betas and gradient clipping, e.g. a discriminator).
- Only rank 0 writes (checkpoints, metrics.jsonl, samples, progress bar); all ranks compute.
- `compute_loss` receives the prepared (possibly DistributedDataParallel-wrapped) modules:
  call them, do not reach into their attributes. `sample_grid` receives the plain modules (the
  EMA copies when `ema_decay` is set) in eval mode under no_grad, on rank 0, with RNG states
  of its own so sampling never changes the training stream.
- Seeds: module initialisation under `seed`; each rank's torch/numpy/python generators from
  (seed, rank); data items from (seed, epoch, index) (see `drbfr_cli.train.batches`).
- A run folder needs a shared filesystem when several nodes train together.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed

from drbfr_cli.errors import DrbfrError, first_line, load_strict
from drbfr_cli.train import checkpoint as ckpt
from drbfr_cli.train.accel import make_accelerator, mean_over_ranks
from drbfr_cli.train.batches import (
    Batch,
    Shard,
    derive_seed,
    fixed_batch,
    infinite_batches,
    to_device,
)
from drbfr_cli.train.checkpoint import load_modules
from drbfr_cli.train.ema import EmaModules
from drbfr_cli.train.report import (
    TermMeter,
    append_metrics,
    check_finite,
    make_progress,
    status_text,
    truncate_metrics,
)
from drbfr_cli.train.resume import check_fresh_run_dir, check_same_config, latest_checkpoint
from drbfr_cli.train.samples import SampleWriter
from drbfr_cli.train.task import LoopConfig, LossOutput, ParamGroup, TrainTask

__all__ = [
    "LoopConfig", "LossOutput", "ParamGroup", "TrainResult", "TrainTask", "load_modules", "train",
]  # fmt: skip


@dataclass(frozen=True)
class TrainResult:
    """Where a finished run is and how it ended."""

    run_dir: Path
    step: int
    last_terms: dict[str, float]
    final_dir: Path


@dataclass
class _Session:
    """The live objects of one call to `train` (internal)."""

    task: TrainTask
    loop: LoopConfig
    run_dir: Path
    accelerator: Accelerator
    raw: dict[str, torch.nn.Module]
    prepared: dict[str, torch.nn.Module]
    params: list[torch.nn.Parameter]
    groups: list[tuple[ParamGroup, list[torch.nn.Parameter]]]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: EmaModules | None
    step: int = 0
    elapsed: float = 0.0
    batches: Generator[Batch, None, None] | None = None
    samples: SampleWriter | None = None

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def items_per_step(self) -> int:
        """Items one rank consumes per optimizer step."""
        return self.loop.batch_size * self.loop.grad_accum


# ---------------------------------------------------------------------------------------------
# Setting up


def _run_config(task: TrainTask, loop: LoopConfig, step: int, world_size: int) -> dict[str, Any]:
    return {
        "task": task.name,
        "step": step,
        "world_size": world_size,
        "task_config": task.config(),
        "loop_config": asdict(loop),
    }


def _resume_point(
    task: TrainTask, loop: LoopConfig, run_dir: Path, resume: bool
) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint to resume from and its config, after every check (on every rank)."""
    if not resume:
        check_fresh_run_dir(run_dir)
        return None, None
    folder = latest_checkpoint(run_dir)
    saved = ckpt.read_config(folder)
    ignore = getattr(task, "resume_may_change", frozenset())
    current = _run_config(task, loop, 0, 0)
    check_same_config(run_dir, saved, task.name, current["task_config"], asdict(loop), ignore)
    return folder, saved


def lr_factor(loop: LoopConfig) -> Callable[[int], float]:
    """The multiplier of `lr` after `step` optimizer steps: linear warm-up, constant, then a
    linear cool-down to 0 over the last `cooldown_steps` (never 0 for a step that runs)."""
    warmup, cooldown, steps = loop.warmup_steps, loop.cooldown_steps, loop.steps

    def factor(step: int) -> float:
        rise = min(1.0, (step + 1) / warmup) if warmup else 1.0
        fall = min(1.0, (steps - step) / cooldown) if cooldown else 1.0
        return min(rise, max(fall, 0.0))

    return factor


def _build(task: TrainTask, loop: LoopConfig, run_dir: Path, accelerator: Accelerator) -> _Session:
    set_seed(loop.seed)  # module initialisation (DDP then copies rank 0's weights to all ranks)
    raw = task.modules()
    if not raw:
        raise DrbfrError(f"task {task.name!r} has no modules to train")
    for module in raw.values():
        module.train()
    for name, module in raw.items():
        if not any(p.requires_grad for p in module.parameters()):
            raise ValueError(
                f"module {name!r} has no trainable parameter; keep it out of modules()"
            )
    groups = _param_groups(task, raw)
    params = [p for _, group_params in groups for p in group_params]
    optimizer = torch.optim.AdamW(
        [{"params": ps, "betas": group.betas} for group, ps in groups],
        lr=loop.lr,
        weight_decay=loop.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(loop))
    names = list(raw)
    *wrapped, optimizer = accelerator.prepare(*raw.values(), optimizer)
    ema = EmaModules(raw, loop.ema_decay) if loop.ema_decay else None
    return _Session(
        task, loop, run_dir, accelerator, raw, dict(zip(names, wrapped, strict=True)),
        params, groups, optimizer, scheduler, ema,
    )  # fmt: skip


def _param_groups(
    task: TrainTask, raw: dict[str, torch.nn.Module]
) -> list[tuple[ParamGroup, list[torch.nn.Parameter]]]:
    """The task's parameter groups (default: one of every module) with their parameters."""
    groups = (
        task.param_groups() if hasattr(task, "param_groups") else [ParamGroup("all", tuple(raw))]
    )
    named = [name for group in groups for name in group.modules]
    if sorted(named) != sorted(raw):
        raise ValueError(f"param_groups must hold each module once: {named} vs {list(raw)}")
    return [
        (group, [p for n in group.modules for p in raw[n].parameters() if p.requires_grad])
        for group in groups
    ]


def _load_weights(
    module: torch.nn.Module, weights: dict[str, torch.Tensor] | None, path: Path
) -> None:
    """Load saved weights into a module; a one-line error when they are absent or do not fit."""
    if weights is None:
        raise DrbfrError(f"{path}: missing from the checkpoint")
    load_strict(module, weights, what="does not fit the module being trained", where=path)


def _check_same_modules(session: _Session, folder: Path, saved: dict[str, Any]) -> None:
    """A resume never drops or adds a trained module (and the loss terms it serves)."""
    stored, current = sorted(saved.get("modules", [])), sorted(session.raw)
    if stored != current:
        raise DrbfrError(
            f"{folder}: holds the modules {stored}, this run trains {current}; a resume cannot "
            "drop or add one (start a new run, or --init-from where the stage has it)"
        )


def _load_optimizer(session: _Session, state: dict[str, Any], folder: Path) -> None:
    try:
        session.optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as exc:
        raise DrbfrError(
            f"{folder / ckpt.STATE_FILE}: optimizer state does not fit this run's parameter "
            f"groups ({first_line(exc)})"
        ) from None


def _restore(session: _Session, folder: Path, saved: dict[str, Any]) -> int:
    """Load a checkpoint into the session; returns the items this rank had consumed."""
    _check_same_modules(session, folder, saved)
    weights = ckpt.read_weights(folder, saved, ema=False)
    state = ckpt.read_state(folder, saved)
    for name, module in session.raw.items():
        _load_weights(module, weights.get(name), folder / ckpt.weights_file(name))
    if session.ema is not None:
        session.ema.load_state_dicts(ckpt.read_weights(folder, saved, ema=True))
    _load_optimizer(session, state, folder)
    session.scheduler.load_state_dict(state["scheduler"])
    if session.accelerator.scaler is not None and state.get("scaler"):
        session.accelerator.scaler.load_state_dict(state["scaler"])
    session.step, session.elapsed = int(state["step"]), float(state["elapsed"])
    rng = state["rng"]
    rank, world = session.accelerator.process_index, session.accelerator.num_processes
    if len(rng) == world:
        ckpt.restore_rng(rng[rank])
    else:  # a different number of processes: fresh per-rank streams, still seeded
        set_seed(derive_seed(session.loop.seed, rank, session.step))
    return int(state["items_per_rank"]) * len(rng) // world


def _open_run(task: TrainTask, loop: LoopConfig, run_dir: Path, resume: bool) -> _Session:
    accelerator = make_accelerator(loop)
    folder, saved = _resume_point(task, loop, run_dir, resume)
    accelerator.wait_for_everyone()  # every rank checked the folder before rank 0 writes to it
    session = _build(task, loop, run_dir, accelerator)
    rank = accelerator.process_index
    start_items = 0
    if folder is not None and saved is not None:
        start_items = _restore(session, folder, saved)
    else:
        set_seed(derive_seed(loop.seed, rank))
    if session.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(run_dir, session.step)
    dataset = task.dataset()
    shard = Shard(rank, accelerator.num_processes, start_items)
    session.batches = infinite_batches(dataset, loop.batch_size, loop.seed, shard, loop.num_workers)
    if session.main and loop.sample_every:
        batch = fixed_batch(dataset, loop.batch_size, loop.seed)
        session.samples = SampleWriter(task, batch, run_dir / "samples", loop.seed)
    return session


# ---------------------------------------------------------------------------------------------
# One step


def _micro_batch(session: _Session, step: int) -> dict[str, float]:
    """Forward and backward one micro-batch; returns its loss terms (with the total as `loss`)."""
    assert session.batches is not None
    batch = to_device(next(session.batches), session.accelerator.device)
    accelerator = session.accelerator
    with accelerator.accumulate(*session.prepared.values()):
        with accelerator.autocast():
            out = session.task.compute_loss(session.prepared, batch, step)
        accelerator.backward(out.total)
        terms = {"loss": float(out.total.detach()), **out.terms}
    return terms


def _clip_groups(session: _Session) -> dict[str, float]:
    """Unscale (fp16) once, then clip each parameter group on its own; the norms before."""
    session.accelerator.unscale_gradients()
    norms = {}
    for index, (group, params) in enumerate(session.groups):
        limit = session.loop.grad_clip if group.grad_clip == "loop" else group.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, limit or float("inf"))
        norms["grad_norm" if index == 0 else f"grad_norm_{group.name}"] = float(norm)
    return norms


def _optimizer_step(session: _Session) -> dict[str, float]:
    """Clip, step the optimizer, scheduler and EMA; returns the gradient norms before clipping."""
    accelerator = session.accelerator
    norms = _clip_groups(session)
    session.optimizer.step()
    session.optimizer.zero_grad(set_to_none=True)
    if accelerator.optimizer_step_was_skipped:  # fp16: the scaler found inf/nan gradients
        return norms
    session.scheduler.step()
    if session.ema is not None:
        session.ema.update(session.raw)
    return norms


def _train_step(session: _Session, step: int) -> dict[str, float]:
    """One optimizer step over grad_accum micro-batches; the micro-batch mean of each term."""
    meter = TermMeter()
    for _ in range(session.loop.grad_accum):
        meter.add(_micro_batch(session, step))
    if not session.accelerator.sync_gradients:
        raise RuntimeError("gradient accumulation out of step with accelerate")
    return {**meter.means(), **_optimizer_step(session)}


# ---------------------------------------------------------------------------------------------
# Logging, samples, checkpoints


def _log(session: _Session, meter: TermMeter, clock: dict[str, float]) -> dict[str, Any]:
    """Average the interval's terms over ranks, write metrics.jsonl, and return the record."""
    terms = mean_over_ranks(session.accelerator, meter.means())
    check_finite(session.step, terms)
    now = time.perf_counter()
    session.elapsed += now - clock["last"]
    items = meter.steps * session.items_per_step * session.accelerator.num_processes
    record = {
        "step": session.step,
        "lr": session.scheduler.get_last_lr()[0],
        **terms,
        "images_per_s": items / max(now - clock["last"], 1e-9),
        "elapsed": session.elapsed,
    }
    clock["last"] = now
    meter.reset()
    if session.main:
        append_metrics(session.run_dir, record)
    return record


def _training_state(session: _Session) -> dict[str, Any]:
    """Step, optimizer, scheduler, scaler and every rank's RNG states (a collective call)."""
    rng = gather_object([ckpt.capture_rng()])
    scaler = session.accelerator.scaler
    return {
        "step": session.step,
        "elapsed": session.elapsed,
        "items_per_rank": session.step * session.items_per_step,
        "optimizer": session.optimizer.state_dict(),
        "scheduler": session.scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": rng,
    }


def _content(session: _Session, state: dict[str, Any] | None) -> ckpt.CheckpointContent:
    world = session.accelerator.num_processes
    return ckpt.CheckpointContent(
        weights={name: module.state_dict() for name, module in session.raw.items()},
        ema=session.ema.state_dicts() if session.ema is not None else {},
        config=_run_config(session.task, session.loop, session.step, world),
        state=state,
    )


def _save_checkpoint(session: _Session) -> None:
    """RUN/checkpoints/step_NNNNNNN (rank 0 writes; every rank contributes its RNG state)."""
    state = _training_state(session)
    if session.main:
        target = session.run_dir / ckpt.CHECKPOINTS / ckpt.step_dir_name(session.step)
        ckpt.write_folder(target, _content(session, state))
        ckpt.prune_checkpoints(session.run_dir, session.loop.keep_checkpoints)
    session.accelerator.wait_for_everyone()


def _save_final(session: _Session) -> Path:
    final = session.run_dir / ckpt.FINAL
    if session.main:
        ckpt.write_folder(final, _content(session, None))
    session.accelerator.wait_for_everyone()
    return final


def _write_sample(session: _Session) -> None:
    if session.samples is None:
        return
    modules = session.ema.modules if session.ema is not None else session.raw
    autocast = session.accelerator.autocast()
    session.samples.write(modules, session.step, session.accelerator.device, autocast)


# ---------------------------------------------------------------------------------------------
# The loop


def _is_due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _run_steps(session: _Session, on_log: Callable[[dict], None] | None) -> dict[str, float]:
    loop, meter, last_terms = session.loop, TermMeter(), {}
    clock = {"last": time.perf_counter()}
    with make_progress(loop.steps, session.step, enabled=session.main) as progress:
        while session.step < loop.steps:
            session.step += 1
            meter.add(_train_step(session, session.step))
            progress.update(progress.task_ids[0], completed=session.step)
            if _is_due(session.step, loop.log_every) or session.step == loop.steps:
                record = _log(session, meter, clock)
                last_terms = {k: v for k, v in record.items() if k not in _NOT_TERMS}
                progress.update(progress.task_ids[0], status=status_text(record))
                if on_log is not None and session.main:
                    on_log(record)
            if _is_due(session.step, loop.sample_every) and session.main:
                _write_sample(session)
            if _is_due(session.step, loop.checkpoint_every) or session.step == loop.steps:
                _save_checkpoint(session)
    return last_terms


_NOT_TERMS = frozenset({"step", "lr", "images_per_s", "elapsed"})


def train(
    task: TrainTask,
    loop: LoopConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    on_log: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train `task`'s modules for `loop.steps` optimizer steps; write checkpoints and final/.

    `resume=True` continues `run_dir` from its latest checkpoint (step, weights, EMA, optimizer,
    scheduler, grad scaler, RNG states); the task config and the fixed loop fields (see
    `resume.LOOP_FIELDS_FIXED_ON_RESUME`) must match, while `steps` may grow. Without it,
    `run_dir` must be absent or empty. `on_log` gets each metrics record on rank 0.
    """
    run_dir = Path(run_dir)
    session = _open_run(task, loop, run_dir, resume)
    try:
        last_terms = _run_steps(session, on_log)
        final = _save_final(session)
    finally:
        if session.batches is not None:
            session.batches.close()  # shuts the loader workers down
    return TrainResult(run_dir, session.step, last_terms, final)
