"""Losses: the Degradation Representation Module (paper Eqs. 4-7) and the autoencoder GAN."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(predicted_lq: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """Eq. (4): L1 between G_LQ(r2, f_DR(p1)) and the real LQ patch p2."""
    return F.l1_loss(predicted_lq, lq)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. (5), as standard symmetric InfoNCE on unit vectors z1, z2 (B x k).

    Row i of z1 and row i of z2 come from two patches of the same LQ image (the positive pair);
    every other row of the batch is a negative. Eq. (5) as printed in the paper is garbled (its
    fraction does not normalise over the negatives), so this is the InfoNCE it describes:
    -log exp(z1_i . z2_i / tau) / sum_j exp(z1_i . z2_j / tau), averaged over both directions.
    """
    logits = z1 @ z2.t() / temperature
    targets = torch.arange(z1.shape[0], device=z1.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def _pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances |a_i - b_j| (n x m) through one matrix product, so that memory grows
    with n * m and not n * m * D (1024 gathered DRs of width 8192 would need 34 GB otherwise)."""
    squared = a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.t()
    return squared.clamp_min(1e-12).sqrt()  # safe gradient at zero distance


def _mean_pairwise_distance(a: torch.Tensor, b: torch.Tensor, *, same: bool) -> torch.Tensor:
    """Mean Euclidean distance over pairs (a_i, b_j); for `same`, over i != j only."""
    distance = _pairwise_distances(a, b)
    if not same:
        return distance.mean()
    n = a.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=a.device)
    return distance[off_diagonal].sum() / (n * (n - 1))


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| between samples x (n x D), y (m x D).

    Zero in expectation iff the two distributions are equal (Szekely & Rizzo); the within-set
    terms exclude the i = j pairs, so the estimate is unbiased.
    """
    with torch.autocast(x.device.type, enabled=False):  # distances in float32, never fp16
        x, y = x.float(), y.float()
        return (
            2 * _mean_pairwise_distance(x, y, same=False)
            - _mean_pairwise_distance(x, x, same=True)
            - _mean_pairwise_distance(y, y, same=True)
        )


def distribution_loss(
    dr: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. (6): energy distance between the batch of flattened f_DR and as many N(0, I) samples
    (`reference`, drawn from `generator` when not given), divided by sqrt(D), D = l * d.

    Why the division: the energy distance of D-dimensional samples grows like sqrt(D) (a scale
    mismatch s moves every |X - Y| by about |1 - s| sqrt(D)), so with the plain Eq. (6) one
    lambda2 would weigh this term 16x more at l * d = 256 (tiny) than at D = 1 and 90x at
    8192 (paper). Divided, lambda2 means the same at every DR width; the paper's lambda2 (not
    published) corresponds to ours / sqrt(l * d).
    """
    flat = dr.flatten(1).float()
    if reference is None:
        device = generator.device if generator is not None else flat.device
        reference = torch.randn(flat.shape, generator=generator, device=device)
    reference = reference.flatten(1).float().to(flat.device)
    return energy_distance(flat, reference) / flat.shape[1] ** 0.5


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of a discriminator: mean relu(1 - D(x)) + mean relu(1 + D(x_hat)), halved."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge GAN: -mean D(x_hat) (Esser et al. 2021, Eq. 5)."""
    return -fake_logits.mean()


def adaptive_adversarial_weight(
    rec_loss: torch.Tensor,
    adversarial_loss: torch.Tensor,
    last_layer: torch.Tensor,
    *,
    eps: float = 1e-4,
    max_weight: float = 1e4,
) -> torch.Tensor:
    """VQGAN's adaptive weight (Esser et al. 2021, Eq. 7): |grad L_rec| / (|grad L_G| + eps) at
    the decoder's last layer, clamped to [0, max_weight] and detached, so that the adversarial
    term pulls on that layer about as hard as the reconstruction does."""
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (adv_grad,) = torch.autograd.grad(adversarial_loss, last_layer, retain_graph=True)
    ratio = rec_grad.float().norm() / (adv_grad.float().norm() + eps)
    return ratio.clamp(0.0, max_weight).detach()
