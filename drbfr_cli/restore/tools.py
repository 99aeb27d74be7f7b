"""The models of a restore run, built from the user's choices: restorer, detector, background
upsampler, face parser. Missing weights are downloaded (unless DRBFR_OFFLINE is set) or reported
in one line; the restorer is made in one place, `build_restorer`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drbfr_cli import weights
from drbfr_cli.choices import Background, Precision
from drbfr_cli.devices import precision_of
from drbfr_cli.diffusion.sampling import SamplingOverrides
from drbfr_cli.errors import DrbfrError
from drbfr_cli.faces.detect import WEIGHT_NAMES, Detector, DetectorKind, build_detector
from drbfr_cli.faces.paste import build_parser
from drbfr_cli.imaging import probe_size
from drbfr_cli.metrics import identity
from drbfr_cli.restore.background import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    SpandrelUpsampler,
    Upsampler,
    build_upsampler,
    realesrgan_cpu_minutes,
    realesrgan_weights,
)
from drbfr_cli.restore.options import RestoreOptions, RestoreTools

if TYPE_CHECKING:  # the bundle code loads in seconds: imported when a restorer is made
    from drbfr_cli.restore.restorer import FaceRestorer

IDENTITY_MODEL = "identity"
"""--model identity: paste the aligned crops back unchanged (checks detection, alignment and
seams without a trained model)."""

Notice = Callable[[str], None]


@dataclass(frozen=True)
class ToolChoices:
    """Which models a run uses, and where and how they run."""

    model: str | None = None
    """A bundle folder or name, IDENTITY_MODEL, or None: the default bundle in the cache."""
    device: str = "cpu"
    """A resolved device (see `devices.resolve_device`)."""
    precision: Precision = Precision.AUTO
    sampling: SamplingOverrides = field(default_factory=SamplingOverrides)
    """Sampling fields that override the bundle's defaults (checked when made)."""
    fidelity_auto: bool = False
    """--fidelity auto: each face's fidelity from its estimated severity."""
    weights_dir: Path | None = None
    detector: DetectorKind | None = None
    """None: the best detector whose weights are present (`resolve_detector`)."""
    background: Background = Background.AUTO
    bg_model: Path | None = None
    """Any super-resolution model file spandrel loads; replaces the registry's Real-ESRGAN."""
    bg_tile: int = DEFAULT_TILE
    bg_overlap: int = DEFAULT_OVERLAP


def build_tools(
    options: RestoreOptions,
    choices: ToolChoices,
    notice: Notice,
    megapixels: float | None = None,
) -> tuple[RestoreTools, dict[str, Any]]:
    """The restorer, and for whole images the detector, background upsampler and face parser
    (when its weights are present); with the settings the report records (the precision is the
    one the restorer runs at: `auto` resolved, fp32 for the identity). `megapixels` (of all
    the inputs) sizes the note `--bg-upsampler auto` gives on a CPU."""
    restorer = build_restorer(choices)
    embedder = build_embedder() if options.identity else None
    settings: dict[str, Any] = {
        "model": model_name(restorer, choices),
        "device": choices.device,
        "precision": precision_of(getattr(restorer, "dtype", None)).value,
        "sampling": _effective_sampling(restorer, choices),
        "aligned": options.aligned,
        "batch_size": options.batch_size,
        "seed": options.seed,
        "skip_clean": options.skip_clean,
    }
    if options.identity:
        settings["identity"] = identity.DESCRIPTION
    if options.aligned:
        return RestoreTools(restorer=restorer, embedder=embedder), settings
    choices = replace(choices, detector=resolve_detector(choices, notice))
    upsampler = build_background(choices, options.upscale, notice, megapixels)
    parser = build_parser(choices.weights_dir, choices.device)
    settings |= {
        "detector": choices.detector.value,
        "upscale": options.upscale,
        "background": type(upsampler).__name__,
        **_background_settings(upsampler),
        "parsing_mask": parser is not None,
        "color_fix": options.color_fix,
    }
    detector = build_face_detector(choices, notice)
    tools = RestoreTools(
        restorer=restorer, detector=detector, upsampler=upsampler, parser=parser, embedder=embedder
    )
    return tools, settings


def _background_settings(upsampler: Upsampler) -> dict[str, Any]:
    """Tiling of a network upsampler, and the file of a user-named one (with its sha256)."""
    if not isinstance(upsampler, SpandrelUpsampler):
        return {}
    settings: dict[str, Any] = {"bg_tile": upsampler.tile, "bg_overlap": upsampler.overlap}
    settings["bg_network_scale"] = upsampler.descriptor.scale
    if upsampler.source is not None:
        settings["bg_model"] = upsampler.source.to_dict()
    return settings


