"""The model side of the restore benchmark: each model stage at each batch size, the restorer
over a set of faces at each batch size (batch 1 is the plain one-face loop), and the per-face
times estimated from single network calls.

Faces are float32 RGB aligned crops in [0, 1]; every row is a plain dict (JSON-ready).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from drbfr_cli.benchmark.inputs import cycle_to
from drbfr_cli.benchmark.measure import Measurement, count_flops, measure, parameter_count
from drbfr_cli.benchmark.random_bundle import shape_copy
from drbfr_cli.benchmark.restore_report import SAMPLING_FIELDS, sampling_id
from drbfr_cli.bundle import Bundle
from drbfr_cli.diffusion.pipeline import Condition, LDRMDenoiser, condition
from drbfr_cli.diffusion.sampling import SamplingConfig, network_calls, restore_latents
from drbfr_cli.imaging import faces_to_tensor
from drbfr_cli.nets.autoencoder import VQAutoencoder
from drbfr_cli.restore.prepare import resize_square
from drbfr_cli.restore.restorer import BundleRestorer

MODEL_STAGES = ("dr", "vae_encode", "network_call", "vae_decode")
"""Stages timed one call at a time; sampling is `network_call` repeated by the sampler."""
ONCE_PER_FACE = ("dr", "vae_encode", "vae_decode")
"""The stages a restoration runs once (the network runs once per sampling step)."""


@dataclass(frozen=True)
class Runner:
    """Where and how the model runs, and how it is timed."""

    device: torch.device
    dtype: torch.dtype | None
    """autocast dtype (None: fp32)."""
    repeats: int
    warmup: int

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def measure(self, fn: Callable[[], object], *, warmup: int | None = None) -> Measurement:
        """Time fn under no_grad and autocast."""

        def run() -> None:
            with torch.no_grad(), self.autocast():
                fn()

        warm = self.warmup if warmup is None else warmup
        return measure(run, device=self.device, repeats=self.repeats, warmup=warm)


def face_batch(faces: Sequence[np.ndarray], size: int, count: int) -> torch.Tensor:
    """`count` faces (repeating `faces`) resized to `size`, as N x 3 x size x size in [0, 1]."""
    return faces_to_tensor([resize_square(face, size) for face in cycle_to(faces, count)])


def timing_row(measurement: Measurement, faces: int) -> dict[str, Any]:
    """Per-face time, faces/s and memory of a measurement that handled `faces` faces."""
    return {
        "seconds_per_face": measurement.seconds / faces,
        "faces_per_s": faces / measurement.seconds,
        **measurement.to_dict(),
    }


def sampling_key(sampling: SamplingConfig) -> dict[str, Any]:
    return {
        "steps": sampling.steps,
        "start_t": sampling.start_t,
        "samples": sampling.samples,
        "flip": sampling.fidelity_flip,
    }


# ---------------------------------------------------------------------------------------------
# Model facts


def model_facts(bundle: Bundle) -> dict[str, Any]:
    """Parameters of each part and FLOPs of each stage for one face (a multiply-add counts
    two; counted on a shape-only copy, so nothing is computed)."""
    meta = shape_copy(bundle)
    parts, side = meta.parts, meta.face_size
    lq = torch.empty(1, 3, side, side, device="meta")
    cond = condition(parts, lq, use_dr=meta.use_dr)
    f_lq = cond.f_lq
    denoiser = LDRMDenoiser(meta.ldrm, cond, meta.schedule)
    t = torch.zeros(1, dtype=torch.int64, device="meta")
    vae = parts.first_stage.model
    if isinstance(vae, VQAutoencoder):
        decode = count_flops(lambda: vae.decode_quantized(f_lq))
        codes = vae.config.num_codes  # the nearest-code search before decoding, by hand
        search = 2.0 * f_lq.shape[2] * f_lq.shape[3] * codes * vae.config.latent_channels
    else:  # TAEF2: no codebook
        decode, search = count_flops(lambda: parts.first_stage.decode(f_lq)), 0.0
    flops = {
        "dr": count_flops(lambda: parts.encoder(lq)) if meta.use_dr else 0.0,
        "vae_encode": count_flops(lambda: parts.first_stage.encode(lq)),
        "network_call": count_flops(lambda: denoiser(f_lq, t, conditional=True)),
        "vae_decode": None if decode is None else decode + search,
    }
    return {
        "face_size": bundle.face_size,
        "latent": list(f_lq.shape[1:]),
        "parameters": {
            "dr_encoder": parameter_count(bundle.parts.encoder),
            "vae": parameter_count(bundle.parts.first_stage.model),
            "denoiser": parameter_count(bundle.ldrm),
        },
        "flops_per_face": flops,
        "default_sampling": {
            **sampling_key(bundle.sampling),
            "sampler": str(bundle.sampling.sampler),
        },
    }


# ---------------------------------------------------------------------------------------------
# Model stages


def stage_rows(
    bundle: Bundle,
    runner: Runner,
    faces: Sequence[np.ndarray],
    batch_sizes: Sequence[int],
    samplings: Sequence[SamplingConfig],
) -> list[dict[str, Any]]:
    """Per batch size: E_DR, VAE encode, one network call and VAE decode, each timed alone, and
    (for each sampling in `samplings`) the whole sampling loop."""
    bundle.to(runner.device)
    parts, schedule = bundle.parts, bundle.schedule
    rows = []
    for batch in batch_sizes:
        lq = face_batch(faces, bundle.face_size, batch).to(runner.device) * 2.0 - 1.0
        with torch.no_grad(), runner.autocast():
            cond = condition(parts, lq, use_dr=bundle.use_dr)
        cond = Condition(cond.f_lq.float(), cond.f_dr)  # as in restore_faces: fp32 sampler state
        f_lq = cond.f_lq
        denoiser = LDRMDenoiser(bundle.ldrm, cond, schedule)
        t = torch.full((batch,), schedule.num_train_timesteps - 1, device=runner.device)
        seeds = list(range(batch))
        calls: dict[str, Callable[[], object]] = {
            "dr": lambda lq=lq: parts.encoder(lq),
            "vae_encode": lambda lq=lq: parts.first_stage.encode(lq),
            "network_call": lambda d=denoiser, z=f_lq, t=t: d(z, t, conditional=True),
            "vae_decode": lambda z=f_lq: parts.first_stage.decode(z),
        }
        if not bundle.use_dr:
            del calls["dr"]
        row: dict[str, Any] = {"batch": batch}
        for name, fn in calls.items():
            row[name] = timing_row(runner.measure(fn), batch)
        row["sampling"] = [
            {
                **sampling_key(sampling),
                "calls": network_calls(schedule, sampling),
                **timing_row(
                    runner.measure(
                        lambda s=sampling, d=denoiser, z=f_lq, seeds=seeds: restore_latents(
                            d, z, seeds, schedule, s
                        )
                    ),
                    batch,
                ),
            }
            for sampling in samplings
        ]
        rows.append(row)
    return rows


def estimate_rows(
    bundle: Bundle, stages: Sequence[dict[str, Any]], samplings: Sequence[SamplingConfig]
) -> list[dict[str, Any]]:
    """Per-face time of a whole restoration estimated from the single calls of `stages`:
    (E_DR + VAE encode + calls x network call + VAE decode) / batch."""
    rows = []
    for stage in stages:
        once = sum(stage[name]["seconds"] for name in ONCE_PER_FACE if name in stage)
        for sampling in samplings:
            calls = network_calls(bundle.schedule, sampling)
            seconds = once + calls * stage["network_call"]["seconds"]
            rows.append(
                {
                    "batch": stage["batch"],
                    **sampling_key(sampling),
                    "calls": calls,
                    "seconds_per_face": seconds / stage["batch"],
                    "faces_per_s": stage["batch"] / seconds,
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------
# The restorer, batched and one face at a time


def restorer_rows(
    bundle: Bundle,
    runner: Runner,
    faces: Sequence[np.ndarray],
    count: int,
    batch_sizes: Sequence[int],
    samplings: Sequence[SamplingConfig],
) -> list[dict[str, Any]]:
    """`count` faces through the FaceRestorer the pipeline calls, in calls of each batch size
    (the last call of a pass may be shorter); batch 1 is the plain one-face loop."""
    images = face_batch(faces, bundle.face_size, count)
    seeds = list(range(count))
    rows = []
    for sampling in samplings:
        restorer = BundleRestorer(bundle, runner.device, runner.dtype, sampling)
        for batch in batch_sizes:

            def run(restorer=restorer, batch=batch) -> None:
                for start in range(0, count, batch):
                    restorer.restore(images[start : start + batch], seeds[start : start + batch])

            measurement = measure(
                run, device=runner.device, repeats=runner.repeats, warmup=runner.warmup
            )
            rows.append(
                {
                    "batch": batch,
                    **sampling_key(sampling),
                    "faces": count,
                    "calls": network_calls(bundle.schedule, sampling),
                    **timing_row(measurement, count),
                }
            )
    return rows


def batching_rows(restorer: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Speed-up of each batch size over the one-face loop (batch 1) with the same sampling."""
    loops = {sampling_id(r)[1:]: r for r in restorer if r["batch"] == 1}
    rows = []
    for row in restorer:
        loop = loops.get(sampling_id(row)[1:])
        if loop is None or row["batch"] == 1:
            continue
        rows.append(
            {
                "batch": row["batch"],
                **{k: row[k] for k in SAMPLING_FIELDS if k in row},
                "speedup_vs_one_face_loop": loop["seconds_per_face"] / row["seconds_per_face"],
                "faces_per_s": row["faces_per_s"],
                "loop_faces_per_s": loop["faces_per_s"],
            }
        )
    return rows
