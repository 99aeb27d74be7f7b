"""`drbfr bench restore|train`: speed and memory benchmarks, printed as tables and written as
JSON (and Markdown). The measuring lives in drbfr_cli.benchmark; torch loads when a command
runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from drbfr_cli.choices import Background, Precision, Sampler
from drbfr_cli.cli.common import console, count_progress, err_console, user_errors
from drbfr_cli.faces.detect import DetectorKind

app = typer.Typer(
    help="Benchmarks: faces/s, per-stage times and peak memory of restoration, and of one "
    "training step per stage.",
    no_args_is_help=True,
)

_MODEL = "Model and device"
_WHAT = "What to measure"
_INPUTS = "Inputs"
_OUTPUT = "Output"

OutOption = Annotated[
    Path | None,
    typer.Option("-o", "--out", help="Write the results as JSON here.", rich_help_panel=_OUTPUT),
]
MarkdownOption = Annotated[
    Path | None,
    typer.Option(help="Also write the tables as Markdown here.", rich_help_panel=_OUTPUT),
]
QuietOption = Annotated[
    bool, typer.Option(help="Print no tables or progress.", rich_help_panel=_OUTPUT)
]
PresetOption = Annotated[
    str,
    typer.Option(
        help="Model preset: tiny, base or paper (random weights).", rich_help_panel=_MODEL
    ),
]
DeviceOption = Annotated[
    str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=_MODEL)
]
RepeatsOption = Annotated[
    int,
    typer.Option(
        min=1, help="Measured runs of each case (the median is reported).", rich_help_panel=_WHAT
    ),
]
WarmupOption = Annotated[
    int, typer.Option(min=0, help="Unmeasured runs of each case first.", rich_help_panel=_WHAT)
]


def _numbers(text: str, name: str, kind: type) -> tuple:
    try:
        values = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"{name} expects a comma list of numbers, got {text!r}") from None
    if not values:
        raise typer.BadParameter(f"{name} needs at least one value")
    return values


def _switches(text: str, name: str) -> tuple[bool, ...]:
    words = {"on": True, "off": False}
    parts = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not parts or any(part not in words for part in parts):
        raise typer.BadParameter(f"{name} expects a comma list of on, off; got {text!r}")
    return tuple(words[part] for part in parts)


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip() and part != "none")


def _finish(
    result: dict[str, Any],
    tables: list,
    out: Path | None,
    markdown: Path | None,
    quiet: bool,
    started: float,
) -> None:
    from drbfr_cli.benchmark.report import to_markdown, to_rich
    from drbfr_cli.imaging import write_bytes_atomic

    result["seconds"] = time.perf_counter() - started
    for path in (out, markdown):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    if out is not None:
        write_bytes_atomic(out, (json.dumps(result, indent=2) + "\n").encode())
    if markdown is not None:
        write_bytes_atomic(markdown, to_markdown(tables).encode())
    if not quiet:
        for table in tables:
            console.print(to_rich(table))
        console.print(
            f"benchmark took {result['seconds']:.0f} s" + (f"; results: {out}" if out else "")
        )


def _notice(quiet: bool):
    start = time.perf_counter()

    def say(message: str) -> None:
        if not quiet:
            err_console.print(
                f"[dim]{time.perf_counter() - start:7.1f} s[/] {message}", highlight=False
            )

    return say


@contextmanager
def _progress_bar(quiet: bool) -> Iterator[Callable[[int, int, str], None] | None]:
    """A progress bar over the benchmark's phases on stderr (none when quiet)."""
    from rich.progress import TextColumn

    if quiet:
        yield None
        return
    with count_progress("bench", TextColumn("{task.description}"), remaining=False) as bar:
        task = bar.add_task("starting", total=None)

        def update(done: int, total: int, phase: str) -> None:
            bar.update(task, completed=done, total=total, description=phase)

        yield update