def model_name(restorer: FaceRestorer, choices: ToolChoices) -> str:
    """The model as the report records it: the bundle folder that was loaded, or the choice."""
    bundle = getattr(restorer, "bundle", None)
    return str(bundle.path) if bundle is not None and bundle.path else str(choices.model)


def _effective_sampling(restorer: FaceRestorer, choices: ToolChoices) -> dict[str, Any]:
    """The sampling a bundle restorer runs (its defaults with the options on top), for the
    report; the options alone for a restorer without one (identity)."""
    config = getattr(restorer, "sampling", None)
    if config is None:
        return {key: str(value) for key, value in choices.sampling.given().items()}
    plain = {k: v.value if hasattr(v, "value") else v for k, v in asdict(config).items()}
    if getattr(restorer, "fidelity_auto", False):
        plain["fidelity"] = "auto"  # start_t and low_freq_sigma then vary per face
    return plain


def build_restorer(choices: ToolChoices) -> FaceRestorer:
    """The one place a restorer is made: IDENTITY_MODEL, or a bundle (drbfr_cli.bundle)."""
    from drbfr_cli.restore.restorer import IdentityRestorer, load_restorer

    if choices.model == IDENTITY_MODEL:
        return IdentityRestorer()
    return load_restorer(
        choices.model,
        device=choices.device,
        precision=choices.precision,
        sampling=choices.sampling,
        weights_dir=choices.weights_dir,
        fidelity_auto=choices.fidelity_auto,
    )


def build_embedder() -> identity.FaceEmbedder:
    """dlib's face embedder for --metrics ids (a one-line error without drbfr[identity])."""
    return identity.load_embedder()


DETECTOR_PREFERENCE = (
    DetectorKind.RETINAFACE,
    DetectorKind.RETINAFACE_MOBILE,
    DetectorKind.YUNET,
)
"""The default detector is the first of these whose weights are present (most accurate first)."""


def resolve_detector(choices: ToolChoices, notice: Notice) -> DetectorKind:
    """The chosen detector, or without a choice the first of DETECTOR_PREFERENCE whose weights
    are in a weights folder (with a notice when that is not RetinaFace-R50), else RetinaFace-R50,
    fetched by the registry: as `--bg-upsampler auto` takes what is there before downloading."""
    if choices.detector is not None:
        return choices.detector
    best = DETECTOR_PREFERENCE[0]
    for kind in DETECTOR_PREFERENCE:
        if weights.find(WEIGHT_NAMES[kind], choices.weights_dir) is not None:
            if kind is not best:
                notice(
                    f"{WEIGHT_NAMES[best]} not found: faces are detected with {kind.value} "
                    f"(`--detector {best.value}` fetches {WEIGHT_NAMES[best]})"
                )
            return kind
    return best


def build_face_detector(choices: ToolChoices, notice: Notice) -> Detector:
    """The chosen (or resolved) detector; when its weights cannot be had, the error names the
    detectors whose weights are already in the weights folders."""
    kind = resolve_detector(choices, notice)
    try:
        ensure_weights(WEIGHT_NAMES[kind], choices.weights_dir, notice)
    except DrbfrError as exc:
        raise _with_other_detectors(exc, kind, choices.weights_dir) from None
    return build_detector(kind, choices.weights_dir, choices.device)


def _with_other_detectors(
    exc: DrbfrError, kind: DetectorKind, weights_dir: Path | None
) -> DrbfrError:
    """`exc` (about `kind`'s weights) naming the detectors whose weights are present."""
    present = [
        other.value
        for other, name in WEIGHT_NAMES.items()
        if other is not kind and weights.find(name, weights_dir)
    ]
    if not present:
        return exc
    return DrbfrError(f"{exc}; or use --detector {' / '.join(present)} (found)")


def check_tools(options: RestoreOptions, choices: ToolChoices, notice: Notice) -> ToolChoices:
    """What `build_tools` will need besides the bundle, checked before any model loads, each
    failure one line (DrbfrError): `--metrics ids`' dlib and its model files (imported and
    found, not read), and for whole images the detector's weights and those of an explicit
    `--bg-upsampler realesrgan` (found and of the right size, not hashed; missing ones pass
    unless they cannot be downloaded). Returns `choices` with the detector resolved, so its
    notice is given once."""
    if options.identity:
        identity.check_available()
    if options.aligned:
        return choices
    kind = resolve_detector(choices, notice)
    try:
        weights.check_present(WEIGHT_NAMES[kind], choices.weights_dir)
    except DrbfrError as exc:
        raise _with_other_detectors(exc, kind, choices.weights_dir) from None
    if choices.background is Background.REALESRGAN and choices.bg_model is None:
        weights.check_present(realesrgan_weights(options.upscale), choices.weights_dir)
    return replace(choices, detector=kind)


