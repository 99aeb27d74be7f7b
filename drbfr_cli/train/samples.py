"""Periodic sample grids: what the modules do to a fixed batch, saved as PNG."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import write_image
from drbfr_cli.train.batches import Batch, derive_seed, isolated_rng, to_device

if TYPE_CHECKING:
    from drbfr_cli.train.task import TrainTask


def image_rows(*rows: torch.Tensor) -> torch.Tensor:
    """A sample grid: each N x 3 x H x W batch in [-1, 1] laid out as one row of its images,
    the rows stacked top to bottom, as float 3 x (rows H) x (N W) in [0, 1]."""
    lines = [torch.cat(list(images), dim=2) for images in rows]
    return ((torch.cat(lines, dim=1) + 1) / 2).clamp(0, 1)


def grid_to_image(grid: torch.Tensor) -> torch.Tensor:
    """Check a task's grid (float 3xHxW in [0, 1]) and return it as HxWx3 on the CPU."""
    if grid.ndim != 3 or grid.shape[0] != 3 or not grid.is_floating_point():
        raise DrbfrError(f"sample_grid must return a float 3xHxW tensor, got {tuple(grid.shape)}")
    return grid.detach().float().clamp(0.0, 1.0).permute(1, 2, 0).cpu()


class SampleWriter:
    """Writes RUN/samples/step_NNNNNNN.png from one fixed batch, never touching training RNGs."""

    def __init__(self, task: TrainTask, batch: Batch, folder: Path, seed: int) -> None:
        self.task, self.batch, self.folder, self.seed = task, batch, folder, seed

    def write(
        self,
        modules: dict[str, torch.nn.Module],
        step: int,
        device: torch.device,
        autocast: AbstractContextManager,
    ) -> Path | None:
        """Run the task's sample_grid in eval mode and save it; None when it returns None."""
        batch = to_device(self.batch, device)
        modes = {name: module.training for name, module in modules.items()}
        for module in modules.values():
            module.eval()
        try:
            with isolated_rng(derive_seed(self.seed, step), cuda=True), torch.no_grad(), autocast:
                grid = self.task.sample_grid(modules, batch)
        finally:
            for name, module in modules.items():
                module.train(modes[name])
        if grid is None:
            return None
        path = self.folder / f"step_{step:07d}.png"
        write_image(path, grid_to_image(grid).numpy())
        return path
