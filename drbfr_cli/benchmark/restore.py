"""`drbfr bench restore`: faces/s, per-stage times and peak memory of restoration.

For each precision, on one device, in one run:
- model stages (E_DR, VAE encode, one network call, VAE decode, and the sampling loop) at each
  batch size, and the per-face time they add up to;
- the restorer over a set of faces at each batch size: batch 1 is the plain one-face loop, so
  the rows give the speed-up of cross-image batching;
- peers given by the caller (the checkout's bench/restore: GFPGAN and CodeFormer with random
  weights) on the same device and precision, and the ratios;
- whole `drbfr restore` runs (cross-image batches vs one face per call), and how a run scales
  with image size and with faces per image.
`calls_only` keeps the model stages (no sampling loop, restorer or whole runs) and estimates
the rest from them: the way to bench large presets on a CPU.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from drbfr_cli.benchmark.inputs import read_faces, write_synthetic_set
from drbfr_cli.benchmark.measure import machine_info
from drbfr_cli.benchmark.profile import profile_restore
from drbfr_cli.benchmark.random_bundle import random_bundle
from drbfr_cli.benchmark.report import Table
from drbfr_cli.benchmark.restore_model import (
    Runner,
    batching_rows,
    estimate_rows,
    face_batch,
    model_facts,
    restorer_rows,
    sampling_key,
    stage_rows,
)
from drbfr_cli.benchmark.restore_runs import (
    RunInputs,
    batching_runs,
    build_upsampler,
    face_count_rows,
    image_size_rows,
    run_inputs,
    stage_times,
)
from drbfr_cli.bundle import Bundle, load_bundle, resolve_bundle
from drbfr_cli.choices import Background, Precision, Sampler
from drbfr_cli.devices import autocast_dtype, free_memory, resolve_device
from drbfr_cli.diffusion.sampling import SamplingConfig
from drbfr_cli.errors import DrbfrError
from drbfr_cli.faces.align import align_face
from drbfr_cli.faces.detect import DetectOptions, DetectorKind, build_detector, detect_faces
from drbfr_cli.imaging import collect_images, read_image
from drbfr_cli.restore.restorer import BundleRestorer

Notice = Callable[[str], None]
Progress = Callable[[int, int, str], None]
"""Called with (phases done, phases in all, the phase starting)."""

QUICK = {
    "batch_sizes": (1, 4),
    "faces": 4,
    "repeats": 1,
    "warmup": 1,
    "image_sides": (512, 1024),
    "face_counts": (1, 4),
    "copies": 1,
}
"""What `drbfr bench restore` measures by default (minutes on a 2-core CPU): fewer batch sizes,
image sizes and face counts, one measured repeat."""
FULL = {
    "batch_sizes": (1, 2, 4, 8),
    "faces": 8,
    "repeats": 3,
    "warmup": 1,
    "image_sides": (512, 1024, 2048),
    "face_counts": (1, 2, 4, 8),
    "copies": 2,
}
"""Every case (--full): the defaults of RestoreBenchConfig."""


@dataclass(frozen=True)
class RestoreBenchConfig:
    """What `drbfr bench restore` measures (see the CLI for each option's meaning)."""

    preset: str = "tiny"
    model: str | None = None
    """A trained bundle (path or name) instead of the preset's random-weight networks."""
    device: str = "auto"
    precisions: tuple[Precision, ...] = (Precision.AUTO,)
    """auto: fp32 on the CPU, fp16 and bf16 on CUDA."""
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    steps: tuple[int, ...] = ()
    """Sampling step counts to bench (empty: the model's)."""
    start_ts: tuple[float, ...] = ()
    """Truncated starts (empty: the model's)."""
    samples: tuple[int, ...] = ()
    """Averaged samples per face (empty: the model's)."""
    flips: tuple[bool, ...] = ()
    """F's flip ensemble on / off (empty: the model's)."""
    profile: bool = True
    """Time each network of one restoration at each sampling (where the time goes)."""
    sampler: Sampler | None = None
    faces: int = 8
    """Faces per restorer pass (at least the largest batch size)."""
    repeats: int = 3
    warmup: int = 1
    calls_only: bool = False
    photos: Path | None = None
    """Whole photos (with `detector`); else aligned_faces, else synthetic aligned images."""
    aligned_faces: Path | None = None
    max_images: int | None = None
    """Use at most this many input images (None: all)."""
    detector: DetectorKind = DetectorKind.YUNET
    weights_dir: Path | None = None
    background: Background = Background.LANCZOS
    upscale: float = 2.0
    pipeline: bool = True
    scaling: bool = True
    image_sides: tuple[int, ...] = (512, 1024, 2048)
    face_counts: tuple[int, ...] = (1, 2, 4, 8)
    copies: int = 2
    """Images per whole run in the scaling tables."""
    run_repeats: int = 1
    """Whole `restore_images` runs per case (each takes seconds, so one is usually enough)."""
    seed: int = 0

    def __post_init__(self) -> None:
        positive = {
            "batch_sizes": self.batch_sizes,
            "steps": self.steps,
            "samples": self.samples,
            "image_sides": self.image_sides,
            "face_counts": self.face_counts,
        }
        for name, values in positive.items():
            if not values and name == "batch_sizes":
                raise ValueError(f"{name} needs at least one value")
            if any(v < 1 for v in values):
                raise ValueError(f"{name} must be positive, got {list(values)}")
        if not all(0 < t <= 1 for t in self.start_ts):
            raise ValueError(f"start_t values must lie in (0, 1], got {list(self.start_ts)}")
        if min(self.repeats, self.copies, self.run_repeats) < 1 or self.warmup < 0:
            raise ValueError(
                "repeats, run_repeats and copies must be at least 1, warmup at least 0"
            )

    @property
    def face_count(self) -> int:
        return max(self.faces, max(self.batch_sizes))


@runtime_checkable
class RestorePeers(Protocol):
    """Other restorers timed in the same run as drbfr, on its device, precision and faces (the
    checkout's bench/harness/peers.py: GFPGAN and CodeFormer)."""

    def measure(
        self, runner: Runner, faces: Sequence[np.ndarray], seed: int
    ) -> dict[str, dict[str, Any]]:
        """Each peer's facts and timing rows, by name."""
        ...

    def ratios(
        self, rows: Sequence[dict[str, Any]], peers: dict[str, dict[str, Any]], *, estimated: bool
    ) -> list[dict[str, Any]]:
        """drbfr's time per face over each peer's, for each restorer row."""
        ...

    def tables(self, run: dict[str, Any], label: str) -> list[Table]:
        """The peers' tables of one run (one precision)."""
        ...


def resolve_precisions(precisions: Sequence[Precision], device: torch.device) -> list[Precision]:
    """auto -> fp32 on the CPU (and MPS), fp16 and bf16 on CUDA; others as given, in order."""
    out: list[Precision] = []
    for precision in precisions:
        if precision is Precision.AUTO:
            chosen = [Precision.FP16, Precision.BF16] if device.type == "cuda" else [Precision.FP32]
        else:
            chosen = [precision]
        out += [p for p in chosen if p not in out]
    for precision in out:
        autocast_dtype(precision, device)  # DrbfrError for fp16 on the CPU
    return out


def _bundle(config: RestoreBenchConfig) -> tuple[Bundle, dict[str, Any]]:
    if config.model is None:
        bundle = random_bundle(config.preset, seed=config.seed)
        return bundle, {"source": "random weights", "preset": config.preset}
    path = resolve_bundle(config.model, config.weights_dir)
    bundle = load_bundle(path, weights_dir=config.weights_dir)
    return bundle, {"source": str(path), "preset": None}


def _samplings(bundle: Bundle, config: RestoreBenchConfig) -> list[SamplingConfig]:
    """Every combination of the asked steps, starts, samples and flips; a field not asked for
    keeps the model's default sampling."""
    base = (
        bundle.sampling
        if config.sampler is None
        else replace(bundle.sampling, sampler=config.sampler)
    )
    grid = itertools.product(
        config.steps or (base.steps,),
        config.start_ts or (base.start_t,),
        config.samples or (base.samples,),
        config.flips or (base.fidelity_flip,),
    )
    return [replace(base, steps=s, start_t=t, samples=n, fidelity_flip=f) for s, t, n, f in grid]


# ---------------------------------------------------------------------------------------------
# Inputs


def _inputs(
    config: RestoreBenchConfig, device: torch.device, scratch: Path
) -> tuple[list[np.ndarray], RunInputs, dict[str, Any]]:
    """(aligned faces for the model stages, the whole runs' inputs and tools, a description).

    The runs restore --photos (whole photos), else --aligned-faces, else synthetic 512 px
    images (both as --aligned inputs); the model sees --aligned-faces when given, else the
    faces of those inputs."""
    if config.photos is not None:
        detector = build_detector(config.detector, config.weights_dir, device)
        upsampler = build_upsampler(
            config.background, config.upscale, device=str(device), half=device.type == "cuda"
        )
        inputs = run_inputs(
            collect_images([config.photos])[: config.max_images],
            aligned=False,
            detector=detector,
            detector_name=config.detector.value,
            upsampler=upsampler,
            background=config.background.value,
            upscale=config.upscale,
        )
        what = f"{len(inputs.sources)} whole photos from {config.photos}"
    else:
        folder = config.aligned_faces or write_synthetic_set(
            scratch / "synthetic", config.face_count, seed=config.seed
        )
        sources = collect_images([folder])[: config.max_images]
        inputs = run_inputs(sources, aligned=True, upscale=config.upscale)
        kind = "aligned faces" if config.aligned_faces else "synthetic 512 px images"
        what = f"{len(inputs.sources)} {kind} (restored as --aligned inputs)"
    if config.aligned_faces is not None:
        faces = read_faces(collect_images([config.aligned_faces]), config.face_count)
    elif inputs.options.aligned:
        faces = read_faces(inputs.sources, config.face_count)
    else:
        faces = _faces_of_photos(inputs, config.face_count)
    if not faces:
        raise DrbfrError("no faces found in the inputs; give --aligned-faces or other photos")
    return faces, inputs, {"pipeline_inputs": what, "model_faces": len(faces)}


def _faces_of_photos(inputs: RunInputs, count: int) -> list[np.ndarray]:
    faces: list[np.ndarray] = []
    detector = inputs.tools.detector
    if detector is None:
        raise ValueError("whole photos need a detector")
    for source in inputs.sources:
        rgb = read_image(source.path).rgb
        faces += [align_face(rgb, f).crop for f in detect_faces(detector, rgb, DetectOptions())]
        if len(faces) >= count:
            break
    return faces


# ---------------------------------------------------------------------------------------------
# The run


class _Phases:
    """Notices and progress: each notice starts the next of `total` phases."""

    def __init__(self, notice: Notice | None, progress: Progress | None, total: int) -> None:
        self._notice, self._progress, self.total, self.done = notice, progress, total, -1

    def __call__(self, message: str) -> None:
        self.done += 1
        if self._notice is not None:
            self._notice(message)
        if self._progress is not None:
            self._progress(self.done, self.total, message)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress(self.total, self.total, "done")


def phase_count(config: RestoreBenchConfig, precisions: int, peers: bool = False) -> int:
    """How many phases (notices) a bench run has (`peers`: with peers timed)."""
    whole = config.pipeline and not config.calls_only
    profiled = config.profile and not config.calls_only
    per_precision = 1 + peers + (not config.calls_only) + whole + profiled
    return int(config.pipeline) + precisions * per_precision


def run_restore_bench(
    config: RestoreBenchConfig,
    notice: Notice | None = None,
    progress: Progress | None = None,
    peers: RestorePeers | None = None,
) -> dict[str, Any]:
    """Measure everything `config` asks for (and `peers`, in the same run); the results as a
    JSON-ready dict. `notice` gets a line as each phase starts, `progress` the phases done and
    in all."""
    device = resolve_device(config.device)
    precisions = resolve_precisions(config.precisions, device)
    say = _Phases(notice, progress, phase_count(config, len(precisions), peers is not None))
    bundle, source = _bundle(config)
    samplings = _samplings(bundle, config)
    result: dict[str, Any] = {
        "kind": "restore",
        "machine": machine_info(device),
        "settings": _settings(config),
        "model": {**source, **model_facts(bundle)},
    }
    with tempfile.TemporaryDirectory(prefix="drbfr-bench-") as tmp:
        scratch = Path(tmp)
        faces, inputs, described = _inputs(config, device, scratch)
        result["inputs"] = described
        if config.pipeline:
            say("pipeline stages")
            result["pipeline_stages"] = stage_times(
                inputs,
                bundle.face_size,
                scratch / "stages",
                repeats=config.repeats,
                warmup=config.warmup,
            )
        result["runs"] = [
            _run_precision(
                config, bundle, samplings, faces, inputs, device, precision, scratch, say, peers
            )
            for precision in precisions
        ]
    say.finish()
    return result


def _run_precision(
    config: RestoreBenchConfig,
    bundle: Bundle,
    samplings: list[SamplingConfig],
    faces: list[np.ndarray],
    inputs: RunInputs,
    device: torch.device,
    precision: Precision,
    scratch: Path,
    say: Notice,
    peers: RestorePeers | None = None,
) -> dict[str, Any]:
    dtype = autocast_dtype(precision, device)
    runner = Runner(device, dtype, config.repeats, config.warmup)
    run: dict[str, Any] = {"device": str(device), "precision": precision.value}
    say(f"{precision.value}: model stages")
    stage_samplings = [] if config.calls_only else samplings
    run["model_stages"] = stage_rows(bundle, runner, faces, config.batch_sizes, stage_samplings)
    run["estimated"] = estimate_rows(bundle, run["model_stages"], samplings)
    if not config.calls_only:
        say(f"{precision.value}: restorer at each batch size")
        run["restorer"] = restorer_rows(
            bundle, runner, faces, config.face_count, config.batch_sizes, samplings
        )
        run["batching"] = batching_rows(run["restorer"])
    if config.profile and not config.calls_only:
        say(f"{precision.value}: where a restoration's time goes")
        run["profile"] = _profile(bundle, samplings, faces[0], runner)
    if peers is not None:
        say(f"{precision.value}: peers")
        run["baselines"] = peers.measure(runner, faces, config.seed)
        free_memory()
        measured = run.get("restorer")
        run["ratios"] = peers.ratios(
            measured or run["estimated"], run["baselines"], estimated=not measured
        )
    if config.pipeline and not config.calls_only:
        say(f"{precision.value}: whole runs")
        run |= _whole_runs(config, bundle, samplings[0], faces, inputs, runner, scratch)
    return run


def _profile(
    bundle: Bundle, samplings: list[SamplingConfig], face: np.ndarray, runner: Runner
) -> list[dict[str, Any]]:
    """Each network's share of one face's restoration, at each sampling."""
    lq = face_batch([face], bundle.face_size, 1).to(runner.device) * 2.0 - 1.0
    return [
        {
            **sampling_key(s),
            **profile_restore(bundle, lq, s, device=runner.device, dtype=runner.dtype),
        }
        for s in samplings
    ]


def _whole_runs(
    config: RestoreBenchConfig,
    bundle: Bundle,
    sampling: SamplingConfig,
    faces: list[np.ndarray],
    inputs: RunInputs,
    runner: Runner,
    scratch: Path,
) -> dict[str, Any]:
    """Whole `restore_images` runs with the first sampling: batched vs one face per call, and
    (with `scaling`) by image size and faces per image, at the largest batch size."""
    restorer = BundleRestorer(bundle, runner.device, runner.dtype, sampling)
    batch = max(config.batch_sizes)
    common = {"device": runner.device, "repeats": config.run_repeats}
    out: dict[str, Any] = {
        "pipeline": {
            "steps": sampling.steps,
            "start_t": sampling.start_t,
            **batching_runs(inputs, restorer, batch, scratch / "runs", **common),
        }
    }
    if config.scaling:
        sized = dict(batch=batch, copies=config.copies, **common)
        out["scaling"] = {
            "steps": sampling.steps,
            "start_t": sampling.start_t,
            "image_size": image_size_rows(
                inputs, restorer, config.image_sides, faces[0], scratch / "sizes", **sized
            ),
            "face_count": face_count_rows(
                inputs, restorer, config.face_counts, faces, scratch / "counts", **sized
            ),
        }
    return out


def _settings(config: RestoreBenchConfig) -> dict[str, Any]:
    """The config as JSON values (enums and paths as strings)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(item) for item in value]
        return str(value) if isinstance(value, Path | StrEnum) else value

    return {key: plain(value) for key, value in asdict(config).items()}