def build_background(
    choices: ToolChoices, scale: float, notice: Notice, megapixels: float | None = None
) -> Upsampler:
    """The background upsampler (`auto` resolved by `resolve_background`); an explicit
    `realesrgan` fetches its weights. A `bg_model` file is used instead of the registry's
    Real-ESRGAN."""
    check_bg_model(choices)
    kind = resolve_background(choices, scale, notice, megapixels)
    if kind is Background.REALESRGAN and choices.bg_model is None:
        ensure_weights(realesrgan_weights(scale), choices.weights_dir, notice)
    return build_upsampler(
        kind,
        scale,
        choices.bg_tile,
        choices.weights_dir,
        choices.device,
        half=choices.device.startswith("cuda") and choices.precision is not Precision.FP32,
        overlap=choices.bg_overlap,
        model_file=choices.bg_model,
    )


def check_bg_model(choices: ToolChoices) -> None:
    """One-line DrbfrError for a `bg_model` beside another upsampler than auto, or one that is
    not a file (found before any weight is read)."""
    if choices.bg_model is None:
        return
    if choices.background is not Background.AUTO:
        raise DrbfrError(
            f"--bg-model replaces --bg-upsampler {choices.background.value}: give only one of "
            "the two"
        )
    if not choices.bg_model.is_file():
        raise DrbfrError(f"{choices.bg_model}: background model file not found")


def resolve_background(
    choices: ToolChoices, scale: float, notice: Notice, megapixels: float | None = None
) -> Background:
    """The upsampler `auto` means, with a one-line notice when it is not Real-ESRGAN: on a CPU
    Lanczos (Real-ESRGAN takes minutes per megapixel there; the notice estimates how long for
    `megapixels`), elsewhere Real-ESRGAN when its weights are in a weights folder, else
    Lanczos. Any other choice (and a `bg_model` file) is returned as it is."""
    if choices.background is not Background.AUTO or choices.bg_model is not None:
        return choices.background
    if choices.device == "cpu":
        notice(cpu_background_note(scale, megapixels))
        return Background.LANCZOS
    name = realesrgan_weights(scale)
    if weights.find(name, choices.weights_dir) is None:
        notice(
            f"{name} not found: the background is upscaled with Lanczos "
            f"(`drbfr weights fetch {name}` for Real-ESRGAN)"
        )
        return Background.LANCZOS
    return Background.REALESRGAN


def cpu_background_note(scale: float, megapixels: float | None) -> str:
    """The notice of `--bg-upsampler auto` on a CPU, with a rough cost of Real-ESRGAN."""
    import torch

    threads = torch.get_num_threads()
    per_mp = realesrgan_cpu_minutes(1.0, scale, threads)
    if megapixels is None:
        cost = f"about {per_mp:.0f} min per megapixel of input"
    else:
        total = realesrgan_cpu_minutes(megapixels, scale, threads)
        cost = f"about {_duration(total)} for these {megapixels:.1f} MP of input"
    return (
        "on a CPU the background is upscaled with Lanczos: Real-ESRGAN "
        f"(`--bg-upsampler realesrgan`) would take {cost} on {threads} threads"
    )


def _duration(minutes: float) -> str:
    if minutes < 1:
        return "under a minute"
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"


def input_megapixels(paths: Sequence[Path], most: int = 1000) -> float:
    """Megapixels of the images at `paths`, from their headers (probe_size); past `most`
    files, extrapolated from the first `most` (unreadable files count as nothing)."""
    probed = paths[:most]
    pixels = 0
    for path in probed:
        size = probe_size(path)
        if size is not None:
            pixels += size[0] * size[1]
    return pixels / 1e6 * (len(paths) / len(probed)) if probed else 0.0


def ensure_weights(name: str, weights_dir: Path | None, notice: Notice) -> None:
    """Download `name` unless present (with DRBFR_OFFLINE set: a one-line error instead)."""
    if weights.find(name, weights_dir) is None and not weights.offline_from_env():
        notice(f"downloading {name} into {weights.download_dir(weights_dir)}")
    weights.ensure(name, weights_dir)
