"""The degradation head: a small MLP on E_DR's tokens that estimates what happened to a face.

Input f_DR (B x l x d) of the frozen E_DR (nets/drm.py) on the face's central region (`region`:
eyes, nose and mouth of the FFHQ-aligned face, the same pixels for every face); output B x 5:
the four Eq. (11) parameters normalised to [0, 1] (drbfr_cli/estimate.py has the mapping) and
a severity logit. The head itself costs a few thousand multiply-adds per face.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

OUTPUTS = 5
"""sigma, r, delta, q (normalised) and the severity logit."""


@dataclass(frozen=True)
class DRHeadConfig:
    """Shape of the degradation head (models/presets/drm_head.toml)."""

    tokens: int = 4
    token_dim: int = 64
    hidden: int = 64
    region: tuple[int, int, int, int] = (144, 193, 368, 417)
    """x0, y0, x1, y1 of the box E_DR reads, in pixels of a region_size aligned face (the
    default: 224 x 224 around the eyes, nose and mouth of the FFHQ 512 template)."""
    region_size: int = 512

    def __post_init__(self) -> None:
        if min(self.tokens, self.token_dim, self.hidden) < 1:
            raise ValueError("tokens, token_dim and hidden must be positive")
        x0, y0, x1, y1 = self.region
        if not (0 <= x0 < x1 <= self.region_size and 0 <= y0 < y1 <= self.region_size):
            raise ValueError(f"region {self.region} must lie inside the {self.region_size} face")


class DegradationHead(nn.Module):
    """f_DR (B x l x d) -> B x 5 raw outputs: normalised parameters, then a severity logit."""

    def __init__(self, config: DRHeadConfig) -> None:
        super().__init__()
        self.config = config
        width = config.tokens * config.token_dim
        self.mlp = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, OUTPUTS),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(tokens.flatten(1))
