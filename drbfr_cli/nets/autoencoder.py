"""The first-stage VQ autoencoder (paper section 2: LDRM diffuses in its latent space, Eq. 8).

Built on diffusers' `VQModel` (encoder, quant_conv, post_quant_conv, decoder after Esser et al.
2021); its quantizer is replaced by `EMAVectorQuantizer`, which keeps diffusers' interface and
state-dict names but trains the codebook so that it does not collapse:

- codes start from encoder outputs (k-means on the first quantized batch), not from random
  vectors far from the latents;
- codes move by exponential moving averages of the latents assigned to them (van den Oord et
  al. 2017, appendix A.1), not by gradients;
- codes left unused ("dead") are restarted at random encoder outputs of the batch (Dhariwal et
  al. 2020, Jukebox, section 3.1);
- the loss holds only the commitment term beta * ||z - sg(e)||^2.

Images are float32 RGB NCHW in [-1, 1]. `encode` returns the continuous latent before
quantization (what the diffusion model sees, after scaling); `decode` quantizes it first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers import VQModel
from diffusers.models.autoencoders.vae import VectorQuantizer
from torch import nn

from drbfr_cli.errors import DrbfrError


@dataclass(frozen=True)
class VQConfig:
    """Shapes of the VQ autoencoder and of its codebook (see models/presets/vae.toml)."""

    block_out_channels: tuple[int, ...] = (32, 64)
    """Widths of the encoder levels (the decoder mirrors them); downsampling f = 2^(levels-1)."""
    layers_per_block: int = 1
    latent_channels: int = 3
    """Channels of the latent (and width of each code)."""
    num_codes: int = 1024
    norm_num_groups: int = 16
    mid_attention: bool = False
    """Self-attention in the middle blocks (costly at large latents)."""
    commitment: float = 0.25
    """beta: weight of ||z - sg(e)||^2 (van den Oord et al. 2017, Eq. 3)."""
    codebook_decay: float = 0.99
    """EMA decay of code counts and sums."""
    dead_code_threshold: float = 0.1
    """A code whose EMA count (assignments per batch) falls below this is restarted."""
    pool_skip: bool = False
    """Add a fixed codec around the learned one: the latent's first 3 channels get the f x f
    average colour of the image, and the decoder adds their bicubic upsampling. The learned
    parts start at zero, so training starts from that naive codec and learns the residual
    (colours it never saw pass through the skip)."""

    def __post_init__(self) -> None:
        if not self.block_out_channels or min(self.block_out_channels) < 1:
            raise ValueError("block_out_channels needs at least one positive width")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError("every width must be divisible by norm_num_groups")
        if self.latent_channels < 1 or self.num_codes < 2 or self.layers_per_block < 1:
            raise ValueError("latent_channels, layers_per_block >= 1 and num_codes >= 2")
        if not 0.0 < self.codebook_decay < 1.0:
            raise ValueError("codebook_decay must lie in (0, 1)")
        if self.pool_skip and self.latent_channels < 3:
            raise ValueError("pool_skip needs at least 3 latent channels (one per colour)")

    @property
    def downsampling(self) -> int:
        """f: image side / latent side."""
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass(frozen=True)
class Quantized:
    """A quantized latent with its commitment loss and codebook statistics of the batch."""

    latent: torch.Tensor
    """B x C x h x w codes, with straight-through gradients to the encoder output."""
    indices: torch.Tensor
    """B x h x w code indices."""
    commitment: torch.Tensor
    perplexity: torch.Tensor
    """exp(entropy of the code histogram): the number of equally used codes it amounts to."""
    usage: torch.Tensor
    """Fraction of the codebook used in this batch."""
    restarted: int
    """Dead codes restarted by this (training) call."""


@dataclass(frozen=True)
class Reconstruction:
    """Output of `VQAutoencoder.forward`: the decoded image and, when quantized, the codes."""

    image: torch.Tensor
    quantized: Quantized | None


# ---------------------------------------------------------------------------------------------
# Nearest codes, k-means, code statistics (pure functions)


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Index of the nearest code (Euclidean) for each row of z (N x D), in row chunks."""
    squared = codebook.pow(2).sum(1)
    parts = [
        (squared[None] - 2.0 * rows @ codebook.t()).argmin(1) for rows in z.split(chunk)
    ]  # ||z||^2 is the same for every code of a row, so it is left out
    return torch.cat(parts)


