"""`drbfr eval`: metrics over a folder of restored faces, and `drbfr eval fid-stats`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from drbfr_cli.choices import LpipsNet, Metric
from drbfr_cli.cli.common import (
    ERROR,
    EXIT_PARTIAL,
    console,
    count_progress,
    err_console,
    fail,
    parse_sampling,
    print_line,
    user_errors,
)
from drbfr_cli.imaging import collect_images, max_pixels_from_env, read_image
from drbfr_cli.metrics import datasets

if TYPE_CHECKING:  # the metric libraries load torch: imported when a command runs
    from drbfr_cli.diffusion.sampling import SamplingOverrides
    from drbfr_cli.metrics import lpips as lpips_mod
    from drbfr_cli.metrics.evaluate import EvalConfig, EvalResult, ImageResult

app = typer.Typer(
    help="Evaluate restored faces (PSNR, SSIM, LPIPS, FID, NIQE, identity) and build FID "
    "statistics.",
    invoke_without_command=True,
    no_args_is_help=False,
)

_DEFAULT_PAIRED = (Metric.PSNR, Metric.SSIM, Metric.LPIPS, Metric.FID, Metric.NIQE)
_DEFAULT_UNPAIRED = (Metric.FID, Metric.NIQE)


def parse_metrics(text: str | None) -> tuple[Metric, ...] | None:
    """'psnr,ssim' -> (Metric.PSNR, Metric.SSIM); None stays None (use the defaults)."""
    if text is None:
        return None
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    try:
        return tuple(dict.fromkeys(Metric(n) for n in names))
    except ValueError:
        known = ", ".join(m.value for m in Metric)
        raise typer.BadParameter(f"unknown metric in {text!r}; choose from {known}") from None


def _check_device(value: str) -> str:
    from drbfr_cli.devices import resolve_device
    from drbfr_cli.errors import DrbfrError

    try:
        return str(resolve_device(value))
    except DrbfrError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.callback()
def eval_command(
    ctx: typer.Context,
    restored: Path | None = typer.Option(None, help="Folder of restored faces (recursive)."),
    gt: Path | None = typer.Option(None, help="Ground-truth folder; pairs by relative path."),
    lq: Path | None = typer.Option(None, help="LQ inputs, shown in the comparison grid."),
    metrics: str | None = typer.Option(
        None,
        help="Comma list of psnr,ssim,lpips,fid,niqe,ids (default: all that apply but ids; "
        "ids: identity distance to --gt, or to --lq without it; needs drbfr[identity]).",
    ),
    dataset: datasets.Dataset | None = typer.Option(
        None, help="Test-set preset: ground truth, LQ, FID reference and metrics from --data-root."
    ),
    data_root: Path | None = typer.Option(None, help="Folder holding the --dataset sets."),
    y_channel: bool = typer.Option(False, help="PSNR/SSIM on the BT.601 Y channel, not RGB."),
    crop_border: int = typer.Option(0, min=0, help="Pixels cropped on each edge first."),
    lpips_net: LpipsNet | None = typer.Option(
        None, help="LPIPS backbone (default: vgg, or the net of --lpips-backbone)."
    ),
    lpips_backbone: Path | None = typer.Option(
        None,
        help="LPIPS backbone file in torchvision's layout (AlexNet or VGG16), used without the "
        "registry's hash check; its sha256 goes into the report.",
    ),
    fid_stats: Path | None = typer.Option(None, help="FID reference statistics (.npz)."),
    weights_dir: Path | None = typer.Option(None, help="Look here first for weight files."),
    out: Path | None = typer.Option(
        None, help="Write summary.json, metrics.csv, report.md, a grid and index.html here."
    ),
    grid_samples: int = typer.Option(6, min=0, help="Rows in the comparison grid."),
    device: str = typer.Option(
        "cpu", callback=_check_device, help="torch device for LPIPS and FID (cpu, cuda)."
    ),
    max_pixels: int = typer.Option(max_pixels_from_env(), help="Refuse larger images."),
    model: str | None = typer.Option(
        None,
        help="Restore --lq (aligned faces) with this bundle first, into OUT/restored (the "
        "default without --restored: drbfr-small).",
    ),
    steps: int | None = typer.Option(None, min=1, help="With --model: sampling steps."),
    fidelity: str | None = typer.Option(
        None,
        "--fidelity",
        help="With --model: generation vs faithfulness in [0, 1], or auto (see restore "
        "--fidelity).",
    ),
    start_t: float | None = typer.Option(
        None, min=0.01, max=1.0, help="With --model: sampling start (1: pure noise)."
    ),
    samples: int | None = typer.Option(
        None, min=1, help="With --model: restorations averaged per face."
    ),
    low_freq: float | None = typer.Option(
        None, min=0.0, help="With --model: low-frequency transfer sigma (see restore --low-freq)."
    ),
    fidelity_net: bool | None = typer.Option(
        None,
        "--fidelity-net/--no-fidelity-net",
        help="With --model: restore F's output (see restore --fidelity-net; default: on).",
    ),
    fidelity_flip: bool | None = typer.Option(
        None,
        "--fidelity-flip/--no-fidelity-flip",
        help="With --model: flip-averaged F (see restore --fidelity-flip; default: on).",
    ),
    batch_size: int = typer.Option(8, min=1, help="With --model: faces per restorer call."),
) -> None:
    """Evaluate --restored against --gt (paired) or alone (NIQE, FID vs --fid-stats); without
    --restored, restore --lq with --model (default: drbfr-small) first and evaluate that."""
    if ctx.invoked_subcommand is not None:
        return
    if restored is None and lq is None and dataset is None:
        raise fail(
            "give --restored DIR (the restored faces to evaluate), or --lq DIR to restore them "
            "with --model BUNDLE (default: drbfr-small) first"
        )
    if restored is not None and model is not None:
        raise fail("give either --restored or --model, not both")
    chosen = parse_metrics(metrics)
    sampling, fidelity_auto = parse_sampling(
        fidelity, steps=steps, start_t=start_t, samples=samples, low_freq_sigma=low_freq,
        use_fidelity=fidelity_net, fidelity_flip=fidelity_flip,
    )  # fmt: skip
    from drbfr_cli.gallery.page import check_targets
    from drbfr_cli.metrics.evaluate import EvalConfig
    from drbfr_cli.metrics.fidelity import FidelityConfig

    with user_errors():
        if out is not None:
            check_targets(out)
        if dataset is not None:
            if data_root is None:
                raise fail("--dataset needs --data-root DIR")
            preset = datasets.resolve(dataset, data_root)
            gt, lq = gt or preset.gt, lq or preset.lq
            fid_stats, chosen = fid_stats or preset.fid_stats, chosen or preset.metrics
        chosen = chosen or (_DEFAULT_PAIRED if gt else _DEFAULT_UNPAIRED)
        if restored is None:
            if lq is None or out is None:
                raise fail("restoring needs --lq DIR (aligned LQ faces) and --out DIR")
            restored = _restore_with(
                model, lq, out, device, weights_dir, sampling, batch_size, fidelity_auto
            )
        net, backbone = _lpips_choice(lpips_net, lpips_backbone, chosen)
        config = EvalConfig(
            metrics=chosen,
            fidelity=FidelityConfig(y_channel=y_channel, crop_border=crop_border),
            lpips_net=net,
            lpips_backbone=backbone,
            fid_stats=fid_stats,
            weights_dir=weights_dir,
            device=device,
            max_pixels=max_pixels,
        )
        result = _run(restored, gt, config, lq)
        _print(result)
        if out is not None:
            inputs = {"restored": str(restored), "gt": _s(gt), "lq": _s(lq),
                      "dataset": dataset.value if dataset else None}  # fmt: skip
            written = _write_reports(out, result, inputs, lq, grid_samples, max_pixels)
            print_line(console, "reports:", ", ".join(str(p) for p in written))
    if result.skipped or result.unscored or any(r.error for r in result.images):
        raise typer.Exit(EXIT_PARTIAL)


def _write_reports(
    out: Path,
    result: EvalResult,
    inputs: dict[str, str | None],
    lq: Path | None,
    grid_samples: int,
    max_pixels: int,
) -> list[Path]:
    """The report files (metrics/report.py), then OUT/index.html (gallery/eval.py)."""
    from drbfr_cli.gallery.eval import write_eval_page
    from drbfr_cli.metrics.report import summary_rows, write_reports

    written = write_reports(
        out, result, inputs, lq_dir=lq, grid_samples=grid_samples, max_pixels=max_pixels
    )
    rows = summary_rows(result)
    page = write_eval_page(out, result, inputs, lq_dir=lq, rows=rows, max_pixels=max_pixels)
    return [*written, page]


def _lpips_choice(
    net: LpipsNet | None, backbone: Path | None, metrics: tuple[Metric, ...]
) -> tuple[LpipsNet, lpips_mod.Backbone | None]:
    """The LPIPS net and user-named backbone (checked, hashed) when LPIPS is computed."""
    from drbfr_cli.metrics import lpips as lpips_mod

    if backbone is None or Metric.LPIPS not in metrics:
        return net or LpipsNet.VGG, None
    return lpips_mod.backbone_file(backbone, net)


def _restore_with(
    model: str | None,
    lq: Path,
    out: Path,
    device: str,
    weights_dir: Path | None,
    sampling: SamplingOverrides,
    batch_size: int,
    fidelity_auto: bool = False,
) -> Path:
    """Restore the aligned LQ faces with a bundle (as `drbfr restore --aligned`); the folder of
    restorations, named as their LQ inputs so that they pair with the ground truth."""
    from drbfr_cli.gallery.page import check_targets
    from drbfr_cli.gallery.restore import write_run_gallery
    from drbfr_cli.restore.options import RestoreOptions
    from drbfr_cli.restore.run import restore_images
    from drbfr_cli.restore.tools import ToolChoices, build_tools

    sources = collect_images([lq])
    if not sources:
        raise fail(f"{lq}: no images to restore")
    options = RestoreOptions(out_dir=out / "restored", aligned=True, batch_size=batch_size)
    choices = ToolChoices(
        model=model,
        device=device,
        sampling=sampling,
        fidelity_auto=fidelity_auto,
        weights_dir=weights_dir,
    )
    quiet: Callable[[str], None] = lambda _message: None  # noqa: E731
    check_targets(options.out_dir)  # its before/after gallery, as `drbfr restore` writes
    tools, settings = build_tools(options, choices, notice=quiet)
    with err_console.status(f"restoring {len(sources)} faces with {model or 'drbfr-small'}"):
        summary = restore_images(
            sources, options, tools, settings=settings,
            on_finish=lambda _summary: write_run_gallery(options.out_dir, quiet),
        )  # fmt: skip
    err_console.print(
        f"restored {summary.restored} faces ({summary.skipped} done before, {summary.failed} "
        f"failed) into {options.out_dir}",
        highlight=False,
    )
    return options.out_dir / "restored_imgs"


def _s(path: Path | None) -> str | None:
    return str(path) if path else None


def _run(restored: Path, gt: Path | None, config: EvalConfig, lq: Path | None) -> EvalResult:
    from drbfr_cli.metrics.evaluate import evaluate

    with count_progress("evaluating") as progress:
        task = progress.add_task("eval", total=None)

        def on_image(result: ImageResult) -> None:
            if result.error:
                print_line(progress.console, ERROR, f"{result.name}: {result.error}")
            progress.advance(task)

        return evaluate(restored, gt, config, on_image=on_image, lq=lq)


def _print(result: EvalResult) -> None:
    from drbfr_cli.metrics.report import summary_rows

    for name, reason in result.skipped.items():
        err_console.print(
            f"[yellow]skipped {name}:[/] {escape(reason)}", highlight=False, soft_wrap=True
        )
    for name, images in result.unscored.items():
        shown = ", ".join(images[:5]) + (" ..." if len(images) > 5 else "")
        err_console.print(
            f"[yellow]{name} could not score {len(images)} images:[/] {escape(shown)}",
            highlight=False,
            soft_wrap=True,
        )
    pairing = result.pairing
    for label, names in (
        ("restored without ground truth", pairing.unmatched_restored),
        ("ground truth without restored", pairing.unmatched_gt),
    ):
        if names:
            shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
            print_line(err_console, f"[yellow]unmatched {label} ({len(names)}):[/]", shown)
    failed = sum(1 for r in result.images if r.error)
    table = Table(title=f"drbfr eval: {len(result.images) - failed} images", show_edge=False)
    for column in ("metric", "value", "", "protocol"):
        table.add_column(column)
    for metric, value, direction in summary_rows(result):
        table.add_row(metric, value, direction, result.protocol.get(metric.lower(), ""))
    console.print(table)


@app.command("fid-stats")
def fid_stats_command(
    folder: Path = typer.Argument(..., help="Images (recursive) to compute statistics of."),
    output: Path = typer.Option(..., "-o", "--output", help="Output .npz (mu, sigma, count)."),
    weights_dir: Path | None = typer.Option(None, help="Look here first for weight files."),
    device: str = typer.Option("cpu", callback=_check_device, help="torch device (cpu, cuda)."),
    max_pixels: int = typer.Option(max_pixels_from_env(), help="Refuse larger images."),
) -> None:
    """Compute FID reference statistics (InceptionV3 pool3 mean and covariance) of FOLDER."""
    import torch

    from drbfr_cli.metrics import fid as fid_mod

    with user_errors():
        sources = collect_images([folder])
        if len(sources) < 2:
            raise fail(f"{folder}: FID statistics need at least 2 images")
        torch_device = torch.device(device)
        extractor = fid_mod.InceptionExtractor(weights_dir=weights_dir, device=torch_device)
        images = (read_image(s.path, max_pixels=max_pixels).rgb for s in sources)
        stats = fid_mod.stats_from_features(
            fid_mod.extract_features(extractor, images, torch_device)
        )
        fid_mod.save_stats(stats, output)
    console.print(f"FID statistics of {stats.count} images: {output}", highlight=False)
