"""LPIPS (Zhang et al. 2018), with the backbone loaded from a local file.

The network is `metrics/lpips_net.py` (the v0.1 linear heads are the files torchmetrics ships
as package data); the ImageNet backbone (torchvision VGG16 or AlexNet)
is read from the weights registry (`lpips-vgg16`, `lpips-alexnet`), never downloaded, or from
any file in torchvision's `features.<i>.*` layout that the user names (not hash-checked: its
sha256 goes into the report instead). Inputs are float32 RGB HxWx3 in [0, 1], rescaled to
[-1, 1] for the network; lower is more similar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drbfr_cli import weights
from drbfr_cli.choices import LpipsNet
from drbfr_cli.errors import DrbfrError, load_strict

_WEIGHTS_NAME = {LpipsNet.VGG: "lpips-vgg16", LpipsNet.ALEX: "lpips-alexnet"}
_LAST_CONV = {LpipsNet.VGG: "features.28.weight", LpipsNet.ALEX: "features.10.weight"}
"""The deepest convolution LPIPS uses: VGG16 has features.28, AlexNet stops at features.10."""


@dataclass(frozen=True)
class Backbone:
    """A user-named backbone file: its path and sha256, for the report."""

    path: Path
    sha256: str

    def describe(self) -> str:
        return f"backbone {self.path} (sha256 {self.sha256})"


def describe(net: LpipsNet, backbone: Backbone | None = None) -> str:
    """How the LPIPS numbers were made, for reports."""
    source = backbone.describe() if backbone else f"backbone {_WEIGHTS_NAME[net]} (registry)"
    return f"LPIPS {net.value} (v0.1 heads), {source}, inputs [0, 1] rescaled to [-1, 1]"


def load_lpips(
    net: LpipsNet,
    weights_dir: Path | None,
    device: torch.device,
    backbone: Path | None = None,
) -> torch.nn.Module:
    """The LPIPS module for `net` with its torchvision backbone read from a local file: the
    registry's (`weights_dir` and the usual folders) or `backbone` when given.

    Raises WeightsMissingError (one line: file and folder) when the registry file is absent.
    """
    from drbfr_cli.metrics.lpips_net import LpipsNetwork

    path = backbone if backbone is not None else weights.require(_WEIGHTS_NAME[net], weights_dir)
    model = LpipsNetwork(net)
    _load_backbone(model.features, _read_state(path), path)
    return model.to(device)


def backbone_file(path: Path, net: LpipsNet | None) -> tuple[LpipsNet, Backbone]:
    """Check a user-named backbone file: which net it holds (VGG16 or AlexNet, from its keys),
    that this agrees with `net` when one is asked for, and its sha256."""
    if not path.is_file():
        raise DrbfrError(f"{path}: LPIPS backbone file not found")
    found = backbone_net(_read_state(path), path)
    if net is not None and net is not found:
        raise DrbfrError(f"{path}: is an LPIPS {found.value} backbone, not {net.value}")
    return found, Backbone(path=path, sha256=weights.sha256_file(path))


def backbone_net(state: dict[str, torch.Tensor], path: Path) -> LpipsNet:
    """VGG16 or AlexNet, by the deepest `features.<i>` convolution of a torchvision state dict."""
    for net in (LpipsNet.VGG, LpipsNet.ALEX):
        if _LAST_CONV[net] in state:
            return net
    raise DrbfrError(
        f"{path}: no features.10 / features.28 weights; LPIPS needs a torchvision AlexNet or "
        "VGG16 state dict (features.<i>.weight keys)"
    )


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or non-tensor file: say which and why, in one line
        raise DrbfrError(f"{path}: not a readable weight file ({exc.__class__.__name__})") from None
    if not isinstance(state, dict):
        raise DrbfrError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def _load_backbone(features: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Copy torchvision `features.<i>.*` tensors into LPIPS's copy of those layers (`<i>.*`)."""
    mapped = {}
    for name, _ in features.named_parameters():
        key = f"features.{name}"
        if key not in state:
            raise DrbfrError(f"{path}: {key} missing; is this the right backbone file?")
        mapped[name] = state[key]
    load_strict(features, mapped, what="tensor shapes do not match", where=path)


def lpips_distance(model: torch.nn.Module, restored: np.ndarray, reference: np.ndarray) -> float:
    """LPIPS between two float32 RGB HxWx3 images in [0, 1] of the same size (0 = identical)."""
    if restored.shape != reference.shape:
        raise DrbfrError("LPIPS needs images of the same size")
    device = next(model.parameters()).device
    to_net = lambda a: torch.from_numpy(a.transpose(2, 0, 1).copy())[None].to(device) * 2 - 1  # noqa: E731
    with torch.inference_mode():
        return float(model(to_net(restored), to_net(reference)).flatten()[0])
