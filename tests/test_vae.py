"""The VQ autoencoder's parts: codebook maths, EMA quantizer, discriminator, codec sizes."""

from __future__ import annotations

import pytest
import torch
from diffusers import VQModel

from drbfr_cli.analysis.vae import bicubic_codec, bicubic_side
from drbfr_cli.errors import DrbfrError
from drbfr_cli.nets.autoencoder import (
    EMAVectorQuantizer,
    FirstStage,
    VQAutoencoder,
    VQConfig,
    code_statistics,
    kmeans,
    latent_std_scale,
    nearest_codes,
)
from drbfr_cli.nets.discriminator import PatchDiscriminator
from drbfr_cli.train.losses import generator_adversarial_loss, hinge_discriminator_loss

SMALL = VQConfig(block_out_channels=(16, 32), norm_num_groups=8, num_codes=64)


def test_nearest_codes_match_a_brute_force_search() -> None:
    generator = torch.Generator().manual_seed(0)
    z, codebook = torch.randn(1000, 3, generator=generator), torch.randn(50, 3, generator=generator)
    expected = torch.cdist(z, codebook).argmin(1)
    assert torch.equal(nearest_codes(z, codebook, chunk=128), expected)


def test_kmeans_finds_separated_clusters() -> None:
    generator = torch.Generator().manual_seed(1)
    centres = torch.tensor([[-5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    points = centres.repeat_interleave(100, 0) + 0.1 * torch.randn(400, 2, generator=generator)
    found = kmeans(points, 4, iterations=20, generator=torch.Generator().manual_seed(3))
    distance = torch.cdist(centres, found).min(1).values
    assert distance.max() < 0.1


def test_code_statistics_count_equally_used_codes() -> None:
    perplexity, usage = code_statistics(torch.tensor([0, 1, 2, 3] * 5), 8)
    assert perplexity.item() == pytest.approx(4.0) and usage.item() == pytest.approx(0.5)


def test_ema_quantizer_starts_from_the_latents_and_restarts_dead_codes() -> None:
    torch.manual_seed(0)
    quantizer = EMAVectorQuantizer(SMALL).train()
    latents = torch.randn(4, 3, 8, 8) * 3 + 10  # far from diffusers' random codebook
    out = quantizer.quantize(latents)
    assert bool(quantizer.initialised)
    assert out.usage.item() > 0.5 and out.perplexity.item() > 16
    error = (out.latent - latents).pow(2).mean()
    assert error < 0.25 * latents.var()  # codes from k-means of the latents
    quantizer.embedding.weight[:8] = 1e3  # eight codes no latent will ever pick
    quantizer.cluster_size[:8] = 0.0
    again = quantizer.quantize(latents)
    assert again.restarted >= 8 and quantizer.embedding.weight[:8].abs().max() < 100


def test_quantizer_gradients_pass_straight_through_to_the_encoder() -> None:
    quantizer = EMAVectorQuantizer(SMALL).train()
    latents = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = quantizer.quantize(latents)
    (out.latent.sum() + out.commitment).backward()
    assert latents.grad is not None and latents.grad.abs().min() > 0
    assert quantizer.embedding.weight.grad is None


def test_the_autoencoder_is_a_diffusers_vqmodel_with_its_weight_names() -> None:
    model = VQAutoencoder(SMALL)
    assert isinstance(model.vq, VQModel)
    plain = VQModel(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),
        latent_channels=3,
        num_vq_embeddings=64,
        norm_num_groups=8,
        mid_block_add_attention=False,
    )
    ours = {k.removeprefix("vq.") for k in model.state_dict()}
    assert set(plain.state_dict()) <= ours
    assert ours - set(plain.state_dict()) == {
        "quantize.cluster_size",
        "quantize.embed_sum",
        "quantize.initialised",
    }


def test_encode_decode_shapes_and_first_stage_range() -> None:
    torch.manual_seed(0)
    model = VQAutoencoder(SMALL).eval()
    image = torch.rand(2, 3, 32, 48) * 2 - 1
    latent = model.encode(image)
    assert latent.shape == (2, 3, 16, 24)
    assert model.decode(latent).shape == image.shape
    stage = FirstStage(model=model, scaling_factor=2.0)
    assert torch.allclose(stage.encode(image), 2.0 * latent)
    decoded = stage.decode(stage.encode(image))
    assert decoded.shape == image.shape and decoded.min() >= -1 and decoded.max() <= 1
    with pytest.raises(DrbfrError, match="multiples of 2"):
        model.encode(torch.zeros(1, 3, 31, 32))


def test_latent_scale_gives_unit_std() -> None:
    latents = torch.randn(8, 3, 16, 16) * 0.3 + 0.5
    scale, mean, std = latent_std_scale(latents)
    assert (latents * scale).std().item() == pytest.approx(1.0, abs=1e-4)
    assert mean == pytest.approx(0.5, abs=0.05) and std == pytest.approx(0.3, abs=0.02)
    with pytest.raises(DrbfrError, match="no spread"):
        latent_std_scale(torch.ones(2, 3, 4, 4))


def test_discriminator_losses_reach_only_their_own_side() -> None:
    torch.manual_seed(0)
    discriminator = PatchDiscriminator(channels=8, layers=2)
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    fake = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    logits = discriminator(real, fake)
    generator_adversarial_loss(logits.fake_for_generator).backward(retain_graph=True)
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in discriminator.parameters())
    fake.grad = None
    hinge_discriminator_loss(logits.real, logits.fake).backward()
    assert fake.grad is None
    assert all(p.grad is not None for p in discriminator.parameters())


def test_bicubic_codec_stores_at_least_as_many_values() -> None:
    assert bicubic_side(3 * 32 * 32) == 32
    side = bicubic_side(4 * 64 * 64)
    assert 3 * side**2 >= 4 * 64 * 64 > 3 * (side - 1) ** 2
    smooth = torch.linspace(0, 1, 64).repeat(1, 3, 64, 1)
    assert torch.allclose(bicubic_codec(32)(smooth), smooth, atol=0.02)


def test_pool_skip_starts_as_the_average_pool_bicubic_codec() -> None:
    config = VQConfig(block_out_channels=(16, 32), norm_num_groups=8, num_codes=64, pool_skip=True,
                      latent_channels=4)  # fmt: skip
    model = VQAutoencoder(config).eval()
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        latent = model.encode(image)
        decoded = model.decode(latent, quantize=False)
    pooled = torch.nn.functional.avg_pool2d(image, 2)
    assert torch.allclose(latent[:, :3], pooled, atol=1e-6)
    assert torch.count_nonzero(latent[:, 3]) == 0
    upsampled = torch.nn.functional.interpolate(pooled, scale_factor=2, mode="bicubic")
    assert torch.allclose(decoded, upsampled, atol=1e-6)
    # the learned parts are trained: the zero layers receive gradients
    model.train()
    model(image, quantize=False).image.square().mean().backward()
    assert model.vq.decoder.conv_out.weight.grad.abs().sum() > 0
    assert model.vq.quant_conv.weight.grad.abs().sum() > 0


def test_pool_skip_needs_three_latent_channels() -> None:
    with pytest.raises(ValueError, match="3 latent channels"):
        VQConfig(latent_channels=2, pool_skip=True)
