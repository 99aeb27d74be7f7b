"""`drbfr restore`: restore the faces of whole photos (or aligned crops) into OUT.

Parses the options, builds the models, then hands everything to `pipeline.restore_images`;
this module only prints (progress, errors, --json lines, the summary) and sets the exit code.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from drbfr_cli.choices import Background, Metric, NoFace, OutputFormat, Precision, Sampler
from drbfr_cli.cli.common import (
    ERROR,
    EXIT_PARTIAL,
    NOTE,
    console,
    err_console,
    fail,
    parse_sampling,
    print_line,
    user_errors,
)
from drbfr_cli.faces.detect import DEFAULT_MAX_SIDE, DetectorKind
from drbfr_cli.imaging import max_pixels_from_env
from drbfr_cli.restore.background import DEFAULT_OVERLAP, DEFAULT_TILE

if TYPE_CHECKING:  # torch and the models load when the command runs
    from drbfr_cli.imaging import ImageSource
    from drbfr_cli.restore.options import RestoreOptions
    from drbfr_cli.restore.ranks import Rank
    from drbfr_cli.restore.report import ImageRecord, RunSummary
    from drbfr_cli.restore.tools import ToolChoices

RESTORE_METRICS = (Metric.NIQE, Metric.IDS)
"""Metrics restore can compute: no-reference, or against the input face (there is no ground
truth)."""

_DETECT = "Detection"
_MODEL = "Restoration model"
_OUTPUT = "Output"
_BACKGROUND = "Background"
_SCALE = "Scale-out"


class Engine(StrEnum):
    LOCAL = "local"
    RAY = "ray"


def restore(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders (recursive), glob patterns, or - to read paths from stdin."
        ),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    model: Annotated[
        str | None,
        typer.Option(
            help="Model bundle folder or name (default: drbfr-small, shipped with drbfr; a "
            "`default` bundle of your own in the bundle cache takes precedence); "
            "`identity` pastes the aligned crops back unchanged, to check detection, alignment "
            "and seams.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    weights_dir: Annotated[
        Path | None, typer.Option(help="Look here first for weight files and bundles.")
    ] = None,
    aligned: Annotated[
        bool,
        typer.Option(
            help="Inputs are faces already aligned to the FFHQ template (written at 512x512).",
            rich_help_panel=_DETECT,
        ),
    ] = False,
    detector: Annotated[
        DetectorKind | None,
        typer.Option(
            help="Face detector (default: retinaface when its weights are in a weights folder, "
            "else the first of retinaface-mobile, yunet found there, else retinaface, fetched).",
            show_default=False,
            rich_help_panel=_DETECT,
        ),
    ] = None,
    det_threshold: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Minimum detection score (default: 0.97 RetinaFace, 0.6 YuNet).",
            rich_help_panel=_DETECT,
        ),
    ] = None,
    det_retry: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="When no face reaches --det-threshold, take the faces scoring at least this "
            "(degraded photos score low; default: 0.6 RetinaFace, 0.4 YuNet; 0: no second look).",
            rich_help_panel=_DETECT,
        ),
    ] = None,
    no_face: Annotated[
        NoFace,
        typer.Option(
            help="An image with no face found: keep writes its upscaled background, skip writes "
            "nothing, fail writes nothing and counts it as failed (exit code 1); the report "
            "says no_face for keep and skip.",
            rich_help_panel=_DETECT,
        ),
    ] = NoFace.KEEP,
    det_size: Annotated[
        int,
        typer.Option(
            min=0,
            help="Detect on images downscaled to this longest side (0: their own size).",
            rich_help_panel=_DETECT,
        ),
    ] = DEFAULT_MAX_SIDE,
    min_face: Annotated[
        float,
        typer.Option(min=0.0, help="Ignore faces smaller than this (px).", rich_help_panel=_DETECT),
    ] = 0.0,
    max_faces: Annotated[
        int | None,
        typer.Option(
            min=1, help="Restore at most N faces, largest first.", rich_help_panel=_DETECT
        ),
    ] = None,
    only_center_face: Annotated[
        bool,
        typer.Option(help="Restore only the face nearest the centre.", rich_help_panel=_DETECT),
    ] = False,
    batch_size: Annotated[
        int,
        typer.Option(min=1, help="Faces per restorer call, across images.", rich_help_panel=_MODEL),
    ] = 4,
    device: Annotated[
        str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=_MODEL)
    ] = "auto",
    precision: Annotated[
        Precision,
        typer.Option(
            help="auto: fp16 on CUDA, fp32 elsewhere (bf16 on a CPU only where it has bf16 "
            "instructions).",
            rich_help_panel=_MODEL,
        ),
    ] = Precision.AUTO,
    sampler: Annotated[
        Sampler | None,
        typer.Option(help="Diffusion sampler (default: the bundle's).", rich_help_panel=_MODEL),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(min=1, help="Sampling steps (default: the bundle's).", rich_help_panel=_MODEL),
    ] = None,
    fidelity: Annotated[
        str | None,
        typer.Option(
            "--fidelity",
            help="Generation vs faithfulness in [0, 1] (CodeFormer's -w: 0 most generative, 1 "
            "most faithful): sets --start-t and --low-freq, which override it; auto: each "
            "face's from its estimated severity (light faces faithful, heavy ones generative; "
            "needs a bundle with a degradation head). Default: the bundle's sampling.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    start_t: Annotated[
        float | None,
        typer.Option(
            help="Truncated start in (0, 1]: 1 from noise, < 1 from the noised LQ (DiffBFR).",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    tem_t: Annotated[
        float | None,
        typer.Option(
            help="Texture pass strength in [0, 1) (DiffBFR TEM; 0: off).", rich_help_panel=_MODEL
        ),
    ] = None,
    guidance: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Guidance scale: eps_u + g (eps_c - eps_u); 1: conditional only (the default).",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Restorations averaged per face: higher PSNR, softer detail, N times the time "
            "(default: the bundle's).",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    low_freq: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Replace each restored face's frequencies below a Gaussian of this sigma (px of "
            "the 512 px face) by the input's, or by the fidelity network's output: undoes the "
            "shading and colour drift of latent sampling (default: the bundle's; 0: off).",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    fidelity_net: Annotated[
        bool | None,
        typer.Option(
            "--fidelity-net/--no-fidelity-net",
            help="Restore the output of the bundle's fidelity network F (a PSNR regressor) "
            "rather than the input itself, when the bundle has one (default: on).",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    fidelity_flip: Annotated[
        bool | None,
        typer.Option(
            "--fidelity-flip/--no-fidelity-flip",
            help="Average F's output with the mirror of F of the mirrored face (one more F call "
            "per face, a little higher PSNR; default: the bundle's, on).",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Run seed; each face's seed derives from it and its image path.")
    ] = 0,
    upscale: Annotated[
        float,
        typer.Option(min=0.01, help="Output scale of whole images.", rich_help_panel=_BACKGROUND),
    ] = 2.0,
    bg_upsampler: Annotated[
        Background,
        typer.Option(
            help="auto: Lanczos on a CPU (with a note estimating what Real-ESRGAN would take), "
            "elsewhere Real-ESRGAN when its weights are present, else Lanczos; realesrgan: "
            "Real-ESRGAN on any device; none: a plain bilinear resize.",
            rich_help_panel=_BACKGROUND,
        ),
    ] = Background.AUTO,
    bg_model: Annotated[
        Path | None,
        typer.Option(
            help="Any single-image super-resolution model file spandrel loads (.pth, .pt, "
            ".safetensors: Real-ESRGAN, SwinIR, ...) for the background, instead of the "
            "registry's Real-ESRGAN; run at its own scale and resized to --upscale.",
            rich_help_panel=_BACKGROUND,
        ),
    ] = None,
    bg_tile: Annotated[
        int,
        typer.Option(
            min=0,
            help="Background network tile side in input pixels (0: whole image).",
            rich_help_panel=_BACKGROUND,
        ),
    ] = DEFAULT_TILE,
    bg_overlap: Annotated[
        int,
        typer.Option(
            min=0,
            help="Context pixels around each background tile (more: smaller seams, slower).",
            rich_help_panel=_BACKGROUND,
        ),
    ] = DEFAULT_OVERLAP,
    color_fix: Annotated[
        bool,
        typer.Option(
            help="Match each restored face's colours to the input face.",
            rich_help_panel=_BACKGROUND,
        ),
    ] = False,
    save_faces: Annotated[
        bool,
        typer.Option(
            help="Also write cropped_faces/, restored_faces/ and cmp/ (side by side).",
            rich_help_panel=_OUTPUT,
        ),
    ] = False,
    ext: Annotated[
        OutputFormat, typer.Option(help="Output format.", rich_help_panel=_OUTPUT)
    ] = OutputFormat.SAME,
    suffix: Annotated[
        str, typer.Option(help="Appended to output file names.", rich_help_panel=_OUTPUT)
    ] = "",
    quality: Annotated[
        int, typer.Option(min=1, max=100, help="JPEG/WebP quality.", rich_help_panel=_OUTPUT)
    ] = 95,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Redo images whose output exists (default: skip them).", rich_help_panel=_OUTPUT
        ),
    ] = False,
    metrics: Annotated[
        str | None,
        typer.Option(
            help="Comma list: niqe scores each input face and its restoration; ids the identity "
            "distance of each restored face to its input face (needs drbfr[identity]).",
            rich_help_panel=_OUTPUT,
        ),
    ] = None,
    report_csv: Annotated[
        Path | None,
        typer.Option(help="Also write the per-image report as CSV.", rich_help_panel=_OUTPUT),
    ] = None,
    gallery: Annotated[
        bool,
        typer.Option(
            help="Write OUT/index.html: a before/after page per 200 images, opened from disk.",
            rich_help_panel=_OUTPUT,
        ),
    ] = True,
    json_lines: Annotated[
        bool,
        typer.Option(
            "--json", help="Print one JSON line per image on stdout.", rich_help_panel=_OUTPUT
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Print errors only.", rich_help_panel=_OUTPUT),
    ] = False,
    max_pixels: Annotated[
        int, typer.Option(help="Refuse larger images (decompression-bomb guard).")
    ] = max_pixels_from_env(),
    skip_clean: Annotated[
        str | None,
        typer.Option(
            "--skip-clean",
            metavar="T",
            help="Paste faces whose estimated severity (0-1, drbfr inspect) is below T back "
            "untouched; the report counts them as clean (needs a bundle with a degradation head).",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    max_memory: Annotated[
        str,
        typer.Option(
            help="Memory one image may need (estimated from its size and --upscale before it is "
            "decoded); a larger image fails alone. auto: the memory available at the start; "
            "none: no limit; or a size such as 12G.",
        ),
    ] = "auto",
    engine: Annotated[
        Engine,
        typer.Option(
            help="local: this process (one shard of the inputs per rank under torchrun); ray: "
            "a Ray Data pipeline (needs drbfr[ray]).",
            rich_help_panel=_SCALE,
        ),
    ] = Engine.LOCAL,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to run on (default: a local runtime with 2 CPUs).",
            rich_help_panel=_SCALE,
        ),
    ] = None,
) -> None:
    """Restore every face of the input images; write OUT/restored_imgs/, OUT/report.json and
    OUT/index.html (before/after gallery).

    Finished outputs are skipped, so an interrupted run resumes with the same command. The exit
    code is 0 when every image succeeded, 1 when some failed (each is reported), 2 for unusable
    options, inputs, weights or output folders.
    """
    from drbfr_cli.faces.detect import DetectOptions

    chosen = parse_restore_metrics(metrics)
    sampling, fidelity_auto = parse_sampling(
        fidelity, sampler=sampler, steps=steps, start_t=start_t, tem_t=tem_t,
        guidance_scale=guidance, samples=samples, low_freq_sigma=low_freq,
        use_fidelity=fidelity_net, fidelity_flip=fidelity_flip,
    )  # fmt: skip
    budget = _memory_budget(max_memory, upscale, max_pixels)
    options = _restore_options(
        out_dir=out,
        aligned=aligned,
        detect=DetectOptions(
            threshold=det_threshold,
            retry_threshold=det_retry,
            min_face=min_face,
            max_faces=max_faces,
            only_center_face=only_center_face,
            max_side=det_size or None,
        ),
        batch_size=batch_size,
        seed=seed,
        upscale=upscale,
        color_fix=color_fix,
        save_faces=save_faces,
        ext=ext,
        suffix=suffix,
        quality=quality,
        overwrite=overwrite,
        max_pixels=max_pixels,
        niqe=Metric.NIQE in chosen,
        identity=Metric.IDS in chosen,
        report_csv=report_csv,
        max_memory=budget,
        no_face=no_face,
        skip_clean=parse_skip_clean(skip_clean),
    )
    with user_errors():
        from drbfr_cli.devices import check_precision, resolve_device
        from drbfr_cli.restore.ranks import rank_device, rank_from_env

        rank = rank_from_env()
        if engine is Engine.RAY and rank.sharded:
            raise fail("--engine ray runs alone: start it once, not under torchrun")
        if ray_address is not None and engine is not Engine.RAY:
            raise fail("--ray-address needs --engine ray")
        if options.skip_clean is not None and engine is Engine.RAY:
            raise fail("--skip-clean runs with --engine local only")
        chosen_device = resolve_device(rank_device(device, rank))
        check_precision(precision, chosen_device)  # before the models' code is even imported
        from drbfr_cli.gallery.page import check_targets
        from drbfr_cli.restore.run import check_output
        from drbfr_cli.restore.tools import ToolChoices, check_bg_model, check_tools

        check_output(options)
        if gallery:
            check_targets(options.out_dir)
        choices = ToolChoices(
            model=model,
            device=str(chosen_device),
            precision=precision,
            sampling=sampling,
            fidelity_auto=fidelity_auto,
            weights_dir=weights_dir,
            detector=detector,
            background=bg_upsampler,
            bg_model=bg_model,
            bg_tile=bg_tile,
            bg_overlap=bg_overlap,
        )
        check_bg_model(choices)
        printer = _Printer(quiet=quiet, json_lines=json_lines, rank=rank)
        choices = check_tools(options, choices, printer.notice)
        finished = _Finished(options.out_dir, gallery, printer.notice)
        if engine is Engine.RAY:
            _run_ray(inputs, options, choices, printer, device, ray_address, finished)
        else:
            _run(inputs, options, choices, printer, rank, finished)


def _memory_budget(max_memory: str, upscale: float, max_pixels: int) -> int | None:
    """--max-memory in bytes (None: no limit), after refusing an absurd --upscale or
    --max-pixels (one line)."""
    from drbfr_cli.restore.memory import MAX_UPSCALE, parse_memory

    if upscale > MAX_UPSCALE:
        raise fail(f"--upscale {upscale:g} is over the maximum of {MAX_UPSCALE:g}")
    if max_pixels < 1:
        raise fail(f"--max-pixels {max_pixels}: every image would fail; give at least 1")
    with user_errors():
        return parse_memory(max_memory)


def parse_skip_clean(text: str | None) -> float | None:
    """--skip-clean T as a severity in [0, 1] (None when not given); one-line error, exit 2."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise fail(f"--skip-clean takes a severity in [0, 1], got {text!r}")
    return value


