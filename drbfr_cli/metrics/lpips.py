"""LPIPS (Zhang et al. 2018) through torchmetrics, with the backbone loaded from a local file.

torchmetrics ships the LPIPS linear heads; the ImageNet backbone (torchvision VGG16 or AlexNet)
is read from the weights registry (`lpips-vgg16`, `lpips-alexnet`), never downloaded. Inputs
are float32 RGB HxWx3 in [0, 1], rescaled to [-1, 1] for the network; lower is more similar.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from drbfr_cli import weights
from drbfr_cli.choices import LpipsNet
from drbfr_cli.errors import DrbfrError

_WEIGHTS_NAME = {LpipsNet.VGG: "lpips-vgg16", LpipsNet.ALEX: "lpips-alexnet"}


def describe(net: LpipsNet) -> str:
    """How the LPIPS numbers were made, for reports."""
    return f"LPIPS {net.value} (torchmetrics heads), inputs [0, 1] rescaled to [-1, 1]"


def load_lpips(net: LpipsNet, weights_dir: Path | None, device: torch.device) -> torch.nn.Module:
    """The LPIPS module for `net` with its torchvision backbone read from the local weight file.

    Raises WeightsMissingError (one line: file and folder) when the backbone file is absent.
    """
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    path = weights.require(_WEIGHTS_NAME[net], weights_dir)
    model = _NoTrainLpips(net=net.value, pnet_rand=True)  # heads from torchmetrics, no download
    _load_backbone(model.net, path)
    return model.eval().to(device)


def _load_backbone(backbone: torch.nn.Module, path: Path) -> None:
    """Copy torchvision `features.<i>.*` tensors into LPIPS's sliced copy of those layers."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or non-tensor file: say which and why, in one line
        raise DrbfrError(f"{path}: not a readable weight file ({exc.__class__.__name__})") from None
    mapped = {}
    for name, _ in backbone.named_parameters():
        _slice, index, param = name.split(".")
        key = f"features.{index}.{param}"
        if key not in state:
            raise DrbfrError(f"{path}: {key} missing; is this the right backbone file?")
        mapped[name] = state[key]
    try:
        backbone.load_state_dict(mapped, strict=True)
    except RuntimeError as exc:
        raise DrbfrError(
            f"{path}: tensor shapes do not match ({str(exc).splitlines()[0]})"
        ) from None


def lpips_distance(model: torch.nn.Module, restored: np.ndarray, reference: np.ndarray) -> float:
    """LPIPS between two float32 RGB HxWx3 images in [0, 1] of the same size (0 = identical)."""
    if restored.shape != reference.shape:
        raise DrbfrError("LPIPS needs images of the same size")
    device = next(model.parameters()).device
    to_net = lambda a: torch.from_numpy(a.transpose(2, 0, 1).copy())[None].to(device) * 2 - 1  # noqa: E731
    with torch.inference_mode():
        return float(model(to_net(restored), to_net(reference)).flatten()[0])
