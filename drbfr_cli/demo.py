"""`drbfr demo`: the shipped model restoring real photos, with no training, in minutes on a CPU.

The inputs, written to OUT/inputs: scikit-image's astronaut photo (whole/, restored with
detection and paste-back), its face aligned as `drbfr restore` aligns it and degraded by
Eq. (11) at a moderate and a strong setting with fixed parameters and seeds (aligned/), and
optionally the first images of an extra folder's whole/ and aligned/ subfolders (the project's
../shared/data/real_lq). Everything is restored as `drbfr restore` does it, into
OUT/restored/{whole,aligned}, and OUT/index.html, the gallery `drbfr restore` writes
(gallery/restore.py) over both runs, shows each input beside its restoration (and the degraded
copies beside the original face).
Whole photos get a Lanczos background (not Real-ESRGAN) to keep the demo fast.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drbfr_cli.choices import Background
from drbfr_cli.degradations import DegradationParams, degrade
from drbfr_cli.errors import DrbfrError
from drbfr_cli.faces.detect import DetectorKind
from drbfr_cli.imaging import collect_images, from_uint8, write_image

DEGRADATIONS = {
    "moderate": DegradationParams(sigma=1.5, r=2.0, delta=8.0, q=75),
    "strong": DegradationParams(sigma=3.0, r=4.0, delta=15.0, q=60),
}
"""Eq. (11) settings for the astronaut's aligned face (within the moderate test ranges, and at
the strong end of what drbfr-small was trained on)."""
WHOLE, ALIGNED = "whole", "aligned"
BACKGROUND = Background.LANCZOS

Step = Callable[[str], None]


@dataclass(frozen=True)
class DemoConfig:
    out: Path
    model: str | None = None
    """A bundle folder or name; None: the default (the shipped drbfr-small)."""
    weights_dir: Path | None = None
    """Detector and TAEF2 weights (else the registry's cache, downloading what is missing)."""
    extra: Path | None = None
    """A folder with whole/ and/or aligned/ subfolders of real photos to restore too."""
    extra_count: int = 3
    """Images taken from each extra subfolder (sorted by name; 0: all)."""
    steps: int | None = None
    samples: int | None = None
    seed: int = 0
    device: str = "auto"


def astronaut() -> np.ndarray:
    """scikit-image's astronaut.png as float32 RGB in [0, 1] (shipped in its wheel)."""
    try:
        from skimage import data
    except ImportError:
        raise DrbfrError(
            "the demo restores scikit-image's astronaut: pip install scikit-image"
        ) from None
    return from_uint8(data.astronaut())


def aligned_face(photo: np.ndarray, weights_dir: Path | None) -> np.ndarray:
    """The largest face of `photo` aligned to the FFHQ 512 template, as `restore` aligns it."""
    from drbfr_cli import weights
    from drbfr_cli.faces.align import align_face
    from drbfr_cli.faces.detect import WEIGHT_NAMES, DetectOptions, build_detector, detect_faces

    weights.ensure(WEIGHT_NAMES[DetectorKind.YUNET], weights_dir)
    detector = build_detector(DetectorKind.YUNET, weights_dir)
    faces = detect_faces(detector, photo, DetectOptions(max_faces=1))
    if not faces:
        raise DrbfrError("no face found on the astronaut photo")
    return align_face(photo, faces[0]).crop


def write_inputs(config: DemoConfig) -> dict[str, Path]:
    """OUT/inputs/whole and OUT/inputs/aligned (astronaut, its degraded faces, extras) and
    OUT/inputs/original (the undegraded aligned face); returns the three folders."""
    folders = {kind: config.out / "inputs" / kind for kind in (WHOLE, ALIGNED, "original")}
    photo = astronaut()
    write_image(folders[WHOLE] / "astronaut.png", photo)
    face = aligned_face(photo, config.weights_dir)
    write_image(folders["original"] / "astronaut.png", face)
    for index, (name, params) in enumerate(DEGRADATIONS.items()):
        rng = np.random.default_rng(config.seed + index)
        write_image(folders[ALIGNED] / f"astronaut_{name}.png", degrade(face, params, rng))
    if config.extra is not None:
        copy_extra(config.extra, folders, config.extra_count)
    return folders


def extra_subfolders(extra: Path) -> list[str]:
    """The kinds (whole, aligned) `extra` has a subfolder of; a one-line error for none."""
    subfolders = [kind for kind in (WHOLE, ALIGNED) if (extra / kind).is_dir()]
    if not subfolders:
        raise DrbfrError(f"{extra}: --extra needs a whole/ or aligned/ subfolder of images")
    return subfolders


def copy_extra(extra: Path, folders: dict[str, Path], count: int) -> None:
    """The first `count` images (all for 0) of extra/whole and extra/aligned into the inputs."""
    for kind in extra_subfolders(extra):
        sources = collect_images([extra / kind])
        for source in sources[:count] if count else sources:
            target = folders[kind] / "extra" / source.relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.path, target)


