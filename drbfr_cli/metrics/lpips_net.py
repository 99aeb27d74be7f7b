"""The LPIPS network (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric", Eq. 1), on torchvision's AlexNet or VGG16 feature layers:

    d(x, x0) = sum_l mean_hw( w_l . (yhat_l(x) - yhat_l(x0))^2 ),

yhat_l the layer-l activations scaled to unit length over channels, w_l >= 0 the learned
per-channel weights of the LPIPS v0.1 release (a 1 x 1 convolution per layer; the files
torchmetrics ships as package data, read here as data). Inputs are N x 3 x H x W in [-1, 1].
The backbone's weights are loaded by the caller (metrics/lpips.py); this module holds no I/O
but the heads' package file.
"""

from __future__ import annotations

from importlib import resources

import torch
import torchvision
from torch import nn

from drbfr_cli.choices import LpipsNet
from drbfr_cli.errors import load_strict

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
"""The LPIPS input normalisation: (x - SHIFT) / SCALE per RGB channel, x in [-1, 1]."""
TAPS = {LpipsNet.ALEX: (1, 4, 7, 9, 11), LpipsNet.VGG: (3, 8, 15, 22, 29)}
"""Indices in torchvision's `features` after which LPIPS reads a layer (the ReLUs: AlexNet
relu1-relu5, VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)."""
CHANNELS = {LpipsNet.ALEX: (64, 192, 384, 256, 256), LpipsNet.VGG: (64, 128, 256, 512, 512)}
NORM_EPS = 1e-8
"""Under the square root of the channel norm (torchmetrics' value, so the numbers agree)."""
_HEADS_FILE = {LpipsNet.ALEX: "alex.pth", LpipsNet.VGG: "vgg.pth"}


def _features(net: LpipsNet) -> nn.Sequential:
    """torchvision's feature layers up to the last tap, untrained (the caller loads them)."""
    build = torchvision.models.alexnet if net is LpipsNet.ALEX else torchvision.models.vgg16
    return build(weights=None).features[: TAPS[net][-1] + 1]


def unit_channels(x: torch.Tensor) -> torch.Tensor:
    """x scaled to unit length over channels (dim 1)."""
    return x / torch.sqrt(NORM_EPS + torch.sum(x**2, dim=1, keepdim=True))


class LpipsNetwork(nn.Module):
    """LPIPS of `net` with its v0.1 heads (heads=False: untrained heads, for shape-only copies);
    always in eval mode, no gradients to its weights (gradients flow to the inputs)."""

    def __init__(self, net: LpipsNet, *, heads: bool = True) -> None:
        super().__init__()
        self.net = net
        self.features = _features(net)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS[net])
        self.register_buffer("shift", torch.tensor(SHIFT)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE)[None, :, None, None], persistent=False)
        if heads:
            self._load_heads()
        self.requires_grad_(False).eval()

    def _load_heads(self) -> None:
        source = resources.files("torchmetrics.functional.image") / "lpips_models"
        path = source / _HEADS_FILE[self.net]
        with resources.as_file(path) as file:
            state = torch.load(file, map_location="cpu", weights_only=True)
        heads = {f"{k}.weight": state[f"lin{k}.model.1.weight"] for k in range(len(self.heads))}
        load_strict(self.heads, heads, what="LPIPS heads do not match", where=str(path))

    def train(self, mode: bool = True) -> LpipsNetwork:
        """Stays in eval mode (a metric and a loss, never trained)."""
        return super().train(False)

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tapped activations of x (in [-1, 1]), each scaled to unit length over channels."""
        taps, out = set(TAPS[self.net]), []
        h = (x - self.shift) / self.scale
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in taps:
                out.append(unit_channels(h))
        return out

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Eq. (1) per image pair: N x 1 x 1 x 1."""
        pairs = zip(self.layers(x), self.layers(x0), strict=True)
        terms = [
            head((a - b) ** 2).mean(dim=(2, 3), keepdim=True)
            for head, (a, b) in zip(self.heads, pairs, strict=True)
        ]
        return torch.stack(terms).sum(dim=0)
