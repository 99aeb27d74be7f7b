"""`drbfr demo`: the whole method at toy scale, offline, in minutes on a CPU.

It trains a tiny DRM, VAE and LDM (64 px faces) on faces that scikit-image ships (100 LFW faces,
25 px gray, and the astronaut), exports them as a bundle, degrades held-out LFW faces by
Eq. (11), restores them with `drbfr restore --aligned`, and writes a before/after page. The
training faces are few and tiny, so the restorations are blurry: the demo shows the pipeline
working end to end, not the quality of a bundle trained on FFHQ.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from drbfr_cli.degradations import DegradationRanges
from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import write_bytes_atomic, write_image

LFW_FACES = 100
"""skimage's lfw_subset: the first 100 of its 200 images are faces."""
HELD_OUT = 8
"""LFW faces kept out of training and restored by the demo."""
ASTRONAUT_FACE = (30, 210, 150, 330)
"""(top, bottom, left, right) of Eileen Collins' face in skimage's astronaut.png."""
DEMO_START_T = 0.1
"""A truncated start close to the input: minutes of CPU training do not make a model that
restores from more noise."""
DEMO_RANGES = DegradationRanges(blur=(0.5, 2.0), scale=(1.0, 2.0), noise=(5.0, 15.0), jpeg=(70, 90))


@dataclass(frozen=True)
class DemoConfig:
    out: Path
    drm_steps: int = 150
    vae_steps: int = 500
    ldm_steps: int = 500
    seed: int = 0


def skimage_faces() -> tuple[list[np.ndarray], np.ndarray]:
    """(LFW faces as float32 RGB 25 x 25 in [0, 1], the astronaut's face as RGB) from
    scikit-image's bundled data (no network)."""
    try:
        from skimage import data
    except ImportError:
        raise DrbfrError(
            "the demo trains on faces that scikit-image ships: pip install scikit-image"
        ) from None
    lfw = data.lfw_subset()[:LFW_FACES].astype(np.float32)
    faces = [np.repeat(face[..., None], 3, axis=2) for face in lfw]
    top, bottom, left, right = ASTRONAUT_FACE
    astronaut = data.astronaut()[top:bottom, left:right].astype(np.float32) / 255.0
    return faces, astronaut


