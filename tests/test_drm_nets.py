"""DRM networks: shapes on any size, AdaIN conditioning, the patch-pair data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drbfr_cli.errors import DrbfrError
from drbfr_cli.nets.drm import AdaIN, DRMConfig, build_drm
from drbfr_cli.train.datasets import PatchPairDataset, load_faces, patch_positions

TEST_CONFIG = DRMConfig(
    crop_size=64,
    patch_size=32,
    encoder_channels=(8, 16),
    tokens=3,
    token_dim=8,
    generator_channels=(8, 16),
    projection_dim=16,
)


def test_encoder_accepts_any_size_and_gives_tokens() -> None:
    nets = build_drm(TEST_CONFIG)
    for size in [(32, 32), (57, 91), (128, 64)]:
        dr = nets["encoder"](torch.rand(2, 3, *size) * 2 - 1)
        assert dr.shape == (2, 3, 8)
    z = nets["head"](dr)
    assert z.shape == (2, 16) and torch.allclose(z.norm(dim=1), torch.ones(2))


def test_generator_keeps_size_and_starts_as_identity_then_depends_on_dr() -> None:
    nets = build_drm(TEST_CONFIG)
    hq = torch.rand(2, 3, 32, 32) * 2 - 1
    dr_a, dr_b = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    out = nets["generator"](hq, dr_a)
    assert out.shape == hq.shape
    # AdaIN starts neutral: the DR has no effect until its affine layers learn.
    assert torch.allclose(out, nets["generator"](hq, dr_b))
    for module in nets["generator"].modules():
        if isinstance(module, AdaIN):
            torch.nn.init.normal_(module.affine.weight, std=0.5)
    assert not torch.allclose(nets["generator"](hq, dr_a), nets["generator"](hq, dr_b))


def test_config_validates_geometry() -> None:
    with pytest.raises(ValueError, match="two non-overlapping patches"):
        DRMConfig(crop_size=60, patch_size=32)


def test_patch_positions_never_overlap() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        (y1, x1), (y2, x2) = patch_positions(rng, 100, 40)
        assert abs(y1 - y2) >= 40 or abs(x1 - x2) >= 40
        assert max(y1, x1, y2, x2) <= 60


def test_dataset_items_are_deterministic_aligned_and_degraded() -> None:
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(3)]
    data = PatchPairDataset(faces, crop_size=64, patch_size=32, seed=4)
    first, again, other = data[11], data[11], data[12]
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["lq1"], other["lq1"])
    assert (
        first["lq1"].shape == (3, 32, 32) and first["lq1"].min() >= -1 and first["lq1"].max() <= 1
    )
    sigma, r, delta, q = first["params"].tolist()
    assert 0.1 <= sigma <= 10 and 0.8 <= r <= 8 and 0 <= delta <= 20 and 60 <= q <= 100
    assert not torch.equal(first["lq2"], first["hq2"])


def test_load_faces_errors(tmp_path: Path) -> None:
    with pytest.raises(DrbfrError, match="no images"):
        load_faces(tmp_path, 64)
    (tmp_path / "broken.png").write_bytes(b"nope")
    with pytest.raises(DrbfrError, match="no readable image"):
        load_faces(tmp_path, 64)