@app.command("restore")
def bench_restore(
    ctx: typer.Context,
    preset: PresetOption = "tiny",
    model: Annotated[
        str | None,
        typer.Option(
            help="Bench a trained bundle (folder or name) instead of random weights.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    device: DeviceOption = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="Comma list of auto, fp32, fp16, bf16 (auto: fp32 on the CPU, fp16 and "
            "bf16 on CUDA).",
            rich_help_panel=_MODEL,
        ),
    ] = "auto",
    full: Annotated[
        bool,
        typer.Option(
            help="Every case: batch sizes 1,2,4,8, 8 faces, 3 repeats, image sides 512,1024,2048, "
            "face counts 1,2,4,8, 2 copies (tens of minutes on a 2-core CPU). Without it: 1,4, "
            "4 faces, 1 repeat, 512,1024, 1,4, 1 copy (minutes). Options given win.",
            rich_help_panel=_WHAT,
        ),
    ] = False,
    batch_sizes: Annotated[
        str | None,
        typer.Option(help="Comma list of faces per restorer call.", rich_help_panel=_WHAT),
    ] = None,
    steps: Annotated[
        str | None,
        typer.Option(
            help="Comma list of sampling step counts (default: the model's).",
            rich_help_panel=_WHAT,
        ),
    ] = None,
    start_t: Annotated[
        str | None,
        typer.Option(
            help="Comma list of truncated starts in (0, 1] (1: from noise; default: the model's).",
            rich_help_panel=_WHAT,
        ),
    ] = None,
    samples: Annotated[
        str | None,
        typer.Option(
            help="Comma list of averaged samples per face (default: the model's).",
            rich_help_panel=_WHAT,
        ),
    ] = None,
    flip: Annotated[
        str | None,
        typer.Option(
            help="Comma list of on, off: F's flip ensemble (default: the model's).",
            rich_help_panel=_WHAT,
        ),
    ] = None,
    profile: Annotated[
        bool,
        typer.Option(
            help="Time each network of one face's restoration at each sampling.",
            rich_help_panel=_WHAT,
        ),
    ] = True,
    sampler: Annotated[
        Sampler | None, typer.Option(help="Sampler (default: the model's).", rich_help_panel=_WHAT)
    ] = None,
    faces: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Faces per restorer pass (at least the largest batch).",
            rich_help_panel=_WHAT,
        ),
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Measured runs of each case (the median is reported).",
            rich_help_panel=_WHAT,
        ),
    ] = None,
    warmup: Annotated[
        int | None,
        typer.Option(min=0, help="Unmeasured runs of each case first.", rich_help_panel=_WHAT),
    ] = None,
    calls_only: Annotated[
        bool,
        typer.Option(
            help="Time single calls of each model stage and extrapolate a restoration "
            "(no sampling loop, restorer or whole runs): large presets on a CPU.",
            rich_help_panel=_WHAT,
        ),
    ] = False,
    pipeline: Annotated[
        bool,
        typer.Option(
            help="Time the stages around the model and whole restore runs.", rich_help_panel=_WHAT
        ),
    ] = True,
    scaling: Annotated[
        bool,
        typer.Option(
            help="Whole runs by image size and by faces per image.", rich_help_panel=_WHAT
        ),
    ] = True,
    image_sides: Annotated[
        str | None,
        typer.Option(help="Longest sides of the image-size runs.", rich_help_panel=_WHAT),
    ] = None,
    face_counts: Annotated[
        str | None,
        typer.Option(help="Faces per image of the face-count runs.", rich_help_panel=_WHAT),
    ] = None,
    copies: Annotated[
        int | None, typer.Option(min=1, help="Images per scaling run.", rich_help_panel=_WHAT)
    ] = None,
    run_repeats: Annotated[
        int,
        typer.Option(min=1, help="Whole restore runs per case (median).", rich_help_panel=_WHAT),
    ] = 1,
    photos: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="Whole photos (needs the detector's weights); default: synthetic aligned images.",
            rich_help_panel=_INPUTS,
        ),
    ] = None,
    aligned_faces: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="Aligned face crops: the model's inputs (and the pipeline's, without --photos).",
            rich_help_panel=_INPUTS,
        ),
    ] = None,
    max_images: Annotated[
        int | None, typer.Option(min=1, help="Use at most N input images.", rich_help_panel=_INPUTS)
    ] = None,
    detector: Annotated[
        DetectorKind, typer.Option(help="Face detector for --photos.", rich_help_panel=_INPUTS)
    ] = DetectorKind.YUNET,
    weights_dir: Annotated[
        Path | None,
        typer.Option(help="Look here first for weight files and bundles.", rich_help_panel=_INPUTS),
    ] = None,
    bg_upsampler: Annotated[
        Background,
        typer.Option(
            help="Background of whole photos; realesrgan: the release network, random weights.",
            rich_help_panel=_INPUTS,
        ),
    ] = Background.LANCZOS,
    seed: Annotated[int, typer.Option(help="Seed of random weights and inputs.")] = 0,
    out: OutOption = None,
    markdown: MarkdownOption = None,
    quiet: QuietOption = False,
) -> None:
    """Faces/s, per-stage times and peak memory of restoration, with the one-face loop measured
    in the same run. A few minutes on a 2-core CPU by default; --full measures every case.
    The checkout's bench/restore adds the GFPGAN and CodeFormer architectures as peers."""
    started = time.perf_counter()
    try:
        precisions = tuple(Precision(p) for p in _names(precision))
    except ValueError:
        raise typer.BadParameter(
            f"--precision takes auto, fp32, fp16, bf16; got {precision!r}"
        ) from None
    from drbfr_cli.benchmark.restore import (
        FULL,
        QUICK,
        RestoreBenchConfig,
        RestorePeers,
        run_restore_bench,
    )
    from drbfr_cli.benchmark.restore_report import restore_tables

    lists = {"batch_sizes": batch_sizes, "image_sides": image_sides, "face_counts": face_counts}
    given = {k: None if v is None else _numbers(v, f"--{k.replace('_', '-')}", int)
             for k, v in lists.items()}  # fmt: skip
    given |= {"faces": faces, "repeats": repeats, "warmup": warmup, "copies": copies}
    base = FULL if full else QUICK
    chosen = {key: base[key] if value is None else value for key, value in given.items()}
    with user_errors():
        try:
            config = RestoreBenchConfig(
                **chosen,
                preset=preset,
                model=model,
                device=device,
                precisions=precisions,
                steps=() if steps is None else _numbers(steps, "--steps", int),
                start_ts=() if start_t is None else _numbers(start_t, "--start-t", float),
                samples=() if samples is None else _numbers(samples, "--samples", int),
                flips=() if flip is None else _switches(flip, "--flip"),
                profile=profile,
                sampler=sampler,
                calls_only=calls_only,
                photos=photos,
                aligned_faces=aligned_faces,
                max_images=max_images,
                detector=detector,
                weights_dir=weights_dir,
                background=bg_upsampler,
                pipeline=pipeline,
                scaling=scaling,
                run_repeats=run_repeats,
                seed=seed,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        peers = ctx.obj if isinstance(ctx.obj, RestorePeers) else None  # from bench/restore
        with _progress_bar(quiet) as progress:
            result = run_restore_bench(config, _notice(quiet), progress, peers)
    tables = restore_tables(result, peers.tables if peers is not None else None)
    _finish(result, tables, out, markdown, quiet, started)


@app.command("train")
def bench_train(
    preset: PresetOption = "tiny",
    stages: Annotated[
        str, typer.Option(help="Comma list of drm, vae, ldm.", rich_help_panel=_WHAT)
    ] = "drm,vae,ldm",
    batch_sizes: Annotated[
        str,
        typer.Option(
            help="Comma list of batch sizes (the DRM's are at least 2).", rich_help_panel=_WHAT
        ),
    ] = "8",
    device: DeviceOption = "auto",
    mixed_precision: Annotated[
        str,
        typer.Option(
            help="Comma list of auto, no, fp16, bf16 (auto: no on the CPU, fp16 and bf16 on CUDA).",
            rich_help_panel=_MODEL,
        ),
    ] = "auto",
    repeats: RepeatsOption = 3,
    warmup: WarmupOption = 1,
    data: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="HQ faces to make batches from (default: synthetic pictures).",
            rich_help_panel=_INPUTS,
        ),
    ] = None,
    weights_dir: Annotated[
        Path | None,
        typer.Option(help="Where LPIPS's VGG16 weights are looked up.", rich_help_panel=_INPUTS),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of random weights and data.")] = 0,
    loop_steps: Annotated[
        int,
        typer.Option(
            min=0,
            help="Also run the real ldm training loop this many steps per --pair-reuse value "
            "(loader worker and encoding included) and report its steady items/s.",
            rich_help_panel=_WHAT,
        ),
    ] = 0,
    pair_reuse: Annotated[
        str,
        typer.Option(
            help="Comma list of items per encoded pair for the loop runs (1: no replay pool).",
            rich_help_panel=_WHAT,
        ),
    ] = "1",
    workers: Annotated[
        int | None,
        typer.Option(min=0, help="Loader workers of the loop runs (default: the preset's)."),
    ] = None,
    out: OutOption = None,
    markdown: MarkdownOption = None,
    quiet: QuietOption = False,
) -> None:
    """Items/s and peak memory of one optimizer step of each training stage (random weights);
    with --loop-steps also the real ldm loop's items/s."""
    started = time.perf_counter()
    from drbfr_cli.benchmark.report import train_tables
    from drbfr_cli.benchmark.train import TrainBenchConfig, run_train_bench

    with user_errors():
        try:
            config = TrainBenchConfig(
                preset=preset,
                stages=_names(stages),
                batch_sizes=_numbers(batch_sizes, "--batch-sizes", int),
                device=device,
                precisions=_names(mixed_precision),
                repeats=repeats,
                warmup=warmup,
                data=data,
                weights_dir=weights_dir,
                seed=seed,
                loop_steps=loop_steps,
                pair_reuse=_numbers(pair_reuse, "--pair-reuse", int),
                workers=workers,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        result = run_train_bench(config, notice=_notice(quiet))
    _finish(result, train_tables(result), out, markdown, quiet, started)


@app.command("flops")
def bench_flops(
    presets: Annotated[
        str, typer.Option(help="Comma list of presets.", rich_help_panel=_WHAT)
    ] = "tiny,small,base,paper",
    gpus: Annotated[int, typer.Option(min=1, help="GPUs of the projected run.")] = 8,
    peak_tflops: Annotated[
        float, typer.Option(min=0.001, help="Peak FLOP/s per GPU, in TFLOP/s (H100 bf16 dense).")
    ] = 989.0,
    utilisation: Annotated[
        float, typer.Option(min=0.001, max=1.0, help="Sustained fraction of the peak.")
    ] = 0.4,
    out: OutOption = None,
) -> None:
    """FLOPs of one training item of each stage (counted on shapes, nothing computed) and the
    projected wall time of each preset's full run: steps x batch x GPUs items."""
    from drbfr_cli.benchmark.flops import flops_markdown, flops_rows
    from drbfr_cli.imaging import write_bytes_atomic

    with user_errors():
        rows = flops_rows(
            _names(presets), gpus=gpus, peak=peak_tflops * 1e12, utilisation=utilisation
        )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(out, (json.dumps(rows, indent=2) + "\n").encode())
    console.print(flops_markdown(rows), highlight=False, soft_wrap=True)
    console.print(
        f"hours = items x FLOP/item / ({gpus} GPUs x {peak_tflops:g} TFLOP/s x {utilisation:g})",
        highlight=False,
    )
