"""A toy TrainTask for the training-loop tests, and a `torchrun` entry point.

Regression of y = A x + noise by a two-module MLP. Each item draws x and the noise from numpy's
global generator (as a data pipeline drawing random degradations would), and the loss adds
torch noise to the inputs, so both the data seeding and the RNG checkpointing are exercised.

    python -m torch.distributed.run --nproc_per_node 2 tests/train_toy.py RUN OUT
trains a few steps on every rank and writes each rank's final weights to OUT/rank<r>.safetensors.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

IN_FEATURES, OUT_FEATURES = 8, 3
_TRUE_MAP = np.linspace(-1.0, 1.0, IN_FEATURES * OUT_FEATURES).reshape(OUT_FEATURES, IN_FEATURES)


def _item() -> dict[str, torch.Tensor]:
    x = np.random.randn(IN_FEATURES)
    y = _TRUE_MAP @ x + 0.05 * np.random.randn(OUT_FEATURES)
    return {"x": torch.tensor(x, dtype=torch.float32), "y": torch.tensor(y, dtype=torch.float32)}


class ToyDataset(Dataset):
    """`size` items, each drawn afresh (random) every time it is read."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return _item()


class ToyStream(IterableDataset):
    """A finite stream of `size` random items (the loop re-iterates it)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __iter__(self):
        for _ in range(self.size):
            yield _item()


@dataclass
class ToyTask:
    """Two modules (encoder, head) regressing y from x."""

    hidden: int = 16
    size: int = 24
    input_noise: float = 0.01
    iterable: bool = False
    name: str = "toy"

    built: dict[str, torch.nn.Module] | None = field(default=None, repr=False)

    def modules(self) -> dict[str, torch.nn.Module]:
        """Built on first call (under the loop's seed), then the same objects."""
        if self.built is None:
            encoder = torch.nn.Sequential(
                torch.nn.Linear(IN_FEATURES, self.hidden), torch.nn.Tanh()
            )
            self.built = {"encoder": encoder, "head": torch.nn.Linear(self.hidden, OUT_FEATURES)}
        return self.built

    def dataset(self) -> Dataset:
        return ToyStream(self.size) if self.iterable else ToyDataset(self.size)

    def compute_loss(self, modules, batch, step):
        from drbfr_cli.train import LossOutput

        x = batch["x"] + self.input_noise * torch.randn_like(batch["x"])
        prediction = modules["head"](modules["encoder"](x))
        mse = torch.nn.functional.mse_loss(prediction.float(), batch["y"])
        return LossOutput(total=mse, terms={"mse": float(mse.detach())})

    def sample_grid(self, modules, batch):
        prediction = modules["head"](modules["encoder"](batch["x"]))
        rows = torch.sigmoid(torch.stack([prediction, batch["y"]]))  # 2 x B x 3
        return rows.permute(2, 0, 1).float()  # 3 x 2 x B

    def config(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "size": self.size, "input_noise": self.input_noise}


def _torchrun_main(run_dir: Path, out_dir: Path) -> None:
    """Train a few steps on each rank; save this rank's final weights for comparison."""
    import safetensors.torch

    from drbfr_cli.train import LoopConfig, train

    torch.set_num_threads(1)
    task = ToyTask()
    loop = LoopConfig(
        steps=6, batch_size=4, lr=1e-2, log_every=2, checkpoint_every=3, ema_decay=0.5, cpu=True
    )
    train(task, loop, run_dir)
    assert task.built is not None
    tensors = {
        f"{name}.{key}": value.detach().contiguous()
        for name, module in task.built.items()
        for key, value in module.state_dict().items()
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    rank = os.environ.get("RANK", "0")
    safetensors.torch.save_file(tensors, str(out_dir / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    _torchrun_main(Path(sys.argv[1]), Path(sys.argv[2]))