def kmeans(z: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """k centres of the rows of z (N x D): Lloyd's algorithm from k random rows.

    Empty clusters keep their centre. With fewer rows than k, rows are drawn with replacement.
    """
    pick = torch.randint(z.shape[0], (k,), generator=generator, device=generator.device)
    centres = z[pick.to(z.device)].clone()
    for _ in range(iterations):
        assigned = nearest_codes(z, centres)
        counts = torch.bincount(assigned, minlength=k).to(z.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assigned, z)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


def code_statistics(indices: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(perplexity, fraction of codes used) of a batch of code indices."""
    counts = torch.bincount(indices.flatten(), minlength=num_codes).float()
    p = counts / counts.sum().clamp_min(1.0)
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return entropy.exp(), (counts > 0).float().mean()


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (in place) when training with several; identity otherwise."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's rows (the same count on each) concatenated in rank order, no gradient."""
    if not _distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def _broadcast(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's tensor on every process (identity with one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(tensor, src=0)
    return tensor


# ---------------------------------------------------------------------------------------------
# The quantizer


class EMAVectorQuantizer(VectorQuantizer):
    """diffusers' VectorQuantizer with a k-means-initialised EMA codebook and dead-code restarts.

    Same forward signature and return tuple as the parent (z_q, loss, (perplexity, None,
    indices)); the codebook is still `embedding.weight` (now without gradient), so the state
    dict also holds the EMA buffers `cluster_size`, `embed_sum` and the flag `initialised`.
    Statistics are summed over processes, so every rank keeps the same codebook.
    """

    def __init__(self, config: VQConfig) -> None:
        super().__init__(config.num_codes, config.latent_channels, beta=config.commitment)
        self.embedding.weight.requires_grad_(False)
        self.decay, self.threshold = config.codebook_decay, config.dead_code_threshold
        self.register_buffer("cluster_size", torch.zeros(config.num_codes))
        self.register_buffer("embed_sum", self.embedding.weight.detach().clone())
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def quantize(self, z: torch.Tensor) -> Quantized:
        """Quantize B x C x h x w latents; in training mode, then update the codebook."""
        with torch.autocast(z.device.type, enabled=False):
            flat = z.float().permute(0, 2, 3, 1).reshape(-1, self.vq_embed_dim)
            if self.training and not bool(self.initialised):
                self._initialise(flat.detach())
            indices = nearest_codes(flat.detach(), self.embedding.weight)
            codes = self.embedding.weight[indices].view(z.shape[0], z.shape[2], z.shape[3], -1)
            codes = codes.permute(0, 3, 1, 2).to(z.dtype)
            restarted = self._update_codebook(flat.detach(), indices) if self.training else 0
        perplexity, usage = code_statistics(indices, self.n_e)
        return Quantized(
            latent=z + (codes - z).detach(),
            indices=indices.view(z.shape[0], z.shape[2], z.shape[3]),
            commitment=self.beta * F.mse_loss(z, codes.detach()),
            perplexity=perplexity,
            usage=usage,
            restarted=restarted,
        )

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """diffusers' interface: (z_q, loss, (perplexity, None, indices))."""
        out = self.quantize(z)
        return out.latent, out.commitment, (out.perplexity, None, out.indices.flatten())

    @torch.no_grad()
    def _update_codebook(self, flat: torch.Tensor, indices: torch.Tensor) -> int:
        """EMA of code counts and sums (over all processes), then dead-code restarts."""
        counts = _all_reduce(torch.bincount(indices, minlength=self.n_e).float())
        sums = _all_reduce(torch.zeros_like(self.embed_sum).index_add_(0, indices, flat))
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # Laplace smoothing of the counts (as Sonnet's VectorQuantizerEMA) keeps divisions finite
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + 1e-5) / (total + self.n_e * 1e-5) * total
        self.embedding.weight.copy_(self.embed_sum / smoothed[:, None])
        return self._restart_dead(flat)

    @torch.no_grad()
    def _initialise(self, flat: torch.Tensor) -> None:
        """k-means of every process's encoder outputs, run once on rank 0 and broadcast."""
        seed = int(torch.randint(2**31, ()))
        rows = _gather_rows(flat)
        if not _distributed() or dist.get_rank() == 0:
            generator = torch.Generator(device=flat.device).manual_seed(seed)
            centres = kmeans(rows, self.n_e, iterations=10, generator=generator)
        else:
            centres = torch.empty_like(self.embedding.weight)
        centres = _broadcast(centres)
        self.embedding.weight.copy_(centres)
        self.embed_sum.copy_(centres)
        self.cluster_size.fill_(1.0)
        self.initialised.fill_(True)

    def _restart_dead(self, flat: torch.Tensor) -> int:
        dead = self.cluster_size < self.threshold
        count = int(dead.sum())
        if count == 0:
            return 0
        pick = torch.randint(flat.shape[0], (count,), device=flat.device)
        replacement = _broadcast(flat[pick].contiguous())
        self.embedding.weight[dead] = replacement
        self.embed_sum[dead] = replacement
        self.cluster_size[dead] = 1.0
        return count


# ---------------------------------------------------------------------------------------------
# The autoencoder


def build_vq_model(config: VQConfig) -> VQModel:
    """diffusers' VQModel with the geometry of `config` and the EMA quantizer."""
    levels = len(config.block_out_channels)
    model = VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        num_vq_embeddings=config.num_codes,
        norm_num_groups=config.norm_num_groups,
        mid_block_add_attention=config.mid_attention,
    )
    model.quantize = EMAVectorQuantizer(config)
    if config.pool_skip:  # the learned residual starts at zero (see VQConfig.pool_skip)
        for layer in (model.quant_conv, model.decoder.conv_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
    return model


def pooled_colour(image: torch.Tensor, f: int, channels: int) -> torch.Tensor:
    """The skip part of a latent: f x f mean colour in channels 0-2, zeros in the others."""
    pooled = F.avg_pool2d(image, f) if f > 1 else image
    return F.pad(pooled, (0, 0, 0, 0, 0, channels - 3))


def upsampled_colour(latent: torch.Tensor, f: int) -> torch.Tensor:
    """The skip part of a decoded image: bicubic upsampling of the latent's channels 0-2."""
    colour = latent[:, :3]
    return F.interpolate(colour, scale_factor=f, mode="bicubic") if f > 1 else colour


class VQAutoencoder(nn.Module):
    """E_VAE and its decoder: image (B x 3 x H x W, [-1, 1], H and W multiples of f) <-> latent.

    `encode` gives the continuous B x C x H/f x W/f latent before quantization (unscaled);
    `decode` quantizes a latent (unless `quantize=False`) and decodes it to an image in about
    [-1, 1] (not clamped). `forward` is both, for training.
    """

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        self.vq = build_vq_model(config)

    @property
    def quantizer(self) -> EMAVectorQuantizer:
        return self.vq.quantize  # type: ignore[return-value]

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight (VQGAN's adaptive adversarial weight is measured there)."""
        return self.vq.decoder.conv_out.weight

    def check_size(self, image: torch.Tensor) -> None:
        """One-line error for inputs the encoder cannot take."""
        f = self.config.downsampling
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[-1] % f or image.shape[-2] % f:
            raise DrbfrError(f"the VQ autoencoder takes B x 3 x H x W images, H and W multiples "
                             f"of {f}; got {tuple(image.shape)}")  # fmt: skip

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Continuous latent (before quantization) of images in [-1, 1]."""
        self.check_size(image)
        latent = self.vq.encode(image).latents
        if self.config.pool_skip:
            latent = latent + pooled_colour(image, self.config.downsampling, latent.shape[1])
        return latent

    def decode_quantized(self, latent: torch.Tensor) -> torch.Tensor:
        """Decode a latent that is already quantized (or that should not be)."""
        image = self.vq.decode(latent, force_not_quantize=True).sample
        if self.config.pool_skip:
            image = image + upsampled_colour(latent, self.config.downsampling)
        return image

    def decode(self, latent: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
        """Image of a latent; quantized to the nearest codes first unless `quantize=False`."""
        if quantize:
            latent = self.quantizer.quantize(latent).latent
        return self.decode_quantized(latent)

    def forward(self, image: torch.Tensor, *, quantize: bool = True) -> Reconstruction:
        latent = self.encode(image)
        if not quantize:
            return Reconstruction(self.decode_quantized(latent), None)
        quantized = self.quantizer.quantize(latent)
        return Reconstruction(self.decode_quantized(quantized.latent), quantized)


@dataclass(frozen=True)
class FirstStage:
    """A trained VQ autoencoder with its latent scaling (LDM section 4.3.2).

    `encode` returns scaling_factor * E(x): unit variance on the training data, ready for the
    diffusion model; `decode` undoes the scaling, quantizes (when `quantize`: LDM's convention
    for VQ first stages, the quantization layer belongs to the decoder) and decodes. Images are
    float32 RGB NCHW in [-1, 1]; decoded images are clamped to that range.
    """

    model: VQAutoencoder
    scaling_factor: float
    quantize: bool = True

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode(image) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        latent = latent / self.scaling_factor
        return self.model.decode(latent, quantize=self.quantize).clamp(-1.0, 1.0)


@dataclass(frozen=True)
class LatentStats:
    """The latent scaling of a trained autoencoder, measured on training patches."""

    scaling_factor: float
    mean: float
    std: float
    samples: int


def latent_std_scale(latents: torch.Tensor) -> tuple[float, float, float]:
    """(scaling factor 1 / std, mean, std) over every element of a batch of latents."""
    flat = latents.double().flatten()
    std = float(flat.std())
    if not math.isfinite(std) or std <= 0.0:
        raise DrbfrError("the latents have no spread; the autoencoder is degenerate")
    return 1.0 / std, float(flat.mean()), std
