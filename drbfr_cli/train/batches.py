"""Reproducible, infinite batches for the training loop.

Map-style datasets: every item is a pure function of (seed, epoch, index). Before each
`__getitem__` the global numpy, python and torch generators are seeded from those three numbers
(and restored afterwards), so an item that draws a random degradation is the same whatever the
number of loader workers, the number of processes, or where a resumed run starts. Inside
`__getitem__`, `np.random.default_rng(torch.initial_seed())` gives an explicit generator for
the item. Each epoch is a permutation drawn from (seed, epoch), the same on every rank; rank r
takes every world_size-th index of it, so the ranks see disjoint items.

Iterable datasets cannot be fast-forwarded: each rank's loader is seeded from (seed, rank,
items consumed), and `seed_worker` seeds numpy and python in each loader worker from torch's
per-worker seed (with no workers, items draw from the process's own generators, which the
loop seeds per rank and checkpoints). A resumed run is reproducible but not identical to an
uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from drbfr_cli.errors import DrbfrError

Batch = dict[str, torch.Tensor]

SAMPLE_EPOCH = -1
"""The epoch key of the fixed batch that sample grids are drawn from (never a training epoch)."""


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Move a batch's tensors to `device` (other collated values, e.g. file names, stay)."""
    return {
        key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }


def derive_seed(*keys: int) -> int:
    """A well-mixed 32-bit seed from any integers (numpy's SeedSequence hashing)."""
    entropy = [k % 2**63 for k in keys]  # SeedSequence takes non-negative integers
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: seed numpy and python from torch's per-worker seed."""
    del worker_id  # torch already folds the worker id into initial_seed()
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@contextmanager
def isolated_rng(seed: int | None = None, *, cuda: bool = False) -> Iterator[None]:
    """Run a block with its own global RNG states (torch, numpy, python), then restore them.

    With `seed`, the block starts from that seed; the caller's streams are never disturbed.
    `cuda=True` also isolates (and seeds) the CUDA generators, for blocks that draw on a GPU;
    without it the CUDA generators are not touched at all.
    """
    np_state, py_state = np.random.get_state(), random.getstate()
    gpus = cuda and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if gpus else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            if gpus:
                torch.cuda.manual_seed_all(seed)
            torch.default_generator.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class SeededItems(Dataset):
    """Wraps a map-style dataset: item (epoch, index) is drawn with RNGs seeded from both."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with isolated_rng(derive_seed(self.seed, epoch, index)):
            return self.dataset[index]


@dataclass(frozen=True)
class Shard:
    """Which slice of each epoch this process reads and from where it starts."""

    rank: int
    world_size: int
    start: int
    """Items this rank has already consumed (all epochs together)."""


class EpochSampler(Sampler[tuple[int, int]]):
    """Endless (epoch, index) keys: a per-epoch permutation, sharded by rank, from `start` on."""

    def __init__(self, size: int, seed: int, shard: Shard) -> None:
        self.size, self.seed, self.shard = size, seed, shard
        self.per_rank = size // shard.world_size

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's indices in `epoch` (the same permutation on every rank, then strided)."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        order = torch.randperm(self.size, generator=generator).tolist()
        return order[self.shard.rank :: self.shard.world_size][: self.per_rank]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.shard.start, self.per_rank)
        while True:
            for index in self.epoch_indices(epoch)[offset:]:
                yield epoch, index
            epoch, offset = epoch + 1, 0


def _is_iterable(dataset: Dataset) -> bool:
    return isinstance(dataset, IterableDataset)


def check_dataset(dataset: Dataset, world_size: int) -> None:
    """One-line errors for datasets the loop cannot draw from."""
    if _is_iterable(dataset):
        return
    size = len(dataset)  # type: ignore[arg-type]
    if size == 0:
        raise DrbfrError("the training dataset is empty")
    if size < world_size:
        raise DrbfrError(
            f"the training dataset has {size} items, fewer than {world_size} processes"
        )


def _loader_kwargs(num_workers: int) -> dict[str, Any]:
    if num_workers == 0:
        return {"num_workers": 0}
    return {
        "num_workers": num_workers,
        "worker_init_fn": seed_worker,
        "persistent_workers": True,
        "prefetch_factor": 2,
    }


def _map_batches(
    dataset: Dataset, batch_size: int, seed: int, shard: Shard, num_workers: int
) -> Generator[Batch, None, None]:
    sampler = EpochSampler(len(dataset), seed, shard)  # type: ignore[arg-type]
    loader = DataLoader(
        SeededItems(dataset, seed),
        batch_size=batch_size,
        sampler=sampler,
        generator=torch.Generator().manual_seed(derive_seed(seed, shard.rank)),
        **_loader_kwargs(num_workers),
    )
    yield from loader


def _iterable_batches(
    dataset: Dataset, batch_size: int, seed: int, shard: Shard, num_workers: int
) -> Generator[Batch, None, None]:
    stream_seed = derive_seed(seed, shard.rank, shard.start)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(stream_seed),
        **_loader_kwargs(num_workers),
    )
    while True:  # re-epoch whenever the stream ends
        produced = 0
        for batch in loader:
            produced += 1
            yield batch
        if produced == 0:
            raise DrbfrError("the training dataset yielded no batch")


def infinite_batches(
    dataset: Dataset, batch_size: int, seed: int, shard: Shard, num_workers: int
) -> Generator[Batch, None, None]:
    """Batches of `batch_size` items for this rank, forever, resuming after `shard.start` items."""
    check_dataset(dataset, shard.world_size)
    make = _iterable_batches if _is_iterable(dataset) else _map_batches
    return make(dataset, batch_size, seed, shard, num_workers)


def fixed_batch(dataset: Dataset, batch_size: int, seed: int) -> Batch:
    """The batch sample grids are drawn from: the same at every step and after a resume."""
    if _is_iterable(dataset):
        with isolated_rng(derive_seed(seed, SAMPLE_EPOCH)):
            return next(iter(DataLoader(dataset, batch_size=batch_size)))
    count = min(batch_size, len(dataset))  # type: ignore[arg-type]
    keys = [(SAMPLE_EPOCH, index) for index in range(count)]
    return next(iter(DataLoader(SeededItems(dataset, seed), batch_size=count, sampler=keys)))
