"""Per-face degradation estimates: E_DR's tokens of the face's central region (the head's
`region`: eyes, nose and mouth of the aligned face) through the degradation head
(nets/drm_head.py).

Targets, all in [0, 1] (the head regresses them; `decode` maps them back):

    sigma  (log sigma - log 0.1) / (log 10 - log 0.1)     blur, Eq. (11) range [0.1, 10] px
    r      (log r - log 0.8) / (log 8 - log 0.8)          downscale, range [0.8, 8]
    delta  delta / 20                                     noise std on 0-255, range [0, 20]
    q      (100 - q) / 40                                 JPEG quality, range [60, 100]
    severity  min(1, LPIPS-Alex(LQ, HQ) / 0.8)            how much the face has lost

Severity is perceptual: the LPIPS distance (AlexNet backbone) of the degraded face's central
region to the same region of its clean original, divided by 0.8 and clipped; 0 is untouched,
1 is LPIPS 0.8 or more. At the paper's full ranges the distances on CelebA-HQ faces run about
0.1-0.75 (median about 0.5); light damage (sigma 0.8, r 2, delta 1.6, q 100) is about 0.09. It
is learned from training pairs and predicted from the LQ face alone. Faces here are float32
RGB NCHW in [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from drbfr_cli.degradations import DegradationParams
from drbfr_cli.nets.drm_head import DegradationHead, DRHeadConfig

SEVERITY_LPIPS_SCALE = 0.8
"""LPIPS-Alex distance that counts as severity 1."""
_LOG_SIGMA = (math.log(0.1), math.log(10.0))
_LOG_R = (math.log(0.8), math.log(8.0))
_DELTA_MAX = 20.0
_Q_RANGE = (60.0, 100.0)
FIELDS = ("sigma", "r", "delta", "q", "severity")


@dataclass(frozen=True)
class DegradationEstimate:
    """One face's estimate: Eq. (11)'s parameters and a severity in [0, 1]."""

    sigma: float
    r: float
    delta: float
    q: float
    severity: float

    def as_dict(self) -> dict[str, float]:
        """Rounded for reports (3 decimals; q to 1)."""
        values = {k: round(v, 3) for k, v in asdict(self).items()}
        return {**values, "q": round(self.q, 1)}


def _unit(value: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return (value - lo) / (hi - lo)


def encode_params(params: torch.Tensor) -> torch.Tensor:
    """N x 4 (sigma, r, delta, q) -> N x 4 normalised targets in [0, 1] (module docstring)."""
    sigma, r, delta, q = params.unbind(1)
    return torch.stack(
        [
            _unit(sigma.clamp_min(1e-3).log(), *_LOG_SIGMA),
            _unit(r.clamp_min(1e-3).log(), *_LOG_R),
            delta / _DELTA_MAX,
            (_Q_RANGE[1] - q) / (_Q_RANGE[1] - _Q_RANGE[0]),
        ],
        dim=1,
    )


def decode_params(units: torch.Tensor) -> torch.Tensor:
    """The inverse of encode_params, each value clamped to its Eq. (11) range first."""
    sigma, r, delta, q = units.clamp(0, 1).unbind(1)
    return torch.stack(
        [
            (_LOG_SIGMA[0] + sigma * (_LOG_SIGMA[1] - _LOG_SIGMA[0])).exp(),
            (_LOG_R[0] + r * (_LOG_R[1] - _LOG_R[0])).exp(),
            delta * _DELTA_MAX,
            _Q_RANGE[1] - q * (_Q_RANGE[1] - _Q_RANGE[0]),
        ],
        dim=1,
    )


def severity_target(lpips: torch.Tensor) -> torch.Tensor:
    """Severity of faces with these LPIPS-Alex distances to their originals (module docstring)."""
    return (lpips / SEVERITY_LPIPS_SCALE).clamp(0, 1)


def params_tensor(params: DegradationParams) -> torch.Tensor:
    """(sigma, r, delta, q) as a float32 vector of 4."""
    return torch.tensor([params.sigma, params.r, params.delta, params.q], dtype=torch.float32)


def face_region(faces: torch.Tensor, config: DRHeadConfig) -> torch.Tensor:
    """The head's region of aligned faces (N x 3 x S x S), its box scaled to S."""
    scale = faces.shape[-1] / config.region_size
    x0, y0, x1, y1 = (round(v * scale) for v in config.region)
    return faces[..., y0:y1, x0:x1]


@torch.no_grad()
def estimate_faces(
    encoder: torch.nn.Module, head: DegradationHead, faces: torch.Tensor
) -> list[DegradationEstimate]:
    """The estimate of each aligned face of a batch (N x 3 x S x S in [-1, 1]), in fp32."""
    device = next(head.parameters()).device
    region = face_region(faces, head.config).to(device).float()
    with torch.autocast(device.type, enabled=False):
        raw = head(encoder(region)).float().cpu()
    values = torch.cat([decode_params(raw[:, :4]), raw[:, 4:].sigmoid()], dim=1)
    return [DegradationEstimate(*(float(v) for v in row)) for row in values]
