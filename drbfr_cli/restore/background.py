"""Background upscaling: Real-ESRGAN from the registry or any single-image super-resolution
model file spandrel loads (`--bg-model`), Lanczos, or a plain bilinear resize (`none`: no
upsampler at all; at scale 1 the image is returned unchanged).

An upsampler maps a float32 RGB HxWx3 image in [0, 1] to one `scale` times larger. A network
runs at its own scale and its output is resized (Lanczos) to `scale` when the two differ. It
runs tile by tile when asked: every tile is processed with `overlap` pixels of real context on
each side and only its core is kept, so tiles meet without seams (exactly so when the overlap
covers the network's receptive field).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from drbfr_cli import weights
from drbfr_cli.choices import Background
from drbfr_cli.errors import DrbfrError, first_line

if TYPE_CHECKING:
    import torch

MODEL_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
"""File types `--bg-model` reads (torch files with weights_only=True, or safetensors)."""

DEFAULT_TILE = 512
"""Tile side in input pixels (0: the whole image at once)."""
DEFAULT_OVERLAP = 64
"""Context pixels around each tile, in input pixels."""
MODEL_NAMES = {2: "realesrgan-x2plus", 4: "realesrgan-x4plus"}
CPU_MINUTES_PER_MEGAPIXEL = {2: 7.6, 4: 30.0}
"""Minutes Real-ESRGAN x2plus / x4plus takes per input megapixel on 2 CPU threads at the
default tiling (BENCHMARKS.md: 19 min for a 1297 x 1920 photo at x2; x4plus runs its body at
4x the pixels of x2plus, which pixel-unshuffles its input)."""
CPU_THREADS_MEASURED = 2
"""Registry names of the Real-ESRGAN weights by model scale."""


class Upsampler(Protocol):
    """float32 RGB HxWx3 in [0, 1] -> float32 RGB round(H*scale) x round(W*scale) x 3."""

    scale: float

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


def output_size(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """(width, height) of an image of `shape` (H, W, ...) upscaled by `scale`."""
    return round(shape[1] * scale), round(shape[0] * scale)


def lanczos_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos-4 resize of a float32 RGB image to `size` (width, height), clipped to [0, 1]."""
    if (image.shape[1], image.shape[0]) == size:
        return image.astype(np.float32, copy=True)
    resized = cv2.resize(image, size, interpolation=cv2.INTER_LANCZOS4)
    return np.clip(resized, 0.0, 1.0)


@dataclass(frozen=True)
class LanczosUpsampler:
    """Plain Lanczos-4 resampling."""

    scale: float

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return lanczos_resize(image, output_size(image.shape, self.scale))


@dataclass(frozen=True)
class ResizeUpsampler:
    """No upsampler: a plain bilinear resize to the scale (the cheapest; exact at scale 1)."""

    scale: float

    def __call__(self, image: np.ndarray) -> np.ndarray:
        size = output_size(image.shape, self.scale)
        if (image.shape[1], image.shape[0]) == size:
            return image.astype(np.float32, copy=True)
        return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------- tiling