def upscale(image: np.ndarray, size: int) -> np.ndarray:
    return np.clip(cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def write_faces(out: Path) -> tuple[Path, Path]:
    """OUT/faces/train (92 LFW faces + the astronaut, 160 px) and OUT/faces/test (held-out LFW
    faces, 512 px as aligned crops); returns the two folders."""
    faces, astronaut = skimage_faces()
    train_dir, test_dir = out / "faces" / "train", out / "faces" / "test"
    for i, face in enumerate(faces[:-HELD_OUT]):
        write_image(train_dir / f"lfw_{i:03d}.png", upscale(face, 160))
    write_image(train_dir / "astronaut.png", upscale(astronaut, 160))
    for i, face in enumerate(faces[-HELD_OUT:]):
        write_image(test_dir / f"lfw_{LFW_FACES - HELD_OUT + i:03d}.png", upscale(face, 512))
    return train_dir, test_dir


def before_after_page(rows: list[tuple[str, str, str]], note: str) -> str:
    """An HTML page: one row per face (LQ, restored, HQ image paths relative to the page)."""
    cells = "\n".join(
        "<tr>"
        + "".join(f'<td><img src="{html.escape(p)}" width="192"></td>' for p in row)
        + "</tr>"
        for row in rows
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>drbfr demo</title>
<style>body{{font-family:sans-serif;margin:2em}} td{{padding:4px}} .note{{max-width:50em}}</style>
</head><body>
<h1>drbfr demo: before / after</h1>
<p class="note"><b>This is a demo, not a quality showcase.</b> {html.escape(note)}</p>
<table><tr><th>degraded input</th><th>restored</th><th>original</th></tr>
{cells}
</table></body></html>
"""


def write_page(out: Path, rows: list[tuple[str, str, str]], note: str) -> Path:
    page = out / "index.html"
    write_bytes_atomic(page, before_after_page(rows, note).encode())
    return page


Step = Callable[[str], None]


def train_stages(config: DemoConfig, train_dir: Path, step: Step) -> Path:
    """Train the tiny DRM, VAE and LDM on `train_dir` and export them; returns the bundle."""
    from drbfr_cli.presets import (
        drm_config_from_preset,
        ldm_config_from_preset,
        vae_config_from_preset,
    )
    from drbfr_cli.train.drm import DRMTask, DRMTaskConfig
    from drbfr_cli.train.export import export_bundle
    from drbfr_cli.train.ldm import LDMTask, LDMTaskConfig
    from drbfr_cli.train.loop import LoopConfig, train
    from drbfr_cli.train.vae import VAETask, VAETaskConfig, train_vae

    runs, data, seed = config.out / "runs", str(train_dir), config.seed

    def loop(defaults: dict, steps: int) -> LoopConfig:
        quiet = {"log_every": max(1, steps // 10), "checkpoint_every": steps, "num_workers": 0}
        return LoopConfig(**{**defaults, **quiet, "steps": steps, "seed": seed})

    step(f"training the DRM ({config.drm_steps} steps)")
    model, defaults = drm_config_from_preset("tiny")
    task = DRMTask(DRMTaskConfig(model=model, data=data, preset="tiny", seed=seed))
    train(task, loop(defaults, config.drm_steps), runs / "drm")
    step(f"training the VQ autoencoder ({config.vae_steps} steps)")
    vae_model, defaults = vae_config_from_preset("tiny")
    warm_up = replace(vae_model.loss, quantize_after=config.vae_steps // 2)
    vae_model = replace(vae_model, loss=warm_up)
    vae_task = VAETask(VAETaskConfig(model=vae_model, data=data, preset="tiny", seed=seed))
    train_vae(vae_task, loop(defaults, config.vae_steps), runs / "vae")
    step(f"training the restoration model ({config.ldm_steps} steps)")
    ldm_model, defaults = ldm_config_from_preset("tiny")
    ldm_settings = LDMTaskConfig(
        model=ldm_model, data=data, preset="tiny", drm=str(runs / "drm"), vae=str(runs / "vae"),
        seed=seed,
    )  # fmt: skip
    train(LDMTask(ldm_settings), loop(defaults, config.ldm_steps), runs / "ldm")
    step("exporting the bundle")
    return export_bundle(runs / "ldm", config.out / "bundle")


def degrade_test_faces(test_dir: Path, out: Path, seed: int) -> Path:
    """Eq. (11) degradations of the held-out faces (moderate ranges) into OUT/lq."""
    from drbfr_cli.imaging import collect_images
    from drbfr_cli.synthetic import DegradeConfig, make_lq_set

    lq_dir = out / "lq"
    outcomes = make_lq_set(
        collect_images([test_dir]), lq_dir, DegradeConfig(seed=seed, size=512, ranges=DEMO_RANGES)
    )
    failed = [o for o in outcomes if o.error]
    if failed:
        raise DrbfrError(f"could not degrade {failed[0].file}: {failed[0].error}")
    return lq_dir


def restore_lq(lq_dir: Path, bundle: Path, out: Path, seed: int) -> Path:
    """`drbfr restore --aligned` on the degraded faces, as a user runs it."""
    import subprocess
    import sys

    restored = out / "restored"
    command = [sys.executable, "-m", "drbfr_cli", "restore", str(lq_dir), "-o", str(restored),
               "--aligned", "--model", str(bundle), "--device", "cpu", "--seed", str(seed),
               "--start-t", str(DEMO_START_T),
               "--batch-size", "8", "--quiet", "--overwrite"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DrbfrError(f"drbfr restore failed: {result.stderr.strip().splitlines()[-1:]}")
    return restored / "restored_imgs"


def run_demo(config: DemoConfig, step: Step) -> Path:
    """Every demo stage; returns the before/after page."""
    step("writing the training faces (scikit-image's LFW subset and astronaut)")
    train_dir, test_dir = write_faces(config.out)
    bundle = train_stages(config, train_dir, step)
    step("degrading the held-out faces and restoring them with drbfr restore --aligned")
    lq_dir = degrade_test_faces(test_dir, config.out, config.seed)
    restored_dir = restore_lq(lq_dir, bundle, config.out, config.seed)
    rows = []
    for hq in sorted(test_dir.glob("*.png")):
        rows.append(tuple(
            str(p.relative_to(config.out)) for p in (lq_dir / hq.name, restored_dir / hq.name, hq)
        ))  # fmt: skip
    note = (
        f"The bundle in {bundle.name}/ was trained for {config.drm_steps} + {config.vae_steps} + "
        f"{config.ldm_steps} steps on a CPU, on 92 gray 25 px LFW faces and one astronaut, at "
        f"64 px, and restores with a truncated start at t = {DEMO_START_T} T: expect noisy, "
        "low-detail restorations that are often worse than the input. The page shows the "
        "pipeline working end to end (degrade, align, DR + VAE + diffusion sampling, write), "
        "not what DR-BFR does when trained on FFHQ."
    )
    return write_page(config.out, rows, note)
