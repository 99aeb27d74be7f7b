"""`drbfr doctor` as a library: what this machine has, and whether a tiny end-to-end run is right.

Every check returns Findings (never prints) and takes well under a second on a CPU, except
the first import of torch.
"""

from __future__ import annotations

import math
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from pathlib import Path

import numpy as np

from drbfr_cli import weights
from drbfr_cli.degradations import DegradationParams, add_gaussian_noise, degrade

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
    if torch.cuda.is_available():
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
    if torch.backends.mps.is_available():
        findings.append(Finding("devices", "mps", Level.OK, "Apple Metal available"))
    return findings


def best_device() -> str:
    """cuda, mps or cpu: the device restore would use."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


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

    device = best_device()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 32, 32, generator=generator)
    w = torch.randn(8, 3, 3, 3, generator=generator)
    reference = torch.nn.functional.conv2d(x, w, padding=1)
    try:
        got = torch.nn.functional.conv2d(x.to(device), w.to(device), padding=1).cpu()
    except RuntimeError as exc:
        return Finding("checks", f"conv2d on {device}", Level.FAIL, str(exc).splitlines()[0])
    err = float((got - reference).abs().max())
    level = Level.OK if err < 1e-2 else Level.FAIL
    return Finding("checks", f"conv2d on {device}", level, f"max |diff| vs CPU {err:.2e}")


def check_yunet(weights_dir: Path | None = None) -> Finding:
    """YuNet (if present and valid) finds no face on a flat image, and one on skimage's
    astronaut when scikit-image is installed."""
    if weights.find("yunet-2023mar", weights_dir) is None:
        return Finding("checks", "yunet", Level.INFO, "skipped: yunet-2023mar not present")
    import cv2

    model = weights.verified_path("yunet-2023mar", weights_dir)
    flat = np.full((160, 160, 3), 128, np.uint8)
    if _count_faces(cv2, model, flat) != 0:
        return Finding("checks", "yunet", Level.FAIL, "found a face on a flat grey image")
    astronaut = _astronaut_bgr()
    if astronaut is None:
        return Finding("checks", "yunet", Level.OK, "runs; 0 faces on a flat image")
    found = _count_faces(cv2, model, astronaut)
    level = Level.OK if found == 1 else Level.FAIL
    return Finding("checks", "yunet", level, f"{found} face(s) on astronaut.png (expected 1)")


def _count_faces(cv2, model: Path, bgr: np.ndarray) -> int:
    height, width = bgr.shape[:2]
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # backend chatter
    try:
        detector = cv2.FaceDetectorYN.create(str(model), "", (width, height), 0.7)
        _, faces = detector.detect(bgr)
    finally:
        cv2.utils.logging.setLogLevel(previous)
    return 0 if faces is None else len(faces)


def _astronaut_bgr() -> np.ndarray | None:
    try:
        from skimage import data
    except ImportError:
        return None
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


# --------------------------------------------------------------------------- all


def run(weights_dir: Path | None = None) -> list[Finding]:
    """Every finding, in report order; a check that raises becomes a FAIL finding."""
    findings = python_findings() + package_findings()
    steps: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("devices", device_findings),
        ("weights", lambda: weights_findings(weights_dir)),
        ("degradation", lambda: [check_degradation()]),
        ("device math", lambda: [check_device_math()]),
        ("yunet", lambda: [check_yunet(weights_dir)]),
    ]
    for name, step in steps:
        try:
            findings.extend(step())
        except Exception as exc:  # a broken install must still give a full report
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            findings.append(Finding("checks", name, Level.FAIL, message))
    return findings
