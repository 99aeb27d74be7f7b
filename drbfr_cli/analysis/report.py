"""Reports of the DRM analysis: JSON, Markdown and a scatter plot PNG (drawn with OpenCV)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from drbfr_cli.analysis.drm import DegradationType, DRMAnalysis
from drbfr_cli.imaging import from_uint8, write_bytes_atomic, write_image

_COLOURS = [(217, 51, 51), (51, 140, 230), (51, 179, 77), (230, 153, 26)]


def summary(analysis: DRMAnalysis, meta: dict[str, Any]) -> dict[str, Any]:
    """Everything measured, as plain JSON values."""
    return {
        **meta,
        "faces": analysis.faces,
        "protocol": "leave-one-face-out: each face scored by probes fitted on the other faces",
        "type_probe": {
            "linear": analysis.type_probe.linear,
            "knn": analysis.type_probe.knn,
            "chance": 1 / len(DegradationType),
        },
        "type_probe_untrained": {
            "linear": analysis.type_probe_untrained.linear,
            "knn": analysis.type_probe_untrained.knn,
        },
        "r2": analysis.r2,
        "cosine_same_degradation_different_faces": analysis.cosine_same_degradation,
        "cosine_same_face_different_degradations": analysis.cosine_same_face,
        "reconstruction": {
            "psnr_glq_vs_lq": analysis.reconstruction_psnr,
            "ssim_glq_vs_lq": analysis.reconstruction_ssim,
            "psnr_hq_vs_lq": analysis.hq_vs_lq_psnr,
            "psnr_glq_shuffled_dr_vs_lq": analysis.reconstruction_shuffled_psnr,
        },
    }


def summary_lines(data: dict[str, Any]) -> list[str]:
    """One line per measure (a)-(d), for the terminal and the Markdown report."""
    probe, untrained, rec = data["type_probe"], data["type_probe_untrained"], data["reconstruction"]
    same_degradation = data["cosine_same_degradation_different_faces"]
    same_face = data["cosine_same_face_different_degradations"]
    r2 = ", ".join(f"{k} {v:.3f}" for k, v in data["r2"].items())
    lines = [
        f"(a) degradation type: linear probe {probe['linear']:.3f}, {data['knn_k']}-NN "
        f"{probe['knn']:.3f}; untrained encoder {untrained['linear']:.3f} / "
        f"{untrained['knn']:.3f}; chance {probe['chance']:.2f}",
        f"(b) linear-probe R^2 under random Eq. (11) degradations: {r2}",
        f"(c) DR cosine: same degradation, different faces {same_degradation:.3f}; "
        f"same face, different degradations {same_face:.3f}",
    ]
    if rec["psnr_glq_vs_lq"] is not None:
        lines.append(
            f"(d) G_LQ(HQ, DR(LQ)) vs real LQ: PSNR {rec['psnr_glq_vs_lq']:.2f} dB, "
            f"SSIM {rec['ssim_glq_vs_lq']:.3f}; with shuffled DRs "
            f"{rec['psnr_glq_shuffled_dr_vs_lq']:.2f} dB; HQ vs LQ {rec['psnr_hq_vs_lq']:.2f} dB"
        )
    return lines


def markdown(data: dict[str, Any]) -> str:
    header = [
        f"# DRM analysis: {data.get('drm', '')}",
        "",
        f"{data['faces']} faces, none seen in training; probes are scored leave-one-face-out "
        "(each face by probes fitted on the others).",
        "",
    ]
    return "\n\n".join(["\n".join(header).rstrip(), *summary_lines(data)]) + "\n"


def scatter_image(points: np.ndarray, labels: np.ndarray, size: int = 512) -> np.ndarray:
    """A PCA scatter of DRs coloured by degradation type, float RGB in [0, 1]."""
    canvas = np.full((size, size, 3), 255, np.uint8)  # OpenCV draws text on 8-bit images only
    margin = 40
    span = np.ptp(points, axis=0) + 1e-9
    xy = (points - points.min(0)) / span * (size - 2 * margin) + margin
    for (x, y), label in zip(xy, labels.astype(int), strict=True):
        cv2.circle(canvas, (int(x), int(size - y)), 5, _COLOURS[label], -1, lineType=cv2.LINE_AA)
    for index, kind in enumerate(DegradationType):
        cv2.circle(canvas, (16, 16 + 18 * index), 5, _COLOURS[index], -1, lineType=cv2.LINE_AA)
        cv2.putText(
            canvas,
            kind.value,
            (28, 21 + 18 * index),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return from_uint8(canvas)


def write_report(analysis: DRMAnalysis, out_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write analysis.json, report.md and dr_scatter.png into `out_dir`; return the summary."""
    data = summary(analysis, meta)
    write_bytes_atomic(out_dir / "analysis.json", (json.dumps(data, indent=2) + "\n").encode())
    write_bytes_atomic(out_dir / "report.md", markdown(data).encode())
    write_image(
        out_dir / "dr_scatter.png", scatter_image(analysis.scatter[:, :2], analysis.scatter[:, 2])
    )
    return data
