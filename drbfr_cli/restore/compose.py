"""The compose stage of `drbfr restore`: where restored faces are pasted back.

Whole images: the background is upscaled (restore/background.py) and every restored face is
warped back into it through the inverse of its alignment (the blending itself is
faces/paste.py). --aligned inputs: the restored face is the output. Gray input faces come back
gray (gray_faces).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from drbfr_cli.faces.paste import PasteFace, match_color, paste_faces, to_grayscale
from drbfr_cli.imaging import ImageData, is_gray
from drbfr_cli.restore.jobs import FaceJob
from drbfr_cli.restore.options import RestoreOptions, RestoreTools


def gray_faces(faces: Sequence[FaceJob]) -> tuple[FaceJob, ...]:
    """The faces, each restored face made gray where its input crop is gray (a gray photo, or a
    black-and-white photo inside a colour one): models may invent colour; gray faces must come
    back gray."""
    return tuple(
        replace(face, restored=to_grayscale(face.restored))
        if face.restored is not None and is_gray(face.aligned.crop)
        else face
        for face in faces
    )


def compose(
    image: ImageData, faces: Sequence[FaceJob], tools: RestoreTools, options: RestoreOptions
) -> np.ndarray:
    """The output picture: restored faces pasted on the upscaled background (whole images), or
    the restored face itself (--aligned)."""
    if options.aligned:
        face = faces[0]
        result = face.restored
        if options.color_fix:
            result = match_color(result, face.aligned.crop)
        return to_grayscale(result) if image.grayscale else result
    if tools.upsampler is None:
        raise ValueError("whole images need a background upsampler")
    pastes = [
        PasteFace(
            f.restored,
            f.aligned.affine,
            f.aligned.size,
            reference=f.aligned.crop,
            gray=is_gray(f.aligned.crop),
        )
        for f in faces
    ]
    return paste_faces(
        tools.upsampler(image.rgb),
        pastes,
        scale=options.upscale,
        color_fix=options.color_fix,
        grayscale=image.grayscale,
        parser=tools.parser,
    )
