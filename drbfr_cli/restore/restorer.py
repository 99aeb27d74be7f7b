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
from drbfr_cli.diffusion.sampling import FIDELITY_START_T, SamplingConfig, SamplingOverrides
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


AUTO_SEVERITY = (0.0, 0.65)
"""--fidelity auto: the estimated severity at or below which a face gets W = 1 (most faithful)
and at or above which it gets W = 0 (most generative), linear between; chosen on held-out
tuning faces (BENCHMARKS.md, "--fidelity auto")."""
AUTO_STEP = 0.05
"""Auto weights are rounded to this, so faces of close severity share a sampling batch."""


def lowest_weight(train_t_max: float) -> float:
    """The smallest --fidelity whose start_t the denoiser was trained for."""
    generative, faithful = FIDELITY_START_T
    if train_t_max >= generative:
        return 0.0
    return min(1.0, (generative - train_t_max) / (generative - faithful))


def auto_weight(
    severity: float, lowest: float = 0.0, ends: tuple[float, float] | None = None
) -> float:
    """A face's --fidelity under `auto`: 1 for light damage, 0 for heavy (`ends`, by default
    AUTO_SEVERITY), rounded to AUTO_STEP and kept at or above `lowest`."""
    light, heavy = ends or AUTO_SEVERITY
    weight = min(1.0, max(0.0, (heavy - severity) / (heavy - light)))
    return max(lowest, round(round(weight / AUTO_STEP) * AUTO_STEP, 4))


class BundleRestorer:
    """FaceRestorer over a bundle on a device, with autocast at the chosen precision.

    With `auto` (the user's sampling overrides), each face's sampling follows its estimated
    severity: auto_weight's --fidelity under those overrides, faces of equal weight batched
    together; a face is restored the same whichever batch it is in."""

    def __init__(
        self,
        bundle: Bundle,
        device: torch.device,
        dtype: torch.dtype | None,
        sampling: SamplingConfig,
        auto: SamplingOverrides | None = None,
    ) -> None:
        self.bundle, self.device, self.dtype, self.sampling = (
            bundle.to(device),
            device,
            dtype,
            sampling,
        )
        self.face_size = bundle.face_size
        self.auto = auto
        if auto is not None and bundle.drm_head is None:
            where = bundle.path or "this bundle"
            raise DrbfrError(f"--fidelity auto needs a degradation head; {where} has none")

    @property
    def fidelity_auto(self) -> bool:
        return self.auto is not None

    @torch.no_grad()
    def restore(self, faces: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        if len(seeds) != faces.shape[0]:
            raise ValueError(f"{faces.shape[0]} faces but {len(seeds)} seeds")
        lq = faces.to(self.device, torch.float32) * 2.0 - 1.0
        groups = [(self.sampling, list(range(len(seeds))))]
        if self.auto is not None:
            groups = self._auto_groups(lq)
        restored = torch.empty_like(lq)
        for sampling, index in groups:
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                out = self.bundle.restore(lq[index], [seeds[i] for i in index], sampling)
            restored[index] = out.float()
        return ((restored + 1.0) / 2.0).clamp(0.0, 1.0).cpu()

    def auto_weights(self, faces: torch.Tensor) -> list[float]:
        """Each face's --fidelity under `auto` (N x 3 x S x S in [0, 1])."""
        return self._weights(faces.to(self.device, torch.float32) * 2.0 - 1.0)

    def _weights(self, lq: torch.Tensor) -> list[float]:
        estimates = self.bundle.estimate(lq) or []
        lowest = lowest_weight(self.bundle.train_t_max)
        return [auto_weight(e.severity, lowest) for e in estimates]

    def _auto_groups(self, lq: torch.Tensor) -> list[tuple[SamplingConfig, list[int]]]:
        """(sampling, face indices) per distinct auto weight."""
        assert self.auto is not None
        weights = self._weights(lq)
        groups = []
        for weight in sorted(set(weights)):
            sampling = self.auto.with_fidelity(weight).apply(self.bundle.sampling)
            self.bundle.check_sampling(sampling)
            groups.append((sampling, [i for i, w in enumerate(weights) if w == weight]))
        return groups

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
    fidelity_auto: bool = False,
) -> BundleRestorer:
    """The restorer of a bundle (path or name); `sampling` replaces the bundle's defaults (a
    SamplingConfig) or changes some of them (SamplingOverrides). `fidelity_auto`: each face's
    --fidelity from its estimated severity, under the SamplingOverrides given."""
    chosen = resolve_device(device)
    dtype = autocast_dtype(Precision(precision), chosen)
    bundle = load_bundle(resolve_bundle(model, weights_dir), weights_dir=weights_dir)
    config = _sampling(bundle, sampling)
    bundle.check_sampling(config)
    auto = None
    if fidelity_auto:
        auto = sampling if isinstance(sampling, SamplingOverrides) else SamplingOverrides()
    return BundleRestorer(bundle, chosen, dtype, config, auto=auto)


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
