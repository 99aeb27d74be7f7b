"""DRM losses on constructed cases (Eqs. 4-6)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from drbfr_cli.train.losses import distribution_loss, energy_distance, info_nce, reconstruction_loss


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_reconstruction_is_l1() -> None:
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.25)
    assert reconstruction_loss(a, a) == 0
    assert math.isclose(float(reconstruction_loss(a, b)), 0.25)


def test_info_nce_is_minimal_for_matching_positives_and_orthogonal_negatives() -> None:
    n, tau = 8, 0.1
    z = torch.eye(n)
    best = float(info_nce(z, z, tau))
    # Closed form: -log(e^{1/tau} / (e^{1/tau} + (n-1) e^0)).
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + n - 1))
    assert math.isclose(best, expected, rel_tol=1e-3)
    shuffled = float(info_nce(z, z[torch.roll(torch.arange(n), 1)], tau))
    random_pairs = float(info_nce(F.normalize(torch.randn(n, n, generator=_gen()), dim=1), z, tau))
    assert best < random_pairs < shuffled
    assert math.isclose(shuffled, -math.log(1 / (math.exp(1 / tau) + n - 1)), rel_tol=1e-5)


def test_info_nce_gradient_pulls_positives_together() -> None:
    z1 = F.normalize(torch.randn(6, 4, generator=_gen(1)), dim=1).requires_grad_()
    z2 = F.normalize(torch.randn(6, 4, generator=_gen(2)), dim=1)
    before = (z1 * z2).sum(1).mean()
    info_nce(z1, z2, 0.2).backward()
    moved = F.normalize(z1 - 0.1 * z1.grad, dim=1)
    assert (moved * z2).sum(1).mean() > before


def test_info_nce_is_symmetric_in_its_views() -> None:
    z1 = F.normalize(torch.randn(5, 3, generator=_gen(3)), dim=1)
    z2 = F.normalize(torch.randn(5, 3, generator=_gen(4)), dim=1)
    assert torch.allclose(info_nce(z1, z2, 0.5), info_nce(z2, z1, 0.5))


def test_energy_distance_is_near_zero_for_one_distribution_and_grows_with_shift() -> None:
    x = torch.randn(400, 8, generator=_gen(5))
    y = torch.randn(400, 8, generator=_gen(6))
    same = float(energy_distance(x, y))
    shifts = [float(energy_distance(x + s, y)) for s in (0.25, 0.5, 1.0, 2.0)]
    assert abs(same) < 0.03
    assert all(a < b for a, b in zip([same, *shifts], shifts, strict=False)), shifts
    # For a large shift mu the energy distance approaches 2|mu| minus a constant: at least |mu|.
    assert shifts[-1] > 2.0 * math.sqrt(8) * 0.5


def test_energy_distance_detects_a_scale_change() -> None:
    x, y = torch.randn(400, 4, generator=_gen(7)), torch.randn(400, 4, generator=_gen(8))
    assert float(energy_distance(3 * x, y)) > 10 * abs(float(energy_distance(x, y)))


def test_distribution_loss_prefers_standard_normal_drs_and_has_finite_gradients() -> None:
    normal = torch.randn(64, 4, 16, generator=_gen(9))
    collapsed = torch.zeros(64, 4, 16, requires_grad=True)
    assert float(distribution_loss(normal, _gen(10))) < 0.05
    loss = distribution_loss(collapsed, _gen(10))
    loss.backward()
    assert float(loss.detach()) > 0.5 and torch.isfinite(collapsed.grad).all()
