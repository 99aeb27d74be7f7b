"""The options of `drbfr restore`: their declarations (typer's Annotated types, one per
option, named after it) and the helpers that parse and check their values before any model is
loaded. `cli/restore.py` declares the command with these types."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from drbfr_cli.choices import Background, Metric, NoFace, OutputFormat, Precision, Sampler
from drbfr_cli.cli.common import fail, user_errors
from drbfr_cli.cli.detect_options import DETECT_PANEL

if TYPE_CHECKING:
    from drbfr_cli.restore.options import RestoreOptions
    from drbfr_cli.restore.ranks import Rank

RESTORE_METRICS = (Metric.NIQE, Metric.IDS)
"""Metrics restore can compute: no-reference, or against the input face (there is no ground
truth)."""

_DETECT = DETECT_PANEL
_MODEL = "Restoration model"
_OUTPUT = "Output"
_BACKGROUND = "Background"
_SCALE = "Scale-out"


class Engine(StrEnum):
    LOCAL = "local"
    RAY = "ray"


# --------------------------------------------------------------------------- declarations

InputsArgument = Annotated[
    list[str],
    typer.Argument(
        help="Image files, folders (recursive), glob patterns, or - to read paths from stdin."
    ),
]

OutOption = Annotated[Path, typer.Option("-o", "--out", help="Output folder.")]

ModelOption = Annotated[
    str | None,
    typer.Option(
        help="Model bundle folder or name (default: drbfr-small, shipped with drbfr; a "
        "`default` bundle of your own in the bundle cache takes precedence); "
        "`identity` pastes the aligned crops back unchanged, to check detection, alignment "
        "and seams.",
        rich_help_panel=_MODEL,
    ),
]

WeightsDirOption = Annotated[
    Path | None, typer.Option(help="Look here first for weight files and bundles.")
]

AlignedOption = Annotated[
    bool,
    typer.Option(
        help="Inputs are faces already aligned to the FFHQ template (written at 512x512).",
        rich_help_panel=_DETECT,
    ),
]

NoFaceOption = Annotated[
    NoFace,
    typer.Option(
        help="An image with no face found: keep writes its upscaled background, skip writes "
        "nothing, fail writes nothing and counts it as failed (exit code 1); the report "
        "says no_face for keep and skip.",
        rich_help_panel=_DETECT,
    ),
]

BatchSizeOption = Annotated[
    int,
    typer.Option(min=1, help="Faces per restorer call, across images.", rich_help_panel=_MODEL),
]

DeviceOption = Annotated[
    str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=_MODEL)
]

PrecisionOption = Annotated[
    Precision,
    typer.Option(
        help="auto: fp16 on CUDA, fp32 elsewhere (bf16 on a CPU only where it has bf16 "
        "instructions).",
        rich_help_panel=_MODEL,
    ),
]

SamplerOption = Annotated[
    Sampler | None,
    typer.Option(help="Diffusion sampler (default: the bundle's).", rich_help_panel=_MODEL),
]

StepsOption = Annotated[
    int | None,
    typer.Option(min=1, help="Sampling steps (default: the bundle's).", rich_help_panel=_MODEL),
]

FidelityOption = Annotated[
    str | None,
    typer.Option(
        "--fidelity",
        help="Generation vs faithfulness in [0, 1] (CodeFormer's -w: 0 most generative, 1 "
        "most faithful): sets --start-t and --low-freq, which override it; auto: each "
        "face's from its estimated severity (light faces faithful, heavy ones generative; "
        "needs a bundle with a degradation head). Default: the bundle's sampling.",
        rich_help_panel=_MODEL,
    ),
]

StartTOption = Annotated[
    float | None,
    typer.Option(
        help="Truncated start in (0, 1]: 1 from noise, < 1 from the noised LQ (DiffBFR).",
        rich_help_panel=_MODEL,
    ),
]

TemTOption = Annotated[
    float | None,
    typer.Option(
        help="Texture pass strength in [0, 1) (DiffBFR TEM; 0: off).", rich_help_panel=_MODEL
    ),
]

GuidanceOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="Guidance scale: eps_u + g (eps_c - eps_u); 1: conditional only (the default).",
        rich_help_panel=_MODEL,
    ),
]

SamplesOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Restorations averaged per face: higher PSNR, softer detail, N times the time "
        "(default: the bundle's).",
        rich_help_panel=_MODEL,
    ),
]

LowFreqOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="Replace each restored face's frequencies below a Gaussian of this sigma (px of "
        "the 512 px face) by the input's, or by the fidelity network's output: undoes the "
        "shading and colour drift of latent sampling (default: the bundle's; 0: off).",
        rich_help_panel=_MODEL,
    ),
]

FidelityNetOption = Annotated[
    bool | None,
    typer.Option(
        "--fidelity-net/--no-fidelity-net",
        help="Restore the output of the bundle's fidelity network F (a PSNR regressor) "
        "rather than the input itself, when the bundle has one (default: on).",
        rich_help_panel=_MODEL,
    ),
]

FidelityFlipOption = Annotated[
    bool | None,
    typer.Option(
        "--fidelity-flip/--no-fidelity-flip",
        help="Average F's output with the mirror of F of the mirrored face (one more F call "
        "per face, a little higher PSNR; default: the bundle's, on).",
        rich_help_panel=_MODEL,
    ),
]

SeedOption = Annotated[
    int, typer.Option(help="Run seed; each face's seed derives from it and its image path.")
]

UpscaleOption = Annotated[
    float,
    typer.Option(min=0.01, help="Output scale of whole images.", rich_help_panel=_BACKGROUND),
]

BgUpsamplerOption = Annotated[
    Background,
    typer.Option(
        help="auto: Lanczos on a CPU (with a note estimating what Real-ESRGAN would take), "
        "elsewhere Real-ESRGAN when its weights are present, else Lanczos; realesrgan: "
        "Real-ESRGAN on any device; none: a plain bilinear resize.",
        rich_help_panel=_BACKGROUND,
    ),
]

BgModelOption = Annotated[
    Path | None,
    typer.Option(
        help="Any single-image super-resolution model file spandrel loads (.pth, .pt, "
        ".safetensors: Real-ESRGAN, SwinIR, ...) for the background, instead of the "
        "registry's Real-ESRGAN; run at its own scale and resized to --upscale.",
        rich_help_panel=_BACKGROUND,
    ),
]

BgTileOption = Annotated[
    int,
    typer.Option(
        min=0,
        help="Background network tile side in input pixels (0: whole image).",
        rich_help_panel=_BACKGROUND,
    ),
]

BgOverlapOption = Annotated[
    int,
    typer.Option(
        min=0,
        help="Context pixels around each background tile (more: smaller seams, slower).",
        rich_help_panel=_BACKGROUND,
    ),
]

ColorFixOption = Annotated[
    bool,
    typer.Option(
        help="Match each restored face's colours to the input face.",
        rich_help_panel=_BACKGROUND,
    ),
]

SaveFacesOption = Annotated[
    bool,
    typer.Option(
        help="Also write cropped_faces/, restored_faces/ and cmp/ (side by side).",
        rich_help_panel=_OUTPUT,
    ),
]

ExtOption = Annotated[OutputFormat, typer.Option(help="Output format.", rich_help_panel=_OUTPUT)]

SuffixOption = Annotated[
    str, typer.Option(help="Appended to output file names.", rich_help_panel=_OUTPUT)
]

QualityOption = Annotated[
    int, typer.Option(min=1, max=100, help="JPEG/WebP quality.", rich_help_panel=_OUTPUT)
]

OverwriteOption = Annotated[
    bool,
    typer.Option(
        help="Redo images whose output exists (default: skip them).", rich_help_panel=_OUTPUT
    ),
]

MetricsOption = Annotated[
    str | None,
    typer.Option(
        help="Comma list: niqe scores each input face and its restoration; ids the identity "
        "distance of each restored face to its input face (needs drbfr[identity]).",
        rich_help_panel=_OUTPUT,
    ),
]

ReportCsvOption = Annotated[
    Path | None,
    typer.Option(help="Also write the per-image report as CSV.", rich_help_panel=_OUTPUT),
]

GalleryOption = Annotated[
    bool,
    typer.Option(
        help="Write OUT/index.html: a before/after page per 200 images, opened from disk.",
        rich_help_panel=_OUTPUT,
    ),
]

JsonLinesOption = Annotated[
    bool,
    typer.Option(
        "--json", help="Print one JSON line per image on stdout.", rich_help_panel=_OUTPUT
    ),
]

QuietOption = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Print errors only.", rich_help_panel=_OUTPUT),
]

MaxPixelsOption = Annotated[
    int, typer.Option(help="Refuse larger images (decompression-bomb guard).")
]

SkipCleanOption = Annotated[
    str | None,
    typer.Option(
        "--skip-clean",
        metavar="T",
        help="Paste faces whose estimated severity (0-1, drbfr inspect) is below T back "
        "untouched; the report counts them as clean (needs a bundle with a degradation head).",
        rich_help_panel=_MODEL,
    ),
]

MaxMemoryOption = Annotated[
    str,
    typer.Option(
        help="Memory one image may need (estimated from its size and --upscale before it is "
        "decoded); a larger image fails alone. auto: the memory available at the start; "
        "none: no limit; or a size such as 12G.",
    ),
]

EngineOption = Annotated[
    Engine,
    typer.Option(
        help="local: this process (one shard of the inputs per rank under torchrun); ray: "
        "a Ray Data pipeline (needs drbfr[ray]).",
        rich_help_panel=_SCALE,
    ),
]

RayAddressOption = Annotated[
    str | None,
    typer.Option(
        help="Ray cluster to run on (default: a local runtime with 2 CPUs).",
        rich_help_panel=_SCALE,
    ),
]


# --------------------------------------------------------------------------- checks


def memory_budget(max_memory: str, upscale: float, max_pixels: int) -> int | None:
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


def restore_options(**values: Any) -> RestoreOptions:
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


def check_engine(
    engine: Engine, ray_address: str | None, skip_clean: float | None, rank: Rank
) -> None:
    """--engine ray runs alone, --ray-address needs it, --skip-clean does not run with it."""
    if engine is Engine.RAY and rank.sharded:
        raise fail("--engine ray runs alone: start it once, not under torchrun")
    if ray_address is not None and engine is not Engine.RAY:
        raise fail("--ray-address needs --engine ray")
    if skip_clean is not None and engine is Engine.RAY:
        raise fail("--skip-clean runs with --engine local only")
