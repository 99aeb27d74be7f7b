"""The encode stage of `drbfr restore`: an image's output files as bytes (nothing is written
here; finish.py writes them), and how each is encoded."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import cv2
import numpy as np

from drbfr_cli.folders import CMP, CROPPED_FACES, RESTORED_FACES
from drbfr_cli.imaging import ALPHA_EXTENSIONS, ImageData, encode_image
from drbfr_cli.restore.jobs import ImageJob
from drbfr_cli.restore.options import RestoreOptions
from drbfr_cli.restore.plan import face_path


def encode_outputs(job: ImageJob, result: np.ndarray, options: RestoreOptions) -> dict[Path, bytes]:
    """The encoded files of an image: the face crops (--save-faces), then the image."""
    image = job.image
    encode = partial(encode_image, **file_settings(image, options))
    files: dict[Path, bytes] = {}
    if options.save_faces:
        for index, face in enumerate(job.faces):
            crop, restored = face.aligned.crop, face.restored
            for folder, pixels in (
                (CROPPED_FACES, crop),
                (RESTORED_FACES, restored),
                (CMP, np.concatenate([crop, restored], axis=1)),
            ):
                path = face_path(job.output, options, folder, index)
                files[path] = encode(path, pixels)
    files[job.output] = encode(job.output, result, alpha=resized_alpha(image, result.shape))
    return files


def drops_alpha(job: ImageJob) -> bool:
    """True when the image has transparency that its output format cannot hold (--ext jpg)."""
    has_alpha = job.image is not None and job.image.alpha is not None
    return has_alpha and job.output.suffix.lower() not in ALPHA_EXTENSIONS


def file_settings(image: ImageData, options: RestoreOptions) -> dict[str, bool | int]:
    """How the outputs of `image` are encoded (write_image / as_written keywords)."""
    return {"grayscale": image.grayscale, "bit_depth": image.bit_depth, "quality": options.quality}


def resized_alpha(image: ImageData, shape: tuple[int, ...]) -> np.ndarray | None:
    """The input's alpha channel at the output's size, or None."""
    if image.alpha is None:
        return None
    size = (shape[1], shape[0])
    if image.alpha.shape[::-1] == size:
        return image.alpha
    return np.clip(cv2.resize(image.alpha, size, interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
