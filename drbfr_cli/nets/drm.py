"""Networks of the Degradation Representation Module (paper section 3.1).

- `DREncoder` (E_DR, Eq. 3): VGG-19-like 3x3 conv stages with pooling; the DR is read from the
  global mean and standard deviation of the last feature map, so it works on a patch or a whole
  LQ face of any size. Output f_DR: float tensor B x l x d (l tokens of width d).
- `LQGenerator` (G_LQ, Eq. 4): a U-Net that maps an HQ image and a DR to the LQ image; the DR
  modulates every decoder level through AdaIN.
- `ProjectionHead`: the MLP on f_DR used only by the contrastive loss (Eq. 5).

Images are float32 RGB NCHW in [-1, 1].
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DRMConfig:
    """Shapes of the DRM networks and of its training samples (see models/presets/drm.toml)."""

    face_size: int = 512
    crop_size: int = 160
    patch_size: int = 48
    encoder_channels: tuple[int, ...] = (16, 32, 64, 128)
    tokens: int = 4
    token_dim: int = 64
    generator_channels: tuple[int, ...] = (16, 32, 64)
    projection_dim: int = 128
    temperature: float = 0.1
    lambda_contrastive: float = 0.1
    lambda_distribution: float = 0.05

    def __post_init__(self) -> None:
        if self.crop_size < 2 * self.patch_size:
            raise ValueError("crop_size must hold two non-overlapping patches (>= 2 * patch_size)")
        if self.patch_size % 2 ** (len(self.generator_channels) - 1):
            raise ValueError("patch_size must be divisible by 2 ** (levels of G_LQ - 1)")
        if min(self.encoder_channels + self.generator_channels) < 1 or self.tokens < 1:
            raise ValueError("channel widths and token counts must be positive")


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]


class DREncoder(nn.Module):
    """E_DR: LQ image (B x 3 x H x W, [-1, 1], any H, W) -> f_DR (B x tokens x token_dim).

    VGG-like stages (two 3x3 convs each, 2x2 average pooling between stages, reflected borders
    so that a patch and a whole face see the same statistics). The DR is read from the spatial
    mean and standard deviation of *every* stage: the early stages carry the low-level evidence
    of a degradation (noise energy, missing high frequencies, 8x8 JPEG blocks), the late ones
    its larger-scale traces. The image's own mean colour is removed first, so the DR does not
    follow skin tone or lighting.
    """

    def __init__(self, *, channels: tuple[int, ...], tokens: int, token_dim: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        c_in = 3
        for index, c_out in enumerate(channels):
            pool = [nn.AvgPool2d(2)] if index > 0 else []
            self.stages.append(nn.Sequential(*pool, *_conv(c_in, c_out), *_conv(c_out, c_out)))
            c_in = c_out
        hidden = 4 * token_dim
        self.to_tokens = nn.Sequential(
            nn.Linear(2 * sum(channels), hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, tokens * token_dim),
        )
        self.tokens, self.token_dim = tokens, token_dim
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):  # He init for LeakyReLU(0.2)
                nn.init.kaiming_normal_(module.weight, a=0.2)
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Conv2d):
                module.padding_mode = "reflect"

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image - image.mean(dim=(2, 3), keepdim=True)
        statistics = []
        for stage in self.stages:
            x = stage(x)
            statistics += [x.mean(dim=(2, 3)), (x.var(dim=(2, 3), unbiased=False) + 1e-6).sqrt()]
        return self.to_tokens(torch.cat(statistics, dim=1)).view(-1, self.tokens, self.token_dim)


class AdaIN(nn.Module):
    """Adaptive instance normalisation: IN(x) * (1 + gamma(dr)) + beta(dr)."""

    def __init__(self, channels: int, dr_width: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(dr_width, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x: torch.Tensor, dr: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(dr)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class _DecoderBlock(nn.Module):
    def __init__(self, c_in: int, c_skip: int, c_out: int, dr_width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in + c_skip, c_out, 3, padding=1)
        self.ada1 = AdaIN(c_out, dr_width)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.ada2 = AdaIN(c_out, dr_width)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, dr: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        x = F.leaky_relu(self.ada1(self.conv1(torch.cat([x, skip], 1)), dr), 0.2)
        return F.leaky_relu(self.ada2(self.conv2(x), dr), 0.2)


class LQGenerator(nn.Module):
    """G_LQ: (HQ image B x 3 x H x W in [-1, 1], f_DR B x l x d) -> LQ image, same size.

    The U-Net predicts a residual on the HQ input; the flattened DR drives AdaIN in every
    decoder block (Eq. 4).
    """

    def __init__(self, *, channels: tuple[int, ...], dr_width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv(3, channels[0]), *_conv(channels[0], channels[0]))
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
                *_conv(c_out, c_out),
            )
            for c_in, c_out in itertools.pairwise(channels)
        )
        self.up = nn.ModuleList(
            _DecoderBlock(c_in, c_skip, c_skip, dr_width)
            for c_in, c_skip in zip(channels[:0:-1], channels[-2::-1], strict=True)
        )
        self.out = nn.Conv2d(channels[0], 3, 3, padding=1)

    def forward(self, hq: torch.Tensor, dr: torch.Tensor) -> torch.Tensor:
        dr_flat = dr.flatten(1)
        x = self.stem(hq)
        skips = [x]
        for block in self.down:
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, skips[-2::-1], strict=True):
            x = block(x, skip, dr_flat)
        return hq + self.out(x)


class ProjectionHead(nn.Module):
    """MLP head: f_DR (B x l x d) -> unit vectors (B x projection_dim) for InfoNCE."""

    def __init__(self, dr_width: int, projection_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dr_width, dr_width),
            nn.ReLU(inplace=True),
            nn.Linear(dr_width, projection_dim),
        )

    def forward(self, dr: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(dr.flatten(1)), dim=1)


def build_drm(config: DRMConfig) -> dict[str, nn.Module]:
    """The three DRM networks by the names their checkpoints use."""
    dr_width = config.tokens * config.token_dim
    return {
        "encoder": DREncoder(
            channels=config.encoder_channels, tokens=config.tokens, token_dim=config.token_dim
        ),
        "generator": LQGenerator(channels=config.generator_channels, dr_width=dr_width),
        "head": ProjectionHead(dr_width, config.projection_dim),
    }
