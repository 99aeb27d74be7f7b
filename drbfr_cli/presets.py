"""The stages' preset configs: nested frozen dataclasses filled from `models/presets/*.toml`.

A preset holds the configs of what it is made of, never copies of their fields:

    VAEConfig = image_size + network: VQConfig + data: PatchConfig + loss: VAELossConfig
    LDMConfig = network: LDRMConfig + data: PatchConfig + degradations: DegradationRanges
                + schedule: NoiseSchedule + sampling: SamplingConfig
    FidelityModelConfig = network: FidelityConfig + data: PatchConfig
                + degradations: DegradationRanges
    DRMConfig (nets/drm.py) is a network config alone.

Inference (bundles) reads these too, so this module imports no training code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from drbfr_cli.choices import FirstStageKind
from drbfr_cli.config import from_dict, load_preset
from drbfr_cli.degradations import DegradationRanges
from drbfr_cli.diffusion.sampling import SamplingConfig
from drbfr_cli.diffusion.schedule import NoiseSchedule
from drbfr_cli.errors import DrbfrError
from drbfr_cli.faces.align import FACE_SIZE
from drbfr_cli.nets.autoencoder import VQConfig
from drbfr_cli.nets.drm import DRMConfig
from drbfr_cli.nets.drm_head import DRHeadConfig
from drbfr_cli.nets.fidelity import FidelityConfig
from drbfr_cli.nets.ldrm import LDRMConfig
from drbfr_cli.nets.taef2 import DOWNSAMPLING as TAEF2_DOWNSAMPLING
from drbfr_cli.nets.taef2 import LATENT_CHANNELS as TAEF2_CHANNELS


@dataclass(frozen=True)
class PatchConfig:
    """Training patches: each HQ face is resized to a side drawn log-uniformly in face_sides,
    then a patch_size crop is taken (RGB permuted at random, 10 % gray, when color_augment)."""

    patch_size: int = 64
    face_sides: tuple[int, int] = (64, 160)
    color_augment: bool = False

    def __post_init__(self) -> None:
        if not self.patch_size <= self.face_sides[0] <= self.face_sides[1]:
            raise ValueError("face_sides must be ordered and at least patch_size")


@dataclass(frozen=True)
class VAELossConfig:
    """Weights of the first stage's loss terms, and the GAN's optimizer settings (train/vae.py).

    As VQGAN trains it (Esser et al. 2021, taming-transformers' VQLPIPSWithDiscriminator): the
    adversarial weight is disc_weight times the adaptive ratio |grad L_rec| / (|grad L_G| +
    1e-4) at the decoder's last layer (clamped to [0, 1e4]), from step disc_start on; the
    discriminator has its own AdamW moments, betas and gradient clipping.
    """

    l1_weight: float = 1.0
    l2_weight: float = 1.0
    perceptual_weight: float = 0.0
    """LPIPS (VGG) weight; its VGG16 backbone is then required (`--no-perceptual` opts out)."""
    quantize_after: int = 0
    """Steps of warm-up in which the decoder sees the continuous latent."""
    disc_weight: float = 0.0
    """Factor on the adaptive adversarial weight (0: no discriminator)."""
    disc_start: int = 0
    """The adversarial terms (and the discriminator's training) start after this step."""
    disc_channels: int = 64
    disc_layers: int = 3
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas of the autoencoder."""
    disc_betas: tuple[float, float] = (0.5, 0.9)
    """AdamW betas of the discriminator (GAN practice: beta1 0.5)."""
    disc_grad_clip: float = 1.0
    """Gradient-norm clip of the discriminator (the autoencoder's is the loop's grad_clip)."""

    def __post_init__(self) -> None:
        if min(self.l1_weight, self.l2_weight, self.perceptual_weight, self.disc_weight) < 0:
            raise ValueError("loss weights must not be negative")
        for betas in (self.betas, self.disc_betas):
            if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
                raise ValueError(f"betas must be two numbers in [0, 1), got {list(betas)}")
        if not self.disc_grad_clip > 0:
            raise ValueError(f"disc_grad_clip must be positive, got {self.disc_grad_clip}")


@dataclass(frozen=True)
class VAEConfig:
    """A VAE preset ([model] of models/presets/vae.toml)."""

    image_size: int = 64
    """Side of the faces the codec is meant for (analysis encodes whole faces at this size)."""
    network: VQConfig = field(default_factory=VQConfig)
    data: PatchConfig = field(default_factory=PatchConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    scale_samples: int = 256
    """Training patches the latent scaling factor is measured on."""

    def __post_init__(self) -> None:
        factor = self.network.downsampling
        if self.data.patch_size % factor or self.image_size % factor:
            raise ValueError("image_size and patch_size must be multiples of the downsampling")
        if self.scale_samples < 2:
            raise ValueError("scale_samples must be at least 2")


@dataclass(frozen=True)
class LDMConfig:
    """An LDM preset ([model] of models/presets/ldm.toml): the denoiser's shape, its training
    data, the one noise schedule, and the default sampling of the bundles made from it."""

    network: LDRMConfig = field(default_factory=LDRMConfig)
    """The U-Net's shape; its latent and DR widths come from the frozen parts (`network_for`)."""
    data: PatchConfig = field(default_factory=PatchConfig)
    """Training patches; patch_size is the face size the bundle restores (the VAE's)."""
    degradations: DegradationRanges = field(default_factory=DegradationRanges)
    """Eq. (11) ranges of the training degradations (defaults: the paper's)."""
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Default sampling of the bundle (each field overridable at restore time)."""
    condition_dropout: float = 0.1
    train_t_max: float = 1.0
    """Training draws t ~ U{0, ..., round(train_t_max (T - 1))} (Eq. 8 uses the whole schedule,
    1.0). A model that only ever samples truncated (DiffBFR, start_t < 1) may train on the
    steps it samples; its bundles then refuse a start_t above train_t_max."""
    pair_reuse: int = 1
    """Items each encoded training pair serves (TAEF2 presets): a pool in the loader worker
    (train/ldm.py ReplayPairs) hands every fresh pair out once and then `pair_reuse - 1` items
    drawn from the pool, each with fresh (t, noise) draws, so steps are bound by the U-Net,
    not by encoding. 1: every item is a fresh pair."""
    pair_pool: int = 256
    """Pairs the loader worker's pool holds (with pair_reuse > 1)."""
    first_stage: FirstStageKind = FirstStageKind.VQ
    """vq: the VQ autoencoder of a `train vae` run (patches of its image size); taef2: the
    pretrained TAEF2 (patches are crops of FACE_SIZE faces, any multiple of 8)."""
    decode_quantized: bool = False
    """Decode restored latents through the VAE's codebook (LDM's convention for VQ first
    stages; base and paper presets). False decodes the continuous latent (tiny preset)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError("condition_dropout must lie in [0, 1)")
        if not 0.0 < self.train_t_max <= 1.0:
            raise ValueError(f"train_t_max must lie in (0, 1], got {self.train_t_max}")
        if self.pair_reuse < 1 or self.pair_pool < 1:
            raise ValueError("pair_reuse and pair_pool must be at least 1")
        if self.sampling.start_t > self.train_t_max:
            raise ValueError(
                f"sampling starts at start_t {self.sampling.start_t}, beyond the trained "
                f"train_t_max {self.train_t_max}"
            )
        object.__setattr__(self, "first_stage", FirstStageKind(self.first_stage))

    def network_for(
        self, *, latent_channels: int, dr_tokens: int, dr_width: int, use_dr: bool
    ) -> LDRMConfig:
        """The denoiser's config with the widths the frozen VAE and DRM impose."""
        return replace(
            self.network,
            latent_channels=latent_channels,
            dr_tokens=dr_tokens,
            dr_width=dr_width,
            use_dr=use_dr,
        )


@dataclass(frozen=True)
class FirstStageGeometry:
    """What the LDRM needs to know of its first stage."""

    latent_channels: int
    downsampling: int
    """Image side / latent side."""
    face_size: int
    """Side of the faces a bundle restores."""
    fixed_patch: bool
    """True: training patches must be whole faces of face_size (VQ); False: any crop whose
    side is a multiple of `downsampling` (TAEF2, a convolutional codec trained elsewhere)."""


def first_stage_geometry(frozen_vae: Mapping[str, Any]) -> FirstStageGeometry:
    """The geometry of a frozen first stage from its record ({"kind": ..., ...}; records
    without a kind are VQ autoencoders: {"model": VAEConfig dict, "latent": ...})."""
    if frozen_vae.get("kind", FirstStageKind.VQ) == FirstStageKind.TAEF2:
        return FirstStageGeometry(TAEF2_CHANNELS, TAEF2_DOWNSAMPLING, FACE_SIZE, False)
    vae = from_dict(VAEConfig, frozen_vae["model"], source="frozen VAE")
    return FirstStageGeometry(
        vae.network.latent_channels, vae.network.downsampling, vae.image_size, True
    )


_SAMPLING_FIELDS = tuple(f"sampling.{f.name}" for f in fields(SamplingConfig))
INFERENCE_ONLY_FIELDS = (*_SAMPLING_FIELDS, "decode_quantized")
"""LDMConfig fields (dotted) that do not touch training: a resumed run may change them."""


def with_patch_size(model: LDMConfig, patch_size: int) -> LDMConfig:
    """`model` training on patch_size crops (`train ldm --patch-size`); PatchConfig's check of
    the crop against the smallest face side, as a one-line error."""
    try:
        data = replace(model.data, patch_size=patch_size)
    except ValueError:
        smallest = model.data.face_sides[0]
        raise DrbfrError(
            f"--patch-size {patch_size} exceeds the preset's smallest face side ({smallest} px)"
        ) from None
    return replace(model, data=data)


def _preset(stage: str, cls: type, preset: str) -> tuple[Any, dict[str, Any]]:
    table = load_preset(stage, preset)
    model = from_dict(cls, table.get("model", {}), source=f"{stage} preset {preset!r}")
    return model, dict(table.get("train", {}))


@dataclass(frozen=True)
class FidelityModelConfig:
    """A fidelity-network preset ([model] of models/presets/fidelity.toml): F's shape and the
    patches and Eq. (11) degradations it trains on."""

    network: FidelityConfig = field(default_factory=FidelityConfig)
    data: PatchConfig = field(default_factory=PatchConfig)
    degradations: DegradationRanges = field(default_factory=DegradationRanges)
    mild_degradations: DegradationRanges = field(default_factory=DegradationRanges)
    """Ranges drawn instead of `degradations` for a `mild_fraction` of the patches."""
    mild_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.mild_fraction <= 1.0:
            raise ValueError(f"mild_fraction must lie in [0, 1], got {self.mild_fraction}")
        if self.data.patch_size % self.network.multiple:
            raise ValueError(
                f"patch_size must be a multiple of {self.network.multiple} (F's downsampling)"
            )


def fidelity_config_from_preset(preset: str) -> tuple[FidelityModelConfig, dict[str, Any]]:
    """(model config, default training options) of a fidelity-network preset."""
    return _preset("fidelity", FidelityModelConfig, preset)


@dataclass(frozen=True)
class DRMHeadModelConfig:
    """A degradation-head preset ([model] of models/presets/drm_head.toml): the head's shape and
    the Eq. (11) crops it trains on (train/drm_head.py): the network's region of faces at
    its region_size, moved by up to `jitter` px, degraded with `margin` px around it."""

    network: DRHeadConfig = field(default_factory=DRHeadConfig)
    jitter: int = 16
    margin: int = 32
    degradations: DegradationRanges = field(default_factory=DegradationRanges)
    mild_degradations: DegradationRanges = field(default_factory=DegradationRanges)
    """Ranges drawn instead of `degradations` for a `mild_fraction` of the crops."""
    mild_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.mild_fraction <= 1.0:
            raise ValueError(f"mild_fraction must lie in [0, 1], got {self.mild_fraction}")
        if self.jitter < 0 or self.margin < 0:
            raise ValueError("jitter and margin must not be negative")


def drm_head_config_from_preset(preset: str) -> tuple[DRMHeadModelConfig, dict[str, Any]]:
    """(model config, default training options) of a degradation-head preset."""
    return _preset("drm_head", DRMHeadModelConfig, preset)


def drm_config_from_preset(preset: str) -> tuple[DRMConfig, dict[str, Any]]:
    """(model config, default training options) of a DRM preset."""
    return _preset("drm", DRMConfig, preset)


def vae_config_from_preset(preset: str) -> tuple[VAEConfig, dict[str, Any]]:
    """(model config, default training options) of a VAE preset."""
    return _preset("vae", VAEConfig, preset)


def ldm_config_from_preset(preset: str) -> tuple[LDMConfig, dict[str, Any]]:
    """(model config, default training options) of an LDM preset."""
    return _preset("ldm", LDMConfig, preset)
