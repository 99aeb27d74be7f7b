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
from dataclasses import dataclass
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
