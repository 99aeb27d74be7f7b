"""The restore loop written out: the optional fidelity network, condition, sample, texture
pass, decode (paper Eq. 8, DiffBFR), then the optional low-frequency transfer.

    y [-1, 1] --F--> r --E_VAE--> f_LQ --+--> restore_latents (sampling.py) --D_VAE--> x --> out
                       --E_DR--> f_DR  --+                                             r --^

r = F(y) when the bundle carries a fidelity network (nets/fidelity.py), else r = y. F is a
pixel-space regressor trained for PSNR; as DiffBIR's restoration module (Lin et al. 2024,
stage 1) it removes most of the degradation first, and the LDRM restores its output: its
conditions are those of r, and it adds the detail a regressor averages away.

The low-frequency transfer, out = x - G(x) + G(r) with G a Gaussian blur, is the colour
correction latent-diffusion restorers apply after decoding (StableSR, Wang et al. 2023,
with its wavelet low band replaced by a Gaussian one): a latent sampler drifts in shading and
colour, while r keeps those low frequencies (the input through blur, noise, JPEG and moderate
downscaling; F's output more closely still), so the coarse structure comes from r and the
texture above G from the diffusion sample. It is off unless the sampling config's
`low_freq_sigma` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from drbfr_cli.diffusion.sampling import SamplingConfig, restore_latents
from drbfr_cli.diffusion.schedule import NoiseSchedule
from drbfr_cli.nets.autoencoder import FirstStage
from drbfr_cli.nets.drm import DREncoder
from drbfr_cli.nets.fidelity import fidelity_output
from drbfr_cli.nets.ldrm import LDRM


@dataclass(frozen=True)
class FrozenParts:
    """The frozen first stage and DR encoder the LDRM is conditioned on, with their configs."""

    first_stage: FirstStage
    encoder: DREncoder
    vae_config: dict[str, Any]
    drm_config: dict[str, Any]


@dataclass(frozen=True)
class Condition:
    """The LDRM's conditions of a batch of LQ faces (Eq. 8)."""

    f_lq: torch.Tensor
    """s E_VAE(y): the scaled first-stage latent of the LQ faces."""
    f_dr: torch.Tensor | None
    """E_DR(y): B x l x d DR tokens, or None for DR-None."""


def condition(
    parts: FrozenParts, lq: torch.Tensor, *, use_dr: bool, f_lq: torch.Tensor | None = None
) -> Condition:
    """f_LQ = s E_VAE(y) and f_DR = E_DR(y) (None unless use_dr) of LQ images in [-1, 1];
    `f_lq`: the latent when already encoded (by data-loader workers in training)."""
    with torch.no_grad():
        f_lq = parts.first_stage.encode(lq) if f_lq is None else f_lq
        f_dr = parts.encoder(lq) if use_dr else None
    return Condition(f_lq, f_dr)


class LDRMDenoiser:
    """The LDRM with one batch's conditions and the noise schedule bound: the sampling
    module's `Denoiser`."""

    def __init__(self, model: LDRM, cond: Condition, schedule: NoiseSchedule) -> None:
        self.model, self.cond, self.schedule = model, cond, schedule

    def __call__(
        self, latents: torch.Tensor, timesteps: torch.Tensor, *, conditional: bool
    ) -> torch.Tensor:
        keep = torch.full((latents.shape[0],), conditional, device=latents.device)
        t = timesteps.to(latents.device).expand(latents.shape[0])
        abar = self.schedule.abar_at(t) if self.model.prior is not None else None
        f_lq = self.cond.f_lq.to(latents.dtype)
        return self.model(latents, t, f_lq, self.cond.f_dr, keep, abar)


@torch.no_grad()
def restore_faces(
    ldrm: nn.Module,
    parts: FrozenParts,
    lq: torch.Tensor,
    *,
    seeds: list[int],
    schedule: NoiseSchedule,
    sampling: SamplingConfig,
    use_dr: bool = True,
    fidelity: nn.Module | None = None,
) -> torch.Tensor:
    """Restored faces in [-1, 1] of LQ faces in [-1, 1]: r = `fidelity`(lq) (r = lq when None
    or `sampling.use_fidelity` is off), then condition on r, sample, texture pass, decode,
    low-frequency transfer from r."""
    if fidelity is not None and sampling.use_fidelity:
        lq = fidelity_output(fidelity, lq.float(), flip=sampling.fidelity_flip)
    was_training = ldrm.training
    ldrm.eval()
    cond = condition(parts, lq, use_dr=use_dr)
    # the sampler's state stays fp32 under autocast; the networks need not
    cond = Condition(cond.f_lq.float(), cond.f_dr)
    denoiser = LDRMDenoiser(unwrap(ldrm), cond, schedule)
    latents = restore_latents(denoiser, cond.f_lq, seeds, schedule, sampling)
    ldrm.train(was_training)
    restored = parts.first_stage.decode(latents)
    if sampling.low_freq_sigma > 0:
        restored = transfer_low_frequencies(restored, lq.to(restored), sampling.low_freq_sigma)
    return restored


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian taps of OpenCV's size for float images, round(8 sigma + 1) | 1."""
    size = round(8 * sigma + 1) | 1
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of B x C x H x W images, mirrored borders (OpenCV's default,
    BORDER_REFLECT_101); the kernel is cut to the image where it is wider."""
    channels, (height, width) = images.shape[1], images.shape[-2:]
    taps = gaussian_kernel(sigma).to(images)
    radius = len(taps) // 2
    out = images
    for dim, side in ((3, width), (2, height)):
        cut = min(radius, side - 1)
        kernel = taps[radius - cut : radius + cut + 1]
        kernel = kernel / kernel.sum()
        shape = (1, 1, 1, len(kernel)) if dim == 3 else (1, 1, len(kernel), 1)
        pad = (cut, cut, 0, 0) if dim == 3 else (0, 0, cut, cut)
        padded = torch.nn.functional.pad(out, pad, mode="reflect")
        weight = kernel.view(shape).expand(channels, -1, -1, -1)
        out = torch.nn.functional.conv2d(padded, weight, groups=channels)
    return out


def transfer_low_frequencies(
    restored: torch.Tensor, lq: torch.Tensor, sigma: float
) -> torch.Tensor:
    """restored - G_sigma(restored) + G_sigma(lq), clamped to [-1, 1] (module docstring)."""
    low = gaussian_blur(lq, sigma) - gaussian_blur(restored, sigma)
    return (restored + low).clamp(-1, 1)


def unwrap(module: nn.Module) -> LDRM:
    """The LDRM inside a DDP / compiled wrapper."""
    while not isinstance(module, LDRM):
        module = getattr(module, "module", None) or module._orig_mod
    return module
