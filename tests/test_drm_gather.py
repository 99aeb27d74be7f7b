"""The DRM's batch-level terms with 2 processes (gloo) equal one process holding the whole batch:
contrastive negatives and the energy distance are gathered across ranks with gradients."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from drbfr_cli.train.drm import batch_terms

WORLD = 2
ROWS = 3  # items per process
TOKENS, WIDTH, INPUT = 2, 4, 5
TEMPERATURE = 0.2


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(TOKENS * WIDTH, 6)

    def forward(self, dr: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(dr.flatten(1)), dim=1)


def _networks() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return nn.Linear(INPUT, TOKENS * WIDTH), _Head()


def _whole_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    n = WORLD * ROWS
    return {
        "x1": torch.randn(n, INPUT, generator=generator),
        "x2": torch.randn(n, INPUT, generator=generator),
        "reference": torch.randn(2 * n, TOKENS * WIDTH, generator=generator),
    }


def _loss(encoder, head, x1, x2, reference) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    dr1 = encoder(x1).view(-1, TOKENS, WIDTH)
    dr2 = encoder(x2).view(-1, TOKENS, WIDTH)
    terms = batch_terms(dr1, dr2, head, TEMPERATURE, reference)
    return terms["distribution"] + 0.5 * terms["contrastive"], terms


def _rank_main(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        encoder, head = (DistributedDataParallel(m) for m in _networks())
        data = _whole_batch()
        mine = slice(rank * ROWS, (rank + 1) * ROWS)
        x1 = data["x1"][mine].clone().requires_grad_(True)
        x2 = data["x2"][mine].clone().requires_grad_(True)
        # this process's reference rows, in the order batch_terms concatenates (dr1 rows, dr2 rows)
        reference = torch.cat([data["reference"][mine], data["reference"][WORLD * ROWS :][mine]])
        loss, terms = _loss(encoder, head, x1, x2, reference)
        loss.backward()
        torch.save(
            {
                "loss": loss.detach(),
                "terms": {k: v.detach() for k, v in terms.items()},
                "x1_grad": x1.grad,
                "x2_grad": x2.grad,
                "params": [p.grad for m in (encoder, head) for p in m.parameters()],
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_gathered_terms_and_gradients_equal_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    encoder, head = _networks()
    data = _whole_batch()
    x1 = data["x1"].clone().requires_grad_(True)
    x2 = data["x2"].clone().requires_grad_(True)
    loss, terms = _loss(encoder, head, x1, x2, data["reference"])
    loss.backward()
    params = [p.grad for m in (encoder, head) for p in m.parameters()]
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        mine = slice(rank * ROWS, (rank + 1) * ROWS)
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        for name in ("distribution", "contrastive"):
            torch.testing.assert_close(
                got["terms"][name], terms[name].detach(), rtol=1e-5, atol=1e-6
            )
        # every rank computes the whole-batch loss; DDP averages over ranks, so a rank's rows
        # carry WORLD times their share of the gradient of that (rank-averaged) objective
        torch.testing.assert_close(got["x1_grad"] / WORLD, x1.grad[mine], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got["x2_grad"] / WORLD, x2.grad[mine], rtol=1e-4, atol=1e-6)
        for grad, expected in zip(got["params"], params, strict=True):
            torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)
    assert (
        float(terms["contrastive"].detach()) > 0 and abs(float(terms["distribution"].detach())) > 0
    )


def test_one_process_uses_its_own_batch_unchanged() -> None:
    encoder, head = _networks()
    data = _whole_batch()
    _, terms = _loss(encoder, head, data["x1"], data["x2"], data["reference"])
    dr1 = encoder(data["x1"]).view(-1, TOKENS, WIDTH)
    dr2 = encoder(data["x2"]).view(-1, TOKENS, WIDTH)
    from drbfr_cli.train.losses import distribution_loss, info_nce

    expected = info_nce(head(dr1), head(dr2), TEMPERATURE)
    torch.testing.assert_close(terms["contrastive"], expected)
    expected = distribution_loss(torch.cat([dr1, dr2]), reference=data["reference"])
    torch.testing.assert_close(terms["distribution"], expected)
