"""What `drbfr restore` asks of a face restorer: aligned face crops in, restored crops out.

The restore pipeline aligns faces to the FFHQ 512 template, resizes them to the restorer's
`face_size`, calls `restore` on batches gathered across images, and resizes the results back.
A restorer owns its device and precision; tensors cross this boundary on the CPU in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch


class FaceRestorer(Protocol):
    face_size: int
    """Side of the square aligned faces that `restore` takes and returns."""

    def restore(self, faces: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """N x 3 x S x S float32 RGB in [0, 1] on the CPU -> the same shape, dtype and range.

        seeds[i] seeds every random draw made for faces[i], so a face is restored the same
        whichever batch it is in.
        """
        ...


class IdentityRestorer:
    """Returns the faces unchanged: checks the pipeline's geometry, seams and colour alone."""

    def __init__(self, face_size: int = 512) -> None:
        self.face_size = face_size

    def restore(self, faces: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        if len(seeds) != faces.shape[0]:
            raise ValueError(f"{faces.shape[0]} faces but {len(seeds)} seeds")
        return faces.clone()