def upscale_tiled(
    run: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    *,
    scale: int,
    tile: int,
    overlap: int,
    multiple: int = 1,
) -> torch.Tensor:
    """Apply `run` (1xCxhxw -> 1xCx(h*scale)x(w*scale)) to `image` tile by tile.

    Tiles are `tile` pixels (rounded up to `multiple`, so every tile starts where the whole
    image's size padding would align); each is run with up to `overlap` pixels of context on
    each side, and only its core is kept. The result is assembled on the CPU in float32.
    """
    import torch

    _, channels, height, width = image.shape
    if tile <= 0 or (height <= tile and width <= tile):
        return run(image).float().cpu()
    tile = _round_up(tile, multiple)
    overlap = _round_up(overlap, multiple)
    output = torch.zeros((1, channels, height * scale, width * scale), dtype=torch.float32)
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            py0, px0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
            py1, px1 = min(y1 + overlap, height), min(x1 + overlap, width)
            piece = run(image[:, :, py0:py1, px0:px1]).float().cpu()
            top, left = (y0 - py0) * scale, (x0 - px0) * scale
            core = piece[:, :, top : top + (y1 - y0) * scale, left : left + (x1 - x0) * scale]
            output[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = core
    return output


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# --------------------------------------------------------------------------- Real-ESRGAN


def _descriptor(state_dict: dict[str, Any], *, name: str, kind: str) -> Any:
    """spandrel's descriptor for a state dict; a WeightsCorruptError when it knows none."""
    from spandrel import ModelLoader, canonicalize_state_dict

    try:
        return ModelLoader().load_from_state_dict(canonicalize_state_dict(state_dict))
    except Exception as exc:  # spandrel raises several types for unknown layouts
        raise weights.WeightsCorruptError(f"{name}: not a {kind} ({first_line(exc)})") from None


def load_realesrgan(state_dict: dict[str, Any], *, name: str) -> Any:
    """A spandrel ImageModelDescriptor for a Real-ESRGAN (RRDBNet) state dict.

    Accepts the release files' layout (`params_ema` / `params` wrappers, new-arch keys) and
    spandrel's own. Anything spandrel does not recognise as ESRGAN is a WeightsCorruptError.
    """
    from spandrel.architectures.ESRGAN import ESRGAN

    descriptor = _descriptor(state_dict, name=name, kind="Real-ESRGAN checkpoint")
    if not isinstance(descriptor.model, ESRGAN):
        kind = type(descriptor.model).__name__
        raise weights.WeightsCorruptError(f"{name}: holds a {kind} model, not Real-ESRGAN")
    return descriptor.eval()


@dataclass(frozen=True)
class ModelFile:
    """A user-named super-resolution model file, as the report records it."""

    path: Path
    sha256: str
    architecture: str
    scale: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "sha256": self.sha256,
            "architecture": self.architecture,
            "scale": self.scale,
        }


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a .pth/.pt/.ckpt (torch.load, weights_only) or .safetensors file."""
    if not path.is_file():
        raise DrbfrError(f"{path}: background model file not found")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise DrbfrError(f"{path}: expected a {', '.join(MODEL_SUFFIXES)} model file")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a checkpoint, pickled code: one line
        reason = first_line(exc)
        raise weights.WeightsCorruptError(f"{path}: cannot be loaded ({reason})") from None
    if not isinstance(state, dict):
        raise weights.WeightsCorruptError(f"{path}: holds a {type(state).__name__}, not weights")
    return state


def load_sr_model(path: Path) -> tuple[Any, ModelFile]:
    """spandrel's descriptor of any single-image super-resolution model file (RGB in and out),
    and what the report records of it (sha256: the file is not in the registry)."""
    from spandrel import ImageModelDescriptor

    descriptor = _descriptor(read_state_dict(path), name=str(path), kind="model spandrel knows")
    architecture = descriptor.architecture.name
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.purpose != "SR":
        raise DrbfrError(
            f"{path}: {architecture} is a {descriptor.purpose} model, not single-image "
            "super-resolution"
        )
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise DrbfrError(f"{path}: {architecture} is not an RGB-to-RGB model")
    info = ModelFile(path, weights.sha256_file(path), architecture, descriptor.scale)
    return descriptor.eval(), info


def model_dtype(descriptor: Any, device: torch.device, half: bool) -> torch.dtype:
    """fp16 on CUDA when asked and the architecture supports it (else bf16, else fp32)."""
    import torch

    if not half or device.type != "cuda":
        return torch.float32
    if descriptor.supports_half:
        return torch.float16
    return torch.bfloat16 if descriptor.supports_bfloat16 else torch.float32


class SpandrelUpsampler:
    """A spandrel super-resolution network, tiled, fp16 on CUDA when asked; resized to `scale`
    with Lanczos when the network's own scale differs (e.g. 2 or 3 with an x4 network)."""

    def __init__(
        self,
        *,
        descriptor: Any,
        scale: float,
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        device: torch.device | str = "cpu",
        half: bool = False,
        source: ModelFile | None = None,
    ) -> None:
        import torch

        self.scale, self.source = scale, source
        self.tile, self.overlap = tile, overlap
        self.device = torch.device(device)
        self.dtype = model_dtype(descriptor, self.device, half)
        self.descriptor = descriptor.to(self.device, self.dtype)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))[None]
        tensor = tensor.to(self.device, self.dtype)
        with torch.inference_mode():
            output = upscale_tiled(
                self.descriptor,
                tensor,
                scale=self.descriptor.scale,
                tile=self.tile,
                overlap=self.overlap,
                multiple=self.descriptor.size_requirements.multiple_of,
            )
        result = output[0].permute(1, 2, 0).numpy()
        return lanczos_resize(result, output_size(image.shape, self.scale))


# --------------------------------------------------------------------------- factory


def realesrgan_weights(scale: float) -> str:
    """Registry name of the Real-ESRGAN network used for `scale`: x2 up to 2, x4 above."""
    return MODEL_NAMES[2] if scale <= 2 else MODEL_NAMES[4]


def realesrgan_cpu_minutes(megapixels: float, scale: float, threads: int) -> float:
    """Rough minutes Real-ESRGAN would take on a CPU with `threads` threads for `megapixels`
    of input at output `scale` (CPU_MINUTES_PER_MEGAPIXEL, scaled by the thread count)."""
    network = 2 if scale <= 2 else 4
    rate = CPU_MINUTES_PER_MEGAPIXEL[network] * CPU_THREADS_MEASURED / max(1, threads)
    return rate * megapixels


def build_upsampler(
    kind: Background | str,
    scale: float,
    tile: int = DEFAULT_TILE,
    weights_dir: Path | None = None,
    device: torch.device | str = "cpu",
    *,
    half: bool = False,
    overlap: int = DEFAULT_OVERLAP,
    model_file: Path | None = None,
) -> Upsampler:
    """The background upsampler `kind` for `scale`; Real-ESRGAN weights are sha256-checked.

    Real-ESRGAN uses its x2 network up to scale 2 and its x4 network above. `model_file` (any
    super-resolution model spandrel loads) replaces the registry's networks.
    """
    known = ", ".join(k.value for k in Background if k is not Background.AUTO)
    try:
        kind = Background(kind)
    except ValueError:
        raise DrbfrError(f"unknown background upsampler {kind!r}; choose one of {known}") from None
    if scale <= 0:
        raise DrbfrError(f"upscale must be positive, got {scale}")
    if model_file is not None and kind not in {Background.AUTO, Background.REALESRGAN}:
        raise DrbfrError(f"a background model file replaces the {kind.value} upsampler")
    if kind is Background.AUTO and model_file is None:  # restore/tools.build_background decides
        raise DrbfrError(f"choose a background upsampler: {known}")
    if kind is Background.LANCZOS:
        return LanczosUpsampler(scale=scale)
    if kind is Background.NONE:
        return ResizeUpsampler(scale=scale)
    source = None
    if model_file is not None:
        descriptor, source = load_sr_model(model_file)
    else:
        name = realesrgan_weights(scale)
        descriptor = load_realesrgan(weights.load_verified(name, weights_dir), name=name)
    return SpandrelUpsampler(
        descriptor=descriptor,
        scale=scale,
        tile=tile,
        overlap=overlap,
        device=device,
        half=half,
        source=source,
    )
