"""The Latent Diffusion Restoration Module's denoiser (paper section 3.2, Eqs. 8-10).

eps_theta(z_t, f_LQ, f_DR, t) is a diffusers `UNet2DConditionModel`:
- its input is z_t concatenated with f_LQ = E_VAE(y) along the channels (Eq. 8);
- its cross-attention context is alpha_t * f_DR + beta_t, with (alpha_t, beta_t) = MLP(t)
  (Eq. 10), f_DR = E_DR(y) from the frozen DRM (l tokens of width d).
Condition dropout: a dropped item sees f_LQ = 0 and a learned null DR instead of the modulated
f_DR, so the same network is also the unconditional model (DiffBFR's texture pass, guidance).
With `use_dr = False` (the paper's DR-None) every item sees the null DR: LQ concatenation only,
with the same parameters.

`prior_skip` (tiny preset) adds an analytic term to the U-Net's output: the eps of the posterior
mean of z_0 under the Gaussian prior z_0 ~ N(f_LQ, v I) (v learned; N(0, I) for dropped items),
so training starts from "the HQ latent is the LQ latent plus noise" and learns the residual,
as the VAE's pool skip starts from the bicubic codec. The loss stays Eq. (8). That term needs
abar_t: the caller passes it from the noise schedule (diffusion/schedule.py), which the network
does not own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

PRIOR_STD_INIT = 0.3
"""Starting sqrt(v) of the prior skip, in units of the scaled latent (which has std 1)."""


@dataclass(frozen=True)
class LDRMConfig:
    """Shape of the denoiser. latent_channels, dr_tokens and dr_width must match the VAE/DRM."""

    latent_channels: int = 3
    dr_tokens: int = 4
    """l: tokens of f_DR."""
    dr_width: int = 64
    """d: width of each DR token (the cross-attention dimension)."""
    block_out_channels: tuple[int, ...] = (32, 64, 96)
    attention_levels: tuple[bool, ...] = (False, True, True)
    """Which U-Net levels have cross-attention (the middle block always has)."""
    layers_per_block: int = 1
    head_dim: int = 32
    norm_num_groups: int = 16
    time_embedding_dim: int = 128
    """Width of the sinusoidal embedding of t fed to the alpha/beta MLP (Eq. 10)."""
    use_dr: bool = True
    """False: DR-None (the context is always the null DR)."""
    prior_skip: bool = False
    """Add the eps of the Gaussian-prior posterior mean around f_LQ (module docstring)."""

    def __post_init__(self) -> None:
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError("attention_levels needs one flag per entry of block_out_channels")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError("every block width must be a multiple of norm_num_groups")
        if any(c % self.head_dim for c in self.block_out_channels):
            raise ValueError("every block width must be a multiple of head_dim")
        if self.dr_tokens < 1 or self.dr_width < 1:
            raise ValueError("dr_tokens and dr_width must be positive")

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017), B -> B x dim:
    [cos(t w_k), sin(t w_k)] with w_k = 10000^(-k / (dim / 2)), diffusers' function."""
    return get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)


class TimeModulation(nn.Module):
    """Eq. (10): (alpha_t, beta_t) = MLP(t), each of width d; starts at alpha = 1, beta = 0."""

    def __init__(self, embedding_dim: int, width: int) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.mlp = nn.Sequential(
            nn.Linear(embedding_dim, embedding_dim),
            nn.SiLU(),
            nn.Linear(embedding_dim, 2 * width),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, dr: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """alpha_t * f_DR + beta_t for f_DR of shape B x l x d."""
        scale, shift = self.mlp(timestep_embedding(t, self.embedding_dim)).chunk(2, dim=1)
        return (1.0 + scale[:, None]) * dr + shift[:, None]


def build_unet(config: LDRMConfig) -> UNet2DConditionModel:
    """diffusers U-Net taking [z_t, f_LQ] (2C channels) and returning eps (C channels)."""
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels)
    up = tuple(
        "CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels)
    )
    return UNet2DConditionModel(
        in_channels=2 * config.latent_channels,
        out_channels=config.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        cross_attention_dim=config.dr_width,
        attention_head_dim=tuple(c // config.head_dim for c in config.block_out_channels),
        norm_num_groups=config.norm_num_groups,
    )


class GaussianPriorSkip(nn.Module):
    """eps of E[z_0 | z_t] when z_0 ~ N(m, v I) and z_t = sqrt(abar) z_0 + sqrt(1 - abar) eps
    (DDPM Eq. 4): eps_hat = sqrt(1 - abar) (z_t - sqrt(abar) m) / (abar v + 1 - abar).

    Kept items: m = f_LQ and a learned v; dropped items: m = 0, v = 1 (the unit-variance latent).
    """

    def __init__(self) -> None:
        super().__init__()
        self.log_var = nn.Parameter(torch.tensor(2.0 * math.log(PRIOR_STD_INIT)))

    def forward(
        self, z_t: torch.Tensor, abar: torch.Tensor, mean: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """abar: abar_t of each item [B]."""
        abar = abar.to(z_t.dtype)[:, None, None, None]
        keep = keep[:, None, None, None]
        mean = torch.where(keep, mean, torch.zeros_like(mean))
        var = torch.where(keep, self.log_var.exp(), torch.ones_like(self.log_var)).to(z_t.dtype)
        return (1 - abar).sqrt() * (z_t - abar.sqrt() * mean) / (abar * var + 1 - abar)


class LDRM(nn.Module):
    """eps_theta(z_t, f_LQ, f_DR, t) with condition dropout (see the module docstring)."""

    def __init__(self, config: LDRMConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = build_unet(config)
        self.modulation = TimeModulation(config.time_embedding_dim, config.dr_width)
        self.null_dr = nn.Parameter(torch.randn(config.dr_tokens, config.dr_width) * 0.02)
        self.prior: GaussianPriorSkip | None = None
        if config.prior_skip:
            self.prior = GaussianPriorSkip()
            nn.init.zeros_(self.unet.conv_out.weight)  # starts as the prior alone
            nn.init.zeros_(self.unet.conv_out.bias)

    def context(self, dr: torch.Tensor | None, t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Cross-attention context: modulated f_DR where keep, else the null DR."""
        null = self.null_dr.to(t.device)[None].expand(t.shape[0], -1, -1)
        if dr is None or not self.config.use_dr:
            return null
        modulated = self.modulation(dr, t)
        return torch.where(keep[:, None, None], modulated, null.to(modulated.dtype))

    def forward(
        self,
        z_t: torch.Tensor,
        t: torch.Tensor,
        f_lq: torch.Tensor,
        f_dr: torch.Tensor | None,
        keep: torch.Tensor | None = None,
        abar: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """eps prediction. keep: B bools, False drops that item's conditions (default: keep);
        abar: abar_t of each item, needed (only) by the prior skip."""
        if keep is None:
            keep = torch.ones(z_t.shape[0], dtype=torch.bool, device=z_t.device)
        f_lq = f_lq * keep[:, None, None, None].to(f_lq.dtype)
        context = self.context(f_dr, t, keep).to(z_t.dtype)
        x = torch.cat([z_t, f_lq], dim=1)
        eps = self.unet(x, t, encoder_hidden_states=context).sample
        if self.prior is not None:
            if abar is None:
                raise ValueError("an LDRM with prior_skip needs abar_t of each item")
            eps = eps + self.prior(z_t, abar, f_lq, keep)
        return eps
