"""What `drbfr restore` asks of a face restorer (aligned face crops in, restored crops out), and
the restorers: a model bundle on a device, or the identity.

The restore pipeline aligns faces to the FFHQ 512 template, resizes them to the restorer's
`face_size`, calls `restore` on batches gathered across images, and resizes the results back.
A restorer owns its device and precision; tensors cross this boundary on the CPU in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch

from drbfr_cli.bundle import Bundle, load_bundle, resolve_bundle
from drbfr_cli.choices import Precision
from drbfr_cli.devices import autocast_dtype, resolve_device
from drbfr_cli.diffusion.sampling import SamplingConfig, SamplingOverrides
from drbfr_cli.errors import DrbfrError
from drbfr_cli.estimate import DegradationEstimate


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


class BundleRestorer:
    """FaceRestorer over a bundle on a device, with autocast at the chosen precision."""

    def __init__(
        self,
        bundle: Bundle,
        device: torch.device,
        dtype: torch.dtype | None,
        sampling: SamplingConfig,
    ) -> None:
        self.bundle, self.device, self.dtype, self.sampling = (
            bundle.to(device),
            device,
            dtype,
            sampling,
        )
        self.face_size = bundle.face_size

    @torch.no_grad()
    def restore(self, faces: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        if len(seeds) != faces.shape[0]:
            raise ValueError(f"{faces.shape[0]} faces but {len(seeds)} seeds")
        lq = faces.to(self.device, torch.float32) * 2.0 - 1.0
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            restored = self.bundle.restore(lq, seeds, self.sampling)
        return ((restored.float() + 1.0) / 2.0).clamp(0.0, 1.0).cpu()

    @property
    def can_estimate(self) -> bool:
        """True when the bundle carries a degradation head."""
        return self.bundle.drm_head is not None

    def estimate(self, faces: torch.Tensor) -> list[DegradationEstimate] | None:
        """Each face's degradation estimate (N x 3 x S x S in [0, 1] on the CPU), or None
        without a degradation head. Computed in fp32, so it is the same at any precision."""
        return self.bundle.estimate(faces.to(self.device, torch.float32) * 2.0 - 1.0)


def load_restorer(
    model: str | None,
    *,
    device: str = "auto",
    precision: Precision = Precision.AUTO,
    sampling: SamplingOverrides | SamplingConfig | None = None,
    weights_dir: Path | None = None,
) -> BundleRestorer:
    """The restorer of a bundle (path or name); `sampling` replaces the bundle's defaults (a
    SamplingConfig) or changes some of them (SamplingOverrides)."""
    chosen = resolve_device(device)
    dtype = autocast_dtype(Precision(precision), chosen)
    bundle = load_bundle(resolve_bundle(model, weights_dir), weights_dir=weights_dir)
    config = _sampling(bundle, sampling)
    bundle.check_sampling(config)
    return BundleRestorer(bundle, chosen, dtype, config)


def _sampling(
    bundle: Bundle, sampling: SamplingOverrides | SamplingConfig | None
) -> SamplingConfig:
    """The sampling a bundle restorer runs; overrides that do not fit the bundle's own
    sampling (eta > 0 on its DPM-Solver) are a one-line DrbfrError."""
    if isinstance(sampling, SamplingConfig):
        return sampling
    try:
        return (sampling or SamplingOverrides()).apply(bundle.sampling)
    except ValueError as exc:
        raise DrbfrError(f"invalid sampling options ({exc})") from None
