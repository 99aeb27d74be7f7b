"""`drbfr restore`: restore the faces of whole photos (or aligned crops) into OUT.

Parses the options (declared and checked in restore_options.py), builds the models, then hands
everything to `restore.run.restore_images`; this module only prints (progress, errors, --json
lines, the summary), writes the gallery when the report is complete, and sets the exit code.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from drbfr_cli.choices import Background, Metric, NoFace, OutputFormat, Precision
from drbfr_cli.cli import detect_options as detection
from drbfr_cli.cli import restore_options as opts
from drbfr_cli.cli.common import (
    ERROR,
    EXIT_PARTIAL,
    NOTE,
    console,
    count_progress,
    err_console,
    fail,
    parse_sampling,
    print_line,
    user_errors,
)
from drbfr_cli.faces.detect import DEFAULT_MAX_SIDE
from drbfr_cli.imaging import max_pixels_from_env
from drbfr_cli.restore.background import DEFAULT_OVERLAP, DEFAULT_TILE

if TYPE_CHECKING:  # torch and the models load when the command runs
    from drbfr_cli.imaging import ImageSource
    from drbfr_cli.restore.options import RestoreOptions
    from drbfr_cli.restore.ranks import Rank
    from drbfr_cli.restore.report import ImageRecord, RunSummary
    from drbfr_cli.restore.tools import ToolChoices


def restore(
    inputs: opts.InputsArgument,
    out: opts.OutOption,
    model: opts.ModelOption = None,
    weights_dir: opts.WeightsDirOption = None,
    aligned: opts.AlignedOption = False,
    detector: detection.DetectorOption = None,
    det_threshold: detection.DetThresholdOption = None,
    det_retry: detection.DetRetryOption = None,
    no_face: opts.NoFaceOption = NoFace.KEEP,
    det_size: detection.DetSizeOption = DEFAULT_MAX_SIDE,
    min_face: detection.MinFaceOption = 0.0,
    max_faces: detection.MaxFacesOption = None,
    only_center_face: detection.OnlyCenterFaceOption = False,
    batch_size: opts.BatchSizeOption = 4,
    device: opts.DeviceOption = "auto",
    precision: opts.PrecisionOption = Precision.AUTO,
    sampler: opts.SamplerOption = None,
    steps: opts.StepsOption = None,
    fidelity: opts.FidelityOption = None,
    start_t: opts.StartTOption = None,
    tem_t: opts.TemTOption = None,
    guidance: opts.GuidanceOption = None,
    samples: opts.SamplesOption = None,
    low_freq: opts.LowFreqOption = None,
    fidelity_net: opts.FidelityNetOption = None,
    fidelity_flip: opts.FidelityFlipOption = None,
    seed: opts.SeedOption = 0,
    upscale: opts.UpscaleOption = 2.0,
    bg_upsampler: opts.BgUpsamplerOption = Background.AUTO,
    bg_model: opts.BgModelOption = None,
    bg_tile: opts.BgTileOption = DEFAULT_TILE,
    bg_overlap: opts.BgOverlapOption = DEFAULT_OVERLAP,
    color_fix: opts.ColorFixOption = False,
    save_faces: opts.SaveFacesOption = False,
    ext: opts.ExtOption = OutputFormat.SAME,
    suffix: opts.SuffixOption = "",
    quality: opts.QualityOption = 95,
    overwrite: opts.OverwriteOption = False,
    metrics: opts.MetricsOption = None,
    report_csv: opts.ReportCsvOption = None,
    gallery: opts.GalleryOption = True,
    json_lines: opts.JsonLinesOption = False,
    quiet: opts.QuietOption = False,
    max_pixels: opts.MaxPixelsOption = max_pixels_from_env(),
    skip_clean: opts.SkipCleanOption = None,
    max_memory: opts.MaxMemoryOption = "auto",
    engine: opts.EngineOption = opts.Engine.LOCAL,
    ray_address: opts.RayAddressOption = None,
) -> None:
    """Restore every face of the input images; write OUT/restored_imgs/, OUT/report.json and
    OUT/index.html (before/after gallery).

    Finished outputs are skipped, so an interrupted run resumes with the same command. The exit
    code is 0 when every image succeeded, 1 when some failed (each is reported), 2 for unusable
    options, inputs, weights or output folders.
    """
    chosen = opts.parse_restore_metrics(metrics)
    sampling, fidelity_auto = parse_sampling(
        fidelity, sampler=sampler, steps=steps, start_t=start_t, tem_t=tem_t,
        guidance_scale=guidance, samples=samples, low_freq_sigma=low_freq,
        use_fidelity=fidelity_net, fidelity_flip=fidelity_flip,
    )  # fmt: skip
    budget = opts.memory_budget(max_memory, upscale, max_pixels)
    detect = detection.detect_options(
        det_threshold, det_retry, min_face, max_faces, only_center_face, det_size
    )
    options = opts.restore_options(
        out_dir=out, aligned=aligned, detect=detect, batch_size=batch_size, seed=seed,
        upscale=upscale, color_fix=color_fix, save_faces=save_faces, ext=ext, suffix=suffix,
        quality=quality, overwrite=overwrite, max_pixels=max_pixels,
        niqe=Metric.NIQE in chosen, identity=Metric.IDS in chosen, report_csv=report_csv,
        max_memory=budget, no_face=no_face, skip_clean=opts.parse_skip_clean(skip_clean),
    )  # fmt: skip
    with user_errors():
        from drbfr_cli.devices import check_precision, resolve_device
        from drbfr_cli.restore.ranks import rank_device, rank_from_env

        rank = rank_from_env()
        opts.check_engine(engine, ray_address, options.skip_clean, rank)
        chosen_device = resolve_device(rank_device(device, rank))
        check_precision(precision, chosen_device)  # before the models' code is even imported
        from drbfr_cli.restore.tools import ToolChoices, check_bg_model, check_tools

        _check_output(options, gallery=gallery)
        choices = ToolChoices(
            model=model, device=str(chosen_device), precision=precision, sampling=sampling,
            fidelity_auto=fidelity_auto, weights_dir=weights_dir, detector=detector,
            background=bg_upsampler, bg_model=bg_model, bg_tile=bg_tile, bg_overlap=bg_overlap,
        )  # fmt: skip
        check_bg_model(choices)
        printer = _Printer(quiet=quiet, json_lines=json_lines, rank=rank)
        choices = check_tools(options, choices, printer.notice)
        finished = _Finished(options.out_dir, gallery, printer.notice)
        if engine is opts.Engine.RAY:
            _run_ray(inputs, options, choices, printer, device, ray_address, finished)
        else:
            _run(inputs, options, choices, printer, rank, finished)


def _check_output(options: RestoreOptions, *, gallery: bool) -> None:
    """Before any model is loaded, creating nothing: OUT and its report (run.check_output),
    and with `gallery` its pages, must be usable (one-line DrbfrError)."""
    from drbfr_cli.gallery.page import check_targets
    from drbfr_cli.restore.run import check_output

    check_output(options)
    if gallery:
        check_targets(options.out_dir)


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


# --------------------------------------------------------------------------- the run


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
        rate = TextColumn("{task.fields[faces]} faces, {task.fields[rate]:.2f} faces/s")
        quiet = printer.quiet or not printer.bar or not err_console.is_terminal
        self._printer = printer
        self._progress = count_progress(
            "restoring", rate, TimeElapsedColumn(), TextColumn("ETA"), quiet=quiet
        )
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
