"""TAEF2: a pretrained tiny autoencoder (1.34 M parameters per half) used as a first stage.

TAEF2 is Ollin Boer Bohan's distillation of the FLUX.2 VAE into the TAESD layout (MIT licence;
weights `taef2_encoder.pth` / `taef2_decoder.pth` of github.com/madebyollin/taesd). The layout
below was written for drbfr from the description in that repository (`taesd.py` and README:
3x3 convolutions, residual blocks of three convolutions with ReLUs, stride-2 convolutions down,
nearest 2x upsampling up, a tanh soft clamp of the latent at +-3) and from the key names and
shapes of the published state dicts. TAEF2 differs from TAESD in two ways:

- 32 latent channels at 1/8 of the image side (TAESD: 4);
- the three blocks nearest the latent (encoder blocks 11-13, decoder blocks 3-5) add a
  "mid-block GroupNorm" branch before the block: x + conv1x1(ReLU(GroupNorm(4 groups,
  conv1x1(x) to 4x the width))), both 1x1 convolutions without bias.

FLUX.2 itself packs 2x2 latent pixels into 128 channels at 1/16 ("patchify") before its
transformer; that packing is not part of these networks and drbfr does not apply it.

Conventions of the published weights (verified numerically on faces): the encoder takes RGB in
[0, 1] and gives raw latents of about [-3, 3]; the decoder takes raw latents and gives RGB in
about [0, 1]. `TAEF2FirstStage` wraps both in drbfr's first-stage interface: images in
[-1, 1], latents normalised per channel by statistics measured on training faces.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from drbfr_cli import weights, zoo
from drbfr_cli.errors import DrbfrError, load_strict

LATENT_CHANNELS = 32
WIDTH = 64
DOWNSAMPLING = 8
"""Image side / latent side."""
ENCODER_WEIGHTS = "taef2-encoder"
DECODER_WEIGHTS = "taef2-decoder"
"""Registry names (models/manifest.toml)."""
STATS_FILE = "taef2_latent_stats.json"
"""Per-channel latent statistics shipped in models/."""
_SOFT_LIMIT = 3.0
_GN_GROUPS = 4
_GN_EXPANSION = 4


# ---------------------------------------------------------------------------------------------
# Layers


def conv3x3(n_in: int, n_out: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """A 3x3 convolution with padding 1 (the only spatial kernel TAEF2 uses)."""
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class SoftClamp(nn.Module):
    """limit * tanh(x / limit): keeps decoder inputs within about +-limit, smoothly."""

    def __init__(self, limit: float = _SOFT_LIMIT) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / self.limit) * self.limit


class GroupNormBranch(nn.Sequential):
    """conv1x1 (width -> 4 x width) -> GroupNorm(4) -> ReLU -> conv1x1 (back to width).

    Key names `0.weight`, `1.weight`, `1.bias`, `3.weight`, as in the published files.
    """

    def __init__(self, width: int) -> None:
        wide = width * _GN_EXPANSION
        super().__init__(
            nn.Conv2d(width, wide, 1, bias=False),
            nn.GroupNorm(_GN_GROUPS, wide),
            nn.ReLU(),
            nn.Conv2d(wide, width, 1, bias=False),
        )


class ResBlock(nn.Module):
    """ReLU(conv(ReLU(conv(ReLU(conv(x))))) + x), optionally after x += GroupNormBranch(x)."""

    def __init__(self, width: int, *, group_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            conv3x3(width, width), nn.ReLU(), conv3x3(width, width), nn.ReLU(),
            conv3x3(width, width),
        )  # fmt: skip
        self.pool = GroupNormBranch(width) if group_norm else None
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + x)


def _stage(count: int, *, group_norm: bool = False) -> list[nn.Module]:
    return [ResBlock(WIDTH, group_norm=group_norm) for _ in range(count)]


def build_encoder(latent_channels: int = LATENT_CHANNELS) -> nn.Sequential:
    """RGB [0, 1] (H, W multiples of 8) -> raw latent, latent_channels x H/8 x W/8."""
    down = lambda: conv3x3(WIDTH, WIDTH, stride=2, bias=False)  # noqa: E731
    return nn.Sequential(
        conv3x3(3, WIDTH), *_stage(1),
        down(), *_stage(3),
        down(), *_stage(3),
        down(), *_stage(3, group_norm=True),
        conv3x3(WIDTH, latent_channels),
    )  # fmt: skip


def build_decoder(latent_channels: int = LATENT_CHANNELS) -> nn.Sequential:
    """Raw latent -> RGB about [0, 1] at 8x the latent side (not clamped)."""
    up = lambda: [nn.Upsample(scale_factor=2), conv3x3(WIDTH, WIDTH, bias=False)]  # noqa: E731
    return nn.Sequential(
        SoftClamp(), conv3x3(latent_channels, WIDTH), nn.ReLU(),
        *_stage(3, group_norm=True), *up(),
        *_stage(3), *up(),
        *_stage(3), *up(),
        *_stage(1), conv3x3(WIDTH, 3),
    )  # fmt: skip


class TAEF2(nn.Module):
    """The encoder and decoder together (so that `.to`, `.eval` and parameter counts see both).

    Each half keeps the key names of its published file: `encoder.load_state_dict(file)`.
    """

    def __init__(self, latent_channels: int = LATENT_CHANNELS) -> None:
        super().__init__()
        self.encoder = build_encoder(latent_channels)
        self.decoder = build_decoder(latent_channels)


# ---------------------------------------------------------------------------------------------
# Latent statistics


@dataclass(frozen=True)
class ChannelLatentStats:
    """Per-channel mean and std of raw latents of training faces: z_norm = (z - mean) / std."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    samples: int
    """Number of latents (images) the statistics were computed from."""

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise DrbfrError("latent statistics need one mean and one std per channel")
        if not all(math.isfinite(s) and s > 0.0 for s in self.std):
            raise DrbfrError("latent statistics need finite, positive stds")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def tensors(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as 1 x C x 1 x 1 tensors on the device and dtype of `like`."""
        shape = (1, self.channels, 1, 1)
        make = lambda v: torch.tensor(v, device=like.device, dtype=like.dtype).view(shape)  # noqa: E731
        return make(self.mean), make(self.std)


def compute_latent_stats(latents: torch.Tensor | Iterable[torch.Tensor]) -> ChannelLatentStats:
    """Per-channel mean and (population) std over every position of N x C x h x w latents.

    Takes one batch or an iterator of batches (accumulated in float64, so batches may come from
    a loop over a data set without keeping them).
    """
    batches = [latents] if isinstance(latents, torch.Tensor) else latents
    count, total, squares, samples = 0, None, None, 0
    for batch in batches:
        if batch.ndim != 4:
            raise DrbfrError(f"latents must be N x C x h x w; got {tuple(batch.shape)}")
        flat = batch.detach().double().cpu().transpose(0, 1).flatten(1)
        total = flat.sum(1) if total is None else total + flat.sum(1)
        squares = flat.square().sum(1) if squares is None else squares + flat.square().sum(1)
        count += flat.shape[1]
        samples += batch.shape[0]
    if total is None or squares is None or count < 2:
        raise DrbfrError("latent statistics need at least one latent with two positions")
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0.0).sqrt()
    return ChannelLatentStats(tuple(mean.tolist()), tuple(std.tolist()), samples)


def read_latent_stats(path: Path) -> ChannelLatentStats:
    """Statistics from a JSON file with keys `mean`, `std`, `samples` (others are ignored)."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        return ChannelLatentStats(
            mean=tuple(float(v) for v in table["mean"]),
            std=tuple(float(v) for v in table["std"]),
            samples=int(table["samples"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DrbfrError(f"{path}: not a latent statistics file ({exc})") from None


def write_latent_stats(path: Path, stats: ChannelLatentStats, note: str) -> None:
    """Write `stats` as JSON with a `note` saying how they were computed."""
    table = {"note": note, **asdict(stats)}
    path.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")


def shipped_latent_stats() -> ChannelLatentStats:
    """The statistics shipped in models/ (measured on training faces; see the file's note)."""
    return read_latent_stats(zoo.models_dir() / STATS_FILE)


# ---------------------------------------------------------------------------------------------
# The first stage


@dataclass(frozen=True)
class TAEF2FirstStage:
    """TAEF2 with drbfr's first-stage interface (as `nets.autoencoder.FirstStage`).

    `encode` takes float32 RGB NCHW in [-1, 1] (H and W multiples of 8) and returns the
    N x 32 x H/8 x W/8 latent normalised per channel by `stats` ((z - mean) / std; raw when
    `stats` is None); `decode` undoes the normalisation and returns RGB in [-1, 1], clamped.
    Both run the convolutions channels-last (about 1.3x faster on a CPU: BENCHMARKS.md,
    "Where a restoration's time goes") and return standard-layout tensors.
    """

    model: TAEF2
    stats: ChannelLatentStats | None = None

    def __post_init__(self) -> None:
        if self.stats is not None and self.stats.channels != LATENT_CHANNELS:
            raise DrbfrError(
                f"TAEF2 latent statistics need {LATENT_CHANNELS} channels; "
                f"got {self.stats.channels}"
            )

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        _check_image(image)
        rgb = ((image + 1.0) * 0.5).contiguous(memory_format=torch.channels_last)
        latent = self.model.encoder(rgb).contiguous()
        if self.stats is None:
            return latent
        mean, std = self.stats.tensors(latent)
        return (latent - mean) / std

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        if latent.ndim != 4 or latent.shape[1] != LATENT_CHANNELS:
            raise DrbfrError(
                f"TAEF2 decodes N x {LATENT_CHANNELS} x h x w latents; got {tuple(latent.shape)}"
            )
        if self.stats is not None:
            mean, std = self.stats.tensors(latent)
            latent = latent * std + mean
        rgb = self.model.decoder(latent.contiguous(memory_format=torch.channels_last))
        return (rgb * 2.0 - 1.0).clamp(-1.0, 1.0).contiguous()


def _check_image(image: torch.Tensor) -> None:
    if (
        image.ndim != 4
        or image.shape[1] != 3
        or image.shape[-1] % DOWNSAMPLING
        or image.shape[-2] % DOWNSAMPLING
    ):
        raise DrbfrError(
            f"TAEF2 encodes N x 3 x H x W images, H and W multiples of {DOWNSAMPLING}; "
            f"got {tuple(image.shape)}"
        )


# ---------------------------------------------------------------------------------------------
# Loading


def _load_half(module: nn.Module, name: str, weights_dir: Path | None) -> None:
    """Load registry file `name` (sha256 checked first) into `module`, strictly."""
    state = weights.load_verified(name, weights_dir)
    what = f"{weights.spec(name).filename} does not fit the TAEF2 layout"
    load_strict(module, state, what=what, where=name, error=weights.WeightsCorruptError)


def load_taef2(
    weights_dir: Path | None = None, stats: ChannelLatentStats | None = None
) -> TAEF2FirstStage:
    """TAEF2 from the weights folders (`--weights-dir`, $DRBFR_HOME/weights, ~/.cache/drbfr/
    weights), frozen, in eval mode, float32, on the CPU.

    Both files are sha256-checked before `torch.load(weights_only=True)` and loaded strictly;
    a missing, corrupt or mismatched file raises a one-line DrbfrError naming it.
    """
    model = TAEF2()
    _load_half(model.encoder, ENCODER_WEIGHTS, weights_dir)
    _load_half(model.decoder, DECODER_WEIGHTS, weights_dir)
    model.requires_grad_(False).eval()
    return TAEF2FirstStage(model=model, stats=stats)
