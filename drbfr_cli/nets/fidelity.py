"""The fidelity network F: a small pixel-space U-Net regressing the HQ face from the LQ face.

    F(y) = y + PixelShuffle(U(PixelUnshuffle(y)))

trained with an L1 loss on Eq. (11) pairs (train/fidelity.py). An L1/L2 regressor estimates
the centre of the posterior p(x | y), the restoration of highest PSNR, which a diffusion
sample (one draw of that posterior) cannot be: this is the role of DiffBIR's restoration
module (Lin et al. 2024, stage 1) and of CodeFormer's fidelity end (w = 1). drbfr uses F(y)
as the low-frequency source of the LDRM's restoration (diffusion/pipeline.py): the coarse
structure from the regressor, the fine texture from the diffusion sample.

U: a residual U-Net without normalisation (restoration networks drop it: EDSR, Lim et al.
2017), stride-2 convolutions down, nearest upsampling + convolution up, skips added. At 512 px
its coarsest level is 64 x 64 with a receptive field of about +-70 px, wide enough for the
blur (sigma <= 6) and downscaling (r <= 6) of the training ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FidelityConfig:
    """Shape of F: one level per entry of `channels` (the first at half resolution)."""

    channels: tuple[int, ...] = (32, 64, 96)
    """Width of each level; level i works at 1 / 2^(i+1) of the face's side."""
    blocks: tuple[int, ...] = (2, 2, 4)
    """Residual blocks per level (encoder side; the decoder repeats all but the coarsest)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if not self.channels or len(self.channels) != len(self.blocks):
            raise ValueError("channels and blocks need one entry per level (at least one)")
        if min(self.channels) < 1 or min(self.blocks) < 1:
            raise ValueError("every level needs at least one channel and one block")

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this (pixel unshuffle, then one halving per level)."""
        return 2 ** len(self.channels)


class ResBlock(nn.Module):
    """x + conv(act(conv(x))), 3 x 3 convolutions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


def _stage(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(channels) for _ in range(blocks)))


class FidelityNet(nn.Module):
    """F(y) of images in [-1, 1] (B x 3 x H x W, sides multiples of `config.multiple`)."""

    def __init__(self, config: FidelityConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        self.unshuffle, self.shuffle = nn.PixelUnshuffle(2), nn.PixelShuffle(2)
        self.stem = nn.Conv2d(12, ch[0], 3, padding=1)
        self.down = nn.ModuleList(
            nn.Conv2d(ch[i], ch[i + 1], 3, stride=2, padding=1) for i in range(len(ch) - 1)
        )
        self.encoder = nn.ModuleList(_stage(c, b) for c, b in zip(ch, config.blocks, strict=True))
        self.up = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2.0), nn.Conv2d(ch[i + 1], ch[i], 3, padding=1))
            for i in range(len(ch) - 1)
        )
        self.decoder = nn.ModuleList(
            _stage(c, b) for c, b in zip(ch[:-1], config.blocks[:-1], strict=True)
        )
        self.head = nn.Conv2d(ch[0], 12, 3, padding=1)
        nn.init.zeros_(self.head.weight)  # starts as the identity, F(y) = y
        nn.init.zeros_(self.head.bias)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        height, width = lq.shape[-2:]
        if height % self.config.multiple or width % self.config.multiple:
            raise ValueError(
                f"image sides must be multiples of {self.config.multiple}, got {height} x {width}"
            )
        h = self.stem(self.unshuffle(lq))
        skips = []
        for level, stage in enumerate(self.encoder):
            if level > 0:
                h = self.down[level - 1](h)
            h = stage(h)
            skips.append(h)
        for level in reversed(range(len(self.decoder))):
            h = self.decoder[level](self.up[level](h) + skips[level])
        return lq + self.shuffle(self.head(h))


def build_fidelity(config: FidelityConfig) -> FidelityNet:
    """F with its weights drawn from the global torch generator (identity at start)."""
    return FidelityNet(config)


def fidelity_output(net: nn.Module, lq: torch.Tensor, *, flip: bool = False) -> torch.Tensor:
    """F(y) in [-1, 1]; with `flip` the mean of F(y) and the mirror image of F(mirrored y): the
    geometric self-ensemble of Lim et al. 2017 (EDSR+), kept to the left-right flip under which
    aligned faces stay aligned."""
    restored = net(lq)
    if flip:
        restored = (restored + net(lq.flip(-1)).flip(-1)) / 2
    return restored.clamp(-1, 1)