def _restore_options(**values: Any) -> RestoreOptions:
    from drbfr_cli.restore.options import RestoreOptions

    try:
        return RestoreOptions(**values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def parse_restore_metrics(text: str | None) -> tuple[Metric, ...]:
    """'niqe,ids' -> (Metric.NIQE, Metric.IDS); restore has no ground truth to compare with."""
    names = [name.strip().lower() for name in (text or "").split(",") if name.strip()]
    allowed = {metric.value: metric for metric in RESTORE_METRICS}
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise typer.BadParameter(
            f"restore computes {', '.join(allowed)} only (no ground truth here; use "
            f"`drbfr eval` for {', '.join(unknown)})"
        )
    return tuple(dict.fromkeys(allowed[name] for name in names))


# --------------------------------------------------------------------------- the run


@dataclass
class _Finished:
    """The run's on_finish: once report.json holds every image, writes OUT/index.html from it
    (with --gallery) and keeps the report's totals (the merged ones when sharded)."""

    out_dir: Path
    gallery: bool
    notice: Callable[[str], None]
    summary: RunSummary | None = None

    def __call__(self, summary: RunSummary) -> None:
        if self.gallery:
            from drbfr_cli.gallery.restore import write_run_gallery

            write_run_gallery(self.out_dir, self.notice)
        self.summary = summary


def _run(
    arguments: list[str],
    options: RestoreOptions,
    choices: ToolChoices,
    printer: _Printer,
    rank: Rank,
    finished: _Finished,
) -> None:
    """Find the inputs, build the models, restore, print the summary, set the exit code. A
    sharded rank restores its shard; the one that merges the report also prints its summary."""
    import cv2

    from drbfr_cli.restore.run import restore_images
    from drbfr_cli.restore.tools import build_tools

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # no DNN backend chatter
    sources = _find_sources(arguments, options.out_dir, printer.notice)
    if rank.sharded:
        options = replace(options, rank=rank.rank)
    tools, settings = build_tools(
        options, choices, printer.notice, _megapixels(sources, options, choices)
    )
    shard = sum(rank.takes(s.relative.as_posix()) for s in sources) if rank.sharded else None
    with printer.progress(len(sources) if shard is None else shard) as on_record:
        summary = restore_images(
            sources,
            options,
            tools,
            settings=settings,
            on_record=on_record,
            on_notice=printer.notice,
            rank=rank,
            on_finish=finished,
        )
    if rank.sharded:
        printer.shard_done(summary)
    # Only the merging rank (the last) reports failures in its exit code: a launcher stops
    # every rank when one exits non-zero, and the others may still be working.
    summary = finished.summary
    if summary is not None:
        printer.summary(summary, options.out_dir)
    if summary is not None and summary.failed:
        raise typer.Exit(EXIT_PARTIAL)


def _run_ray(
    arguments: list[str],
    options: RestoreOptions,
    choices: ToolChoices,
    printer: _Printer,
    device: str,
    address: str | None,
    finished: _Finished,
) -> None:
    """--engine ray: the models are built here once (checks, settings), then in the workers."""
    import cv2

    from drbfr_cli.restore.ray_engine import import_ray, restore_images_ray
    from drbfr_cli.restore.tools import build_tools, resolve_background

    import_ray()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    sources = _find_sources(arguments, options.out_dir, printer.notice)
    # The workers upscale backgrounds on their CPUs: `auto` is decided for a CPU, once, here.
    on_cpu = replace(choices, device="cpu")
    megapixels = _megapixels(sources, options, on_cpu)
    background = resolve_background(on_cpu, options.upscale, printer.notice, megapixels)
    choices = replace(choices, background=background)
    settings = build_tools(options, choices, printer.notice)[1]
    with printer.progress(len(sources)) as on_record:
        summary = restore_images_ray(
            sources,
            options,
            replace(choices, device=device),
            settings,
            address=address,
            on_record=on_record,
            on_notice=printer.notice,
            on_finish=finished,
        )
    printer.summary(summary, options.out_dir)
    if summary.failed:
        raise typer.Exit(EXIT_PARTIAL)


def _megapixels(
    sources: list[ImageSource], options: RestoreOptions, choices: ToolChoices
) -> float | None:
    """Megapixels of the inputs, for the note of `--bg-upsampler auto` on a CPU (None where
    there is no such note)."""
    from drbfr_cli.restore.tools import input_megapixels

    if options.aligned or choices.background is not Background.AUTO or choices.device != "cpu":
        return None
    return input_megapixels([source.path for source in sources])


def _find_sources(
    arguments: list[str], out_dir: Path, notice: Callable[[str], None]
) -> list[ImageSource]:
    """The images to restore, in a fixed order (imaging.find_sources), with a notice naming
    the folders of earlier drbfr output that were not searched; no image at all is a
    one-line error (exit code 2)."""
    from drbfr_cli.imaging import STDIN_ARGUMENT, find_sources
    from drbfr_cli.restore.run import excluded_inputs

    stdin = sys.stdin if STDIN_ARGUMENT in arguments else ()
    skipped: list[Path] = []
    sources = find_sources(
        arguments, stdin, exclude=excluded_inputs(out_dir), on_skip=skipped.append
    )
    if skipped:
        notice(
            f"not searched: {len(skipped)} folder(s) of earlier drbfr output ({skipped[0]}"
            f"{', ...' if len(skipped) > 1 else ''}); name one to restore its images"
        )
    if not sources:
        where = ", ".join("stdin" if a == STDIN_ARGUMENT else a for a in arguments)
        raise fail(f"no images found in {where}")
    _note_first_frames(sources, notice)
    return sources


def _note_first_frames(sources: list[ImageSource], notice: Callable[[str], None]) -> None:
    """One note when GIFs are among the inputs: only their first frame is restored."""
    from drbfr_cli.imaging import FIRST_FRAME_EXTENSIONS

    count = sum(source.path.suffix.lower() in FIRST_FRAME_EXTENSIONS for source in sources)
    if count:
        notice(
            f"{count} GIF input(s): each is restored from its first frame (an animation's "
            "other frames are dropped) and written as PNG"
        )


# --------------------------------------------------------------------------- printing


class _Printer:
    """Progress bar, notices, per-image errors, --json lines and the summary table."""

    def __init__(self, *, quiet: bool, json_lines: bool, rank: Rank | None = None) -> None:
        self.quiet, self.json_lines = quiet, json_lines
        self._console = err_console if json_lines else console
        self._prefix = f"{rank.label}: " if rank is not None and rank.sharded else ""
        self.bar = rank is None or rank.local_rank == 0
        """Show the progress bar (one per machine when sharded: local rank 0's)."""

    def notice(self, message: str) -> None:
        if not self.quiet:
            print_line(err_console, NOTE, f"{self._prefix}{message}")

    def shard_done(self, summary: RunSummary) -> None:
        """A rank's one-line account of its shard."""
        if not self.quiet:
            err_console.print(
                f"{self._prefix}{summary.restored} restored, {summary.no_face} no face, "
                f"{summary.skipped} skipped, "
                f"{summary.failed} failed, {summary.faces_restored} faces in "
                f"{summary.seconds:.1f} s",
                highlight=False,
                soft_wrap=True,
            )

    def progress(self, total: int) -> _ProgressContext:
        return _ProgressContext(self, total)

    def record(self, record: ImageRecord, progress: Progress) -> None:
        if record.error:
            print_line(progress.console, ERROR, record.error)
        elif record.status == "no_face" and not self.quiet:
            print_line(progress.console, NO_FACE_LABEL, record.input)
        if self.json_lines:
            sys.stdout.write(json.dumps(record.to_dict()) + "\n")
            sys.stdout.flush()

    def summary(self, summary: RunSummary, out: Path) -> None:
        if self.quiet:
            return
        table = Table(
            title=f"drbfr restore: {summary.images} images in {summary.seconds:.1f} s",
            show_header=False,
            show_edge=False,
        )
        table.add_column(justify="left")
        table.add_column(justify="right")
        rows = [
            ("restored", summary.restored),
            ("no face found", summary.no_face),
            ("skipped (finished before)", summary.skipped),
            ("failed", summary.failed),
            ("faces restored", summary.faces_restored),
            ("faces / s", f"{summary.faces_per_second:.2f}"),
        ]
        if summary.faces != summary.faces_restored + summary.faces_clean:
            rows.insert(4, ("faces in the report (with skipped images)", summary.faces))
        if summary.faces_clean:
            rows.insert(-1, ("faces kept as they were (--skip-clean)", summary.faces_clean))
        if summary.niqe_means is not None:
            before, after = summary.niqe_means
            rows.append(("mean NIQE input -> restored", f"{before:.3f} -> {after:.3f}"))
        if summary.identity_mean is not None:
            rows.append(("mean identity distance to input", f"{summary.identity_mean:.3f}"))
        if summary.identity_failed:
            rows.append(("faces identity could not embed", summary.identity_failed))
        for label, value in rows:
            table.add_row(label, str(value))
        self._console.print(table)
        if summary.no_face:
            print_line(self._console, "hint:", no_face_hint(summary.no_face))
        print_line(self._console, "report:", out / "report.json")
        if (out / "index.html").is_file():
            print_line(self._console, "gallery:", out / "index.html")


NO_FACE_LABEL = "[yellow]no face:[/]"


def no_face_hint(count: int) -> str:
    """The one line printed under the summary when images had no face found."""
    from drbfr_cli.restore.prepare import NO_FACE_HINT

    return f"no face found in {count} image(s): {NO_FACE_HINT} (--no-face says what is written)"


class _ProgressContext:
    """A rich progress bar on stderr (images, faces, faces/s, ETA); off when quiet or piped."""

    def __init__(self, printer: _Printer, total: int) -> None:
        columns = (
            TextColumn("restoring"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[faces]} faces, {task.fields[rate]:.2f} faces/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        disable = printer.quiet or not printer.bar or not err_console.is_terminal
        self._printer = printer
        self._progress = Progress(*columns, console=err_console, transient=True, disable=disable)
        self._task = self._progress.add_task("restore", total=total, faces=0, rate=0.0)
        self._faces = 0

    def __enter__(self) -> Callable[[ImageRecord], None]:
        self._progress.__enter__()
        return self._on_record

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def _on_record(self, record: ImageRecord) -> None:
        self._printer.record(record, self._progress)
        if record.status == "ok":
            self._faces += len(record.faces)
        elapsed = self._progress.tasks[0].elapsed or 0.0
        rate = self._faces / elapsed if elapsed > 0 else 0.0
        self._progress.update(self._task, advance=1, faces=self._faces, rate=rate)
