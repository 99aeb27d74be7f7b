"""Several restore processes over one input set: who this process is, and which inputs it takes.

Under `torchrun` or `accelerate launch` each process (rank) reads RANK, WORLD_SIZE, LOCAL_RANK
and LOCAL_WORLD_SIZE. A rank takes an input when the sha256 of its path relative to its input
argument, modulo WORLD_SIZE, is its RANK: a split that every rank computes alone, that does not
depend on the order of the inputs, and that moves no other input when a file is added. The
ranks talk once, at the start: rank 0 readies OUT and sends every rank the run id under which
their report parts are merged (report.parts/<run id>/). The work itself needs no collective.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from drbfr_cli.errors import DrbfrError

_START_TIMEOUT = timedelta(minutes=30)
"""How long a rank waits at the start for the others (model loading included)."""


@dataclass(frozen=True)
class Rank:
    """This process among the processes of one run (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    host: str = ""

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    def takes(self, relative: str) -> bool:
        """True when this rank restores the input at `relative` (its path under its input)."""
        return shard_of(relative, self.world_size) == self.rank

    @property
    def label(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


def shard_of(relative: str, world_size: int) -> int:
    """The rank (0 .. world_size - 1) that restores the input at `relative`."""
    digest = hashlib.sha256(relative.encode()).digest()
    return int.from_bytes(digest[:8], "little") % world_size


def rank_from_env(env: Mapping[str, str] | None = None) -> Rank:
    """This process's rank from the launcher's variables (rank 0 of 1 without them); a
    one-line DrbfrError for values that do not fit together."""
    env = os.environ if env is None else env
    world_size = _int(env, "WORLD_SIZE", 1)
    rank = _int(env, "RANK", 0)
    local_world_size = _int(env, "LOCAL_WORLD_SIZE", world_size)
    local_rank = _int(env, "LOCAL_RANK", rank % max(local_world_size, 1))
    if world_size < 1 or not 0 <= rank < world_size:
        raise DrbfrError(f"RANK={rank} and WORLD_SIZE={world_size} do not fit together")
    if local_world_size < 1 or not 0 <= local_rank < local_world_size:
        raise DrbfrError(
            f"LOCAL_RANK={local_rank} and LOCAL_WORLD_SIZE={local_world_size} do not fit together"
        )
    return Rank(rank, world_size, local_rank, local_world_size, socket.gethostname())


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise DrbfrError(f"{name}={text!r} is not a whole number") from None


def rank_device(device: str, rank: Rank) -> str:
    """A rank's device: with CUDA, `auto` and a bare `cuda` mean cuda:LOCAL_RANK (one GPU per
    process); an explicit index, cpu and mps are kept."""
    from drbfr_cli import devices

    if not rank.sharded or device not in ("auto", "cuda"):
        return device
    if device == "auto" and not devices.cuda_available():
        return device
    count = devices.cuda_count()
    if rank.local_rank >= count:
        raise DrbfrError(
            f"{rank.label} is local rank {rank.local_rank}, but this machine has {count} CUDA "
            "device(s); start at most one process per GPU (--nproc_per_node)"
        )
    return f"cuda:{rank.local_rank}"


def agree_on_run(rank: Rank, prepare: Callable[[], None]) -> str:
    """Rank 0 calls `prepare` (readying OUT) and makes a run id; every rank returns that id once
    rank 0 is done. Uses the launcher's rendezvous (MASTER_ADDR / MASTER_PORT)."""
    if not rank.sharded:
        prepare()
        return uuid.uuid4().hex
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise DrbfrError(
            f"WORLD_SIZE is {rank.world_size} but {' and '.join(missing)} is not set; start "
            "the processes with torchrun or accelerate launch"
        )
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank.rank, world_size=rank.world_size,
                            timeout=_START_TIMEOUT)  # fmt: skip
    try:
        box: list[object] = [None]
        if rank.rank == 0:
            try:
                prepare()
                box[0] = uuid.uuid4().hex
            except DrbfrError as exc:
                box[0] = exc  # every rank stops with rank 0's one-line error
        dist.broadcast_object_list(box, src=0)
    finally:
        dist.destroy_process_group()
    if isinstance(box[0], DrbfrError):
        raise box[0]
    return str(box[0])