def restore_all(config: DemoConfig, folders: dict[str, Path], step: Step) -> dict[str, Path]:
    """Restore the whole photos and the aligned faces with one loaded model, as `drbfr restore`
    does; returns the restored_imgs folder of each kind."""
    from drbfr_cli.devices import resolve_device
    from drbfr_cli.diffusion.sampling import SamplingOverrides
    from drbfr_cli.restore.options import RestoreOptions, RestoreTools
    from drbfr_cli.restore.run import restore_images
    from drbfr_cli.restore.tools import ToolChoices, build_tools

    device = str(resolve_device(config.device))
    choices = ToolChoices(
        model=config.model, device=device, weights_dir=config.weights_dir,
        detector=DetectorKind.YUNET, background=BACKGROUND,
        sampling=SamplingOverrides(steps=config.steps, samples=config.samples),
    )  # fmt: skip
    outputs = {}
    tools, settings = None, None
    for kind in (WHOLE, ALIGNED):
        sources = collect_images([folders[kind]])
        options = RestoreOptions(out_dir=config.out / "restored" / kind, aligned=kind == ALIGNED,
                                 seed=config.seed, batch_size=2)  # fmt: skip
        if tools is None:
            tools, settings = build_tools(options, choices, notice=step)
        kind_tools = RestoreTools(restorer=tools.restorer) if kind == ALIGNED else tools
        step(f"restoring {len(sources)} {kind} image(s)")
        summary = restore_images(sources, options, kind_tools, settings=settings, on_notice=step)
        if summary.failed:
            raise DrbfrError(f"{summary.failed} {kind} image(s) failed; see {options.out_dir}")
        outputs[kind] = options.out_dir / "restored_imgs"
    return outputs


def originals(folders: dict[str, Path]) -> dict[str, Path]:
    """The undegraded face of each degraded aligned input, by input path as in the report."""
    found = {}
    for source in collect_images([folders[ALIGNED]]):
        stem = source.relative.stem.removesuffix("_moderate").removesuffix("_strong")
        original = folders["original"] / f"{stem}.png"
        if original.is_file():
            found[str(source.path)] = original
    return found


def demo_note(config: DemoConfig, model: str) -> str:
    sampling = "the bundle's default sampling"
    if config.steps or config.samples:
        sampling = f"reduced sampling (steps {config.steps}, samples {config.samples})"
    return (
        f"Restored with {model} ({sampling}, seed {config.seed}), no training. Whole photos are "
        "restored with detection (YuNet), alignment and paste-back onto a Lanczos-upscaled "
        "background (x2; not Real-ESRGAN, to keep the demo fast). The astronaut's aligned face "
        "is degraded by Eq. (11) at a moderate (blur 1.5, scale 2, noise 8, JPEG 75) and a "
        "strong (blur 3, scale 4, noise 15, JPEG 60) setting."
    )


def run_demo(config: DemoConfig, step: Step) -> Path:
    """Every demo stage; returns the before/after page (the gallery of both runs)."""
    from drbfr_cli.gallery.restore import write_restore_gallery

    if config.extra is not None:
        extra_subfolders(config.extra)
    step("writing the inputs (scikit-image's astronaut, its degraded face, extras)")
    folders = write_inputs(config)
    restored = restore_all(config, folders, step)
    model = _model_name(config.out / "restored" / ALIGNED)
    reports = [restored[kind].parent / "report.json" for kind in (WHOLE, ALIGNED)]
    pages = write_restore_gallery(
        config.out,
        reports,
        title="drbfr demo: before / after",
        note=demo_note(config, model),
        references=originals(folders),
    )
    return pages[0]


def _model_name(run_dir: Path) -> str:
    """The model a restore run used, from its report."""
    import json

    settings = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))["settings"]
    return str(settings.get("model", "the default model"))
