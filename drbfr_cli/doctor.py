"""`drbfr doctor` as a library: what this machine has, and whether the real restore path works:
Eq. (11) on a synthetic image, the project's own detector on a real photo, and one face through
the default (or named) model bundle.

Every check returns Findings (never prints) and takes well under a second on a CPU, except
the first import of torch.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np

from drbfr_cli import devices, weights
from drbfr_cli.degradations import DegradationParams, add_gaussian_noise, degrade
from drbfr_cli.errors import first_line
from drbfr_cli.faces.detect import DetectOptions, DetectorKind, build_detector, detect_faces
from drbfr_cli.imaging import faces_to_tensor, from_uint8, tensor_to_faces

YUNET = "yunet-2023mar"

KEY_PACKAGES = (
    "torch",
    "torchvision",
    "diffusers",
    "accelerate",
    "safetensors",
    "numpy",
    "opencv-python",
    "pillow",
    "facexlib",
    "spandrel",
    "torchmetrics",
    "typer",
    "rich",
)
NOISE_DELTA = 10.0
"""The noise-only degradation check: PSNR should be 20 log10(255 / delta) (28.13 dB)."""
NOISE_TOLERANCE_DB = 0.5
MILD_MIN_DB = 40.0


class Level(StrEnum):
    """How a finding reads."""

    OK = "ok"
    INFO = "info"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's report."""

    section: str
    name: str
    level: Level
    detail: str


# --------------------------------------------------------------------------- environment


def python_findings() -> list[Finding]:
    """Python version and platform (drbfr needs Python >= 3.11)."""
    version = platform.python_version()
    level = Level.OK if sys.version_info >= (3, 11) else Level.FAIL
    return [
        Finding("system", "python", level, f"{version} ({sys.executable})"),
        Finding("system", "platform", Level.INFO, platform.platform()),
    ]


def package_findings(packages: tuple[str, ...] = KEY_PACKAGES) -> list[Finding]:
    """Installed versions of the key packages; a missing one is a failure."""
    findings = []
    for name in packages:
        try:
            findings.append(Finding("packages", name, Level.OK, metadata.version(name)))
        except metadata.PackageNotFoundError:
            findings.append(Finding("packages", name, Level.FAIL, "not installed"))
    return findings


def device_findings() -> list[Finding]:
    """CUDA devices (name, total and free memory), MPS, and the CPU thread count."""
    import torch

    findings = [Finding("devices", "cpu", Level.INFO, f"{torch.get_num_threads()} torch threads")]
    if devices.cuda_available():
        build = f"CUDA {torch.version.cuda}"
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            detail = f"{props.name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} free), {build}"
            findings.append(Finding("devices", f"cuda:{index}", Level.OK, detail))
    else:
        built = torch.version.cuda or "none"
        detail = f"no CUDA device (torch built with CUDA {built}); restore runs on CPU, slowly"
        findings.append(Finding("devices", "cuda", Level.WARN, detail))
    if devices.mps_available():
        findings.append(Finding("devices", "mps", Level.OK, "Apple Metal available"))
    return findings


def weights_findings(weights_dir: Path | None = None) -> list[Finding]:
    """Which checkpoints are present (sizes checked; `drbfr weights verify` re-hashes)."""
    levels = {
        weights.Status.VALID: Level.OK,
        weights.Status.UNVERIFIED: Level.WARN,
        weights.Status.CORRUPT: Level.FAIL,
        weights.Status.MISSING: Level.INFO,
    }
    findings = []
    for result in weights.check_all(weights_dir, hash_file=False):
        detail = str(result.path) if result.path else "missing"
        if result.status is weights.Status.CORRUPT:
            detail = f"{result.path}: {result.detail}"
        findings.append(Finding("weights", result.spec.name, levels[result.status], detail))
    return findings


