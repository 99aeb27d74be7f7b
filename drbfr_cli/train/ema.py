"""Exponential moving averages of trained modules."""

from __future__ import annotations

import copy

import torch


class EmaModules:
    """An EMA copy of each module: ema = decay * ema + (1 - decay) * weights, per optimizer step.

    Floating-point parameters and buffers are averaged; integer buffers (e.g. BatchNorm's
    counter) are copied. The copies are float32, frozen, and live on the modules' device.
    """

    def __init__(self, modules: dict[str, torch.nn.Module], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.modules = {name: _frozen_copy(module) for name, module in modules.items()}

    @torch.no_grad()
    def update(self, modules: dict[str, torch.nn.Module]) -> None:
        """Move each EMA copy towards the current weights of the module of the same name."""
        for name, module in modules.items():
            ema_state = self.modules[name].state_dict()
            for key, value in module.state_dict().items():
                target = ema_state[key]
                if target.is_floating_point():
                    target.lerp_(value.to(target.dtype), 1.0 - self.decay)
                else:
                    target.copy_(value)

    def state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """The EMA weights per module name."""
        return {name: module.state_dict() for name, module in self.modules.items()}

    def load_state_dicts(self, state_dicts: dict[str, dict[str, torch.Tensor]]) -> None:
        """Restore EMA weights saved by `state_dicts`."""
        for name, module in self.modules.items():
            module.load_state_dict(state_dicts[name])


def _frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    copied = copy.deepcopy(module).float().eval()
    copied.requires_grad_(False)
    return copied
