"""PatchGAN discriminator for the autoencoder (Isola et al. 2017; used by Esser et al. 2021).

Strided 4x4 convolutions give one real/fake logit per receptive-field patch. GroupNorm instead
of BatchNorm: no running statistics, so a step's result does not depend on batch composition.
Images are float32 RGB NCHW in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call


@dataclass(frozen=True)
class DiscriminatorOutput:
    """Logits of one step: real, detached fakes (train D), fakes through a frozen D (train G)."""

    real: torch.Tensor
    fake: torch.Tensor
    fake_for_generator: torch.Tensor


def _block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 4, stride=stride, padding=1),
        nn.GroupNorm(min(8, c_out), c_out),
        nn.LeakyReLU(0.2, inplace=True),
    ]


class PatchDiscriminator(nn.Module):
    """x (B x 3 x H x W) -> patch logits (B x 1 x h x w).

    `forward(real, fake)` does both halves of a GAN step in one call (so one DDP forward per
    step): D sees real and detached fake images (its own loss), and the fake images once more
    through a copy of its weights without gradient (the generator's loss reaches the generator
    only). Both losses can then be summed and stepped by one optimizer.
    """

    def __init__(self, *, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        modules: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = channels
        for index in range(1, layers + 1):
            out = channels * min(2**index, 8)
            modules += _block(width, out, stride=2 if index < layers else 1)
            width = out
        modules.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*modules)

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> DiscriminatorOutput:
        logits = self.net(torch.cat([real, fake.detach()]))
        frozen = {name: p.detach() for name, p in self.net.named_parameters()}
        return DiscriminatorOutput(
            real=logits[: real.shape[0]],
            fake=logits[real.shape[0] :],
            fake_for_generator=functional_call(self.net, frozen, (fake,)),
        )