# --------------------------------------------------------------------------- end-to-end checks


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two float images in [0, 1]."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def synthetic_image(size: int = 128) -> np.ndarray:
    """A smooth float32 RGB HxWx3 test image in [0.1, 0.9] (no clipping under mild noise)."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    channels = (0.5 + 0.4 * np.sin(6 * x + 2 * y), 0.5 + 0.4 * np.cos(5 * y), 0.1 + 0.8 * x * y)
    return np.stack(channels, axis=-1).astype(np.float32)


def check_degradation() -> Finding:
    """Eq. (11) on a synthetic image, compared with what it must give.

    The noise step alone (delta=10) must score 20 log10(255/delta) = 28.13 dB +- 0.5 dB (the
    image stays inside [0.1, 0.9], so clipping is negligible); the whole chain with mild
    parameters must stay above 40 dB and a strong draw must score at least 5 dB lower.
    """
    image = synthetic_image()
    rng = np.random.default_rng(0)
    noisy = add_gaussian_noise(image, NOISE_DELTA, rng)
    mild = degrade(image, DegradationParams(sigma=0.1, r=1.0, delta=0.0, q=100), rng)
    strong = degrade(image, DegradationParams(sigma=4.0, r=4.0, delta=15.0, q=60), rng)
    expected = 20.0 * math.log10(255.0 / NOISE_DELTA)
    got_noise, got_mild, got_strong = psnr(image, noisy), psnr(image, mild), psnr(image, strong)
    detail = (
        f"noise PSNR {got_noise:.2f} dB (theory {expected:.2f}); "
        f"mild {got_mild:.1f} dB; strong {got_strong:.1f} dB"
    )
    ok = (
        mild.shape == strong.shape == image.shape
        and abs(got_noise - expected) <= NOISE_TOLERANCE_DB
        and got_mild > MILD_MIN_DB
        and got_strong < got_mild - 5.0
    )
    return Finding("checks", "degradation", Level.OK if ok else Level.FAIL, detail)


def check_device_math() -> Finding:
    """A 3x3 convolution on the best device agrees with the CPU result."""
    import torch

    device = devices.best_device()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 32, 32, generator=generator)
    w = torch.randn(8, 3, 3, 3, generator=generator)
    reference = torch.nn.functional.conv2d(x, w, padding=1)
    try:
        got = torch.nn.functional.conv2d(x.to(device), w.to(device), padding=1).cpu()
    except RuntimeError as exc:
        return Finding("checks", f"conv2d on {device}", Level.FAIL, first_line(exc))
    err = float((got - reference).abs().max())
    level = Level.OK if err < 1e-2 else Level.FAIL
    return Finding("checks", f"conv2d on {device}", level, f"max |diff| vs CPU {err:.2e}")


def check_detector(weights_dir: Path | None = None) -> Finding:
    """The restore pipeline's own YuNet detector (faces/detect.py) finds no face on a flat
    image, and one on skimage's astronaut when scikit-image is installed."""
    if weights.find(YUNET, weights_dir) is None:
        return Finding("checks", "detector", Level.WARN, f"skipped: {YUNET} not present")
    detector = build_detector(DetectorKind.YUNET, weights_dir)
    options = DetectOptions()
    if detect_faces(detector, np.full((160, 160, 3), 0.5, np.float32), options):
        return Finding("checks", "detector", Level.FAIL, "yunet found a face on a flat grey image")
    astronaut = astronaut_rgb()
    if astronaut is None:
        return Finding("checks", "detector", Level.OK, "yunet runs; 0 faces on a flat image")
    found = len(detect_faces(detector, astronaut, options))
    level = Level.OK if found == 1 else Level.FAIL
    return Finding("checks", "detector", level, f"yunet: {found} face(s) on astronaut.png (1)")


def check_restore(model: str | None = None, weights_dir: Path | None = None) -> Finding:
    """One face restored with the default (or named) model bundle on the best device: the face
    `drbfr restore` would align from astronaut.png (or a synthetic image), seed 0."""
    from drbfr_cli.bundle import resolve_bundle
    from drbfr_cli.errors import DrbfrError

    try:
        path = resolve_bundle(model, weights_dir)
    except DrbfrError as exc:
        return Finding("checks", "restore", Level.WARN, f"no model: {exc}")
    from drbfr_cli.restore.restorer import load_restorer

    restorer = load_restorer(str(path), device=devices.best_device(), weights_dir=weights_dir)
    face = _doctor_face(restorer.face_size)
    start = time.perf_counter()
    out = tensor_to_faces(restorer.restore(faces_to_tensor([face]), [0]))[0]
    seconds = time.perf_counter() - start
    ok = out.shape == face.shape and bool(np.isfinite(out).all())
    detail = (
        f"{path.name}: one {restorer.face_size} px face on {restorer.device} in {seconds:.1f} s, "
        f"PSNR to its input {psnr(face, out):.1f} dB"
    )
    return Finding("checks", "restore", Level.OK if ok else Level.FAIL, detail)


def _doctor_face(size: int) -> np.ndarray:
    """astronaut.png's face cropped square and resized (or a synthetic image), RGB [0, 1]."""
    astronaut = astronaut_rgb()
    face = synthetic_image(size) if astronaut is None else astronaut[20:220, 130:330]
    return cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)


def astronaut_rgb() -> np.ndarray | None:
    """skimage's astronaut.png as float32 RGB in [0, 1], None without scikit-image."""
    try:
        from skimage import data
    except ImportError:
        return None
    return from_uint8(data.astronaut())


# --------------------------------------------------------------------------- all


def run(weights_dir: Path | None = None, model: str | None = None) -> list[Finding]:
    """Every finding, in report order; a check that raises becomes a FAIL finding."""
    findings = python_findings() + package_findings()
    steps: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("devices", device_findings),
        ("weights", lambda: weights_findings(weights_dir)),
        ("degradation", lambda: [check_degradation()]),
        ("device math", lambda: [check_device_math()]),
        ("detector", lambda: [check_detector(weights_dir)]),
        ("restore", lambda: [check_restore(model, weights_dir)]),
    ]
    for name, step in steps:
        try:
            findings.extend(step())
        except Exception as exc:  # a broken install must still give a full report
            findings.append(Finding("checks", name, Level.FAIL, first_line(exc)))
    return findings
