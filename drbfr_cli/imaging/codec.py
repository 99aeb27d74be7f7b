"""Image files <-> pixels: decoding and encoding every format drbfr reads or writes.

Everything read comes back as float32 RGB in [0, 1] (HxWx3 numpy), with alpha, gray-ness, bit
depth and EXIF orientation dealt with here; `write_image` encodes the same layout and writes it
atomically (`atomic.py`).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from drbfr_cli.errors import ImageReadError, ImageWriteError
from drbfr_cli.imaging.atomic import write_bytes_atomic

# drbfr enforces its own pixel cap (below) from the header, before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 200_000_000
"""Largest image (width x height) read by default; override with --max-pixels / DRBFR_MAX_PIXELS."""

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".tif", ".tiff"}
)
FIRST_FRAME_EXTENSIONS = frozenset({".gif"})
"""Read as their first frame (an animation's other frames are dropped), never written: drbfr
writes PNG for them, which keeps every restored colour (a GIF holds 256)."""
INPUT_EXTENSIONS = IMAGE_EXTENSIONS | FIRST_FRAME_EXTENSIONS
"""What folders are searched for (and what `is_image_path` accepts)."""
ALPHA_EXTENSIONS = frozenset({".png", ".webp", ".tif", ".tiff"})
"""Formats that keep an alpha channel when drbfr writes them."""

GRAY_TOLERANCE = 1.5 / 255.0
"""Largest channel spread (max - min of R, G, B, in [0, 1]) of a pixel that counts as gray: one
8-bit level, for encoders and colour pipelines that round YCbCr <-> RGB differently. libjpeg
round trips of RGB-gray faces are exact; the least colourful colour photo of the test data
differs by 42 levels."""
_GRAY_ROWS = 256  # rows checked at a time by is_gray (bounded memory, early exit on colour)
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112
_TIFF_BITS_PER_SAMPLE = 258


@dataclass(frozen=True)
class ImageData:
    """A decoded image. `rgb`: float32 HxWx3 in [0, 1]; `alpha`: float32 HxW in [0, 1] or None."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    grayscale: bool
    """A gray file, or RGB pixels that are gray (see `is_gray`); `rgb` then has R = G = B."""
    bit_depth: int
    format: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.rgb.shape[1], self.rgb.shape[0]


def max_pixels_from_env(default: int = DEFAULT_MAX_PIXELS) -> int:
    """The pixel cap from $DRBFR_MAX_PIXELS when set, else `default`."""
    value = os.environ.get("DRBFR_MAX_PIXELS")
    return int(value) if value else default


# ---------------------------------------------------------------------------------------------
# Reading


def read_image(path: Path | str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageData:
    """Read an image file of any common format (see IMAGE_EXTENSIONS) as float32 RGB in [0, 1].

    Handles unicode paths, EXIF orientation, grayscale, alpha, 16-bit PNG/TIFF, CMYK and
    progressive JPEG. Raises ImageReadError with a one-line reason for anything unreadable,
    including images larger than `max_pixels` (checked from the header, before decoding).
    """
    path = Path(path)
    kind = special_file(path)
    if kind is not None:  # reading a named pipe would wait for a writer
        raise ImageReadError(path, f"is {kind}, not an image file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, _missing_reason(path)) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageReadError(path, "symbolic link loop (it leads back to itself)") from None
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    return decode_image(data, source=path, max_pixels=max_pixels)


def probe_size(path: Path | str) -> tuple[int, int] | None:
    """An image file's (width, height) from its header, decoding no pixel; None when the file
    cannot be opened as an image (reading it then says why)."""
    if special_file(Path(path)) is not None:
        return None
    try:
        with Image.open(path) as pil:
            return pil.size
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None


def special_file(path: Path) -> str | None:
    """What `path` is when it exists but is no regular file ("a folder", "a named pipe (FIFO)",
    ...); None for a regular file, or for a path that cannot be examined (reading it says why)."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    return "a socket" if stat.S_ISSOCK(mode) else "a device"


def _missing_reason(path: Path) -> str:
    if path.is_symlink():
        return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
    return "file not found"


def decode_image(data: bytes, *, source: Path | str, max_pixels: int) -> ImageData:
    """Decode encoded image bytes; `source` names the file in error messages."""
    if not data:
        raise ImageReadError(source, "empty file (0 bytes)")
    try:
        pil = Image.open(BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageReadError(source, "not an image, or an unsupported format") from None
    with pil:
        width, height = pil.size
        if width * height > max_pixels:
            raise ImageReadError(
                source,
                f"{width}x{height} ({width * height / 1e6:.0f} MP) exceeds the limit of "
                f"{max_pixels / 1e6:.0f} MP (raise it with --max-pixels or DRBFR_MAX_PIXELS)",
            )
        grayscale = pil.mode in _GRAY_MODES
        fmt = pil.format or "unknown"
        try:
            orientation = int(pil.getexif().get(_EXIF_ORIENTATION, 1))  # may decode (PNG eXIf)
            if _is_16bit(pil, data):
                pixels, bit_depth = _decode_16bit(data), 16
            else:
                pil.load()
                pixels, bit_depth = _pil_to_array(pil), 8
        except (OSError, SyntaxError, ValueError, cv2.error) as exc:
            raise ImageReadError(source, f"corrupt or truncated image ({exc})") from None
    pixels = apply_exif_orientation(pixels, orientation)
    rgb, alpha = _split_channels(pixels, bit_depth)
    if not grayscale and is_gray(rgb):
        rgb, grayscale = exact_gray(rgb), True
    return ImageData(rgb=rgb, alpha=alpha, grayscale=grayscale, bit_depth=bit_depth, format=fmt)


def is_gray(rgb: np.ndarray, tolerance: float = GRAY_TOLERANCE) -> bool:
    """True when R, G and B of every pixel (float HxWx3 in [0, 1]) lie within `tolerance`.

    Gray-ness comes from the pixels, not the file mode: most scanned black-and-white photos are
    stored as RGB with equal channels. restore, align and degrade all decide it here.
    """
    for top in range(0, rgb.shape[0], _GRAY_ROWS):
        block = rgb[top : top + _GRAY_ROWS]
        if (block.max(axis=2) - block.min(axis=2)).max() > tolerance:
            return False
    return True


def exact_gray(rgb: np.ndarray) -> np.ndarray:
    """float RGB HxWx3 -> the channel mean in all three channels (R = G = B exactly)."""
    return np.ascontiguousarray(np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2))


def _is_16bit(pil: Image.Image, data: bytes) -> bool:
    """True for 16-bit-per-sample PNG or TIFF, which PIL would reduce to 8 bits for RGB."""
    if data[:8] == _PNG_SIGNATURE and len(data) > 24:
        return data[24] == 16  # IHDR bit depth (PNG spec, section 11.2.2)
    if pil.format == "TIFF":
        bits = pil.tag_v2.get(_TIFF_BITS_PER_SAMPLE, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return max(bits) == 16
    return False


def _decode_16bit(data: bytes) -> np.ndarray:
    """Decode a 16-bit PNG/TIFF with OpenCV: uint16 HxW, HxWx3 or HxWx4, returned in RGB(A)."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError("the 16-bit decoder could not read it")
    if pixels.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB
        pixels = cv2.cvtColor(pixels, code)
    return pixels


def _pil_to_array(pil: Image.Image) -> np.ndarray:
    """8-bit PIL image -> uint8 HxW (gray), HxWx2 (gray+alpha), HxWx3 (RGB) or HxWx4 (RGBA)."""
    mode = pil.mode
    if mode in {"I", "I;16", "I;16B", "I;16L", "I;16N"}:  # 16-bit gray that was not PNG/TIFF
        return np.asarray(pil, dtype=np.uint16)
    if mode == "F":
        raise ValueError("floating-point images are not supported")
    if mode == "1":
        pil = pil.convert("L")
    elif mode == "La":
        pil = pil.convert("LA")
    elif mode in {"P", "PA"}:
        has_alpha = mode == "PA" or "transparency" in pil.info
        pil = pil.convert("RGBA" if has_alpha else "RGB")
    elif mode not in {"L", "LA", "RGB", "RGBA"}:  # CMYK, YCbCr, LAB, HSV, RGBX, RGBa
        pil = pil.convert("RGBA" if "A" in mode or "a" in mode else "RGB")
    return np.asarray(pil)


def _split_channels(pixels: np.ndarray, bit_depth: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Integer pixels -> (float32 RGB HxWx3 in [0, 1], float32 alpha HxW in [0, 1] or None)."""
    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    values = pixels.astype(np.float32) / scale
    if values.ndim == 2:
        values = values[:, :, None]
    channels = values.shape[2]
    alpha = values[:, :, -1].copy() if channels in (2, 4) else None
    color = values[:, :, :1] if channels <= 2 else values[:, :, :3]
    rgb = np.repeat(color, 3, axis=2) if color.shape[2] == 1 else color
    return np.ascontiguousarray(rgb), alpha


def apply_exif_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip an HxW[xC] array so that it displays upright (EXIF tag 0x0112, values 1-8)."""
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, k=1),
    }
    transform = transforms.get(orientation)
    return np.ascontiguousarray(transform(pixels)) if transform else pixels


# ---------------------------------------------------------------------------------------------
# Writing


def encode_image(
    path: Path | str,
    rgb: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    grayscale: bool = False,
    bit_depth: int = 8,
    quality: int = 95,
) -> bytes:
    """Encode float32 RGB HxWx3 in [0, 1] for the format named by `path`'s extension.

    `grayscale` writes one channel (the RGB mean); `alpha` is kept where the format has one
    (PNG, WebP, TIFF; gray with alpha as gray+alpha, except in WebP and 16-bit files, which
    have no such mode and get RGBA); 16-bit output is written where the format has it (PNG,
    TIFF), else 8-bit. `quality` applies to JPEG and WebP.
    """
    ext = Path(path).suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ImageWriteError(path, f"unknown image extension {ext!r}")
    depth16 = bit_depth == 16 and ext in {".png", ".tif", ".tiff"}
    if grayscale and alpha is not None and not depth16 and ext in {".png", ".tif", ".tiff"}:
        return _encode_gray_alpha(rgb, alpha, ext)
    pixels = _to_integer(_compose_channels(rgb, alpha, grayscale, ext), depth16)
    params: list[int] = []
    if ext in {".jpg", ".jpeg", ".jpe", ".jfif"}:
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
        if quality >= 95:  # keep chroma at full resolution for near-lossless output
            params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    cv_ext = ".jpg" if ext in {".jpe", ".jfif"} else ext
    ok, buffer = cv2.imencode(cv_ext, pixels, params)
    if not ok:
        raise ImageWriteError(path, "the encoder failed")
    return buffer.tobytes()


def _encode_gray_alpha(rgb: np.ndarray, alpha: np.ndarray, ext: str) -> bytes:
    """8-bit gray+alpha PNG or TIFF (OpenCV writes 1, 3 or 4 channels only)."""
    pixels = _to_integer(np.stack([rgb.mean(axis=2), alpha], axis=2), depth16=False)
    buffer = BytesIO()
    Image.fromarray(pixels, mode="LA").save(buffer, format="PNG" if ext == ".png" else "TIFF")
    return buffer.getvalue()


def _compose_channels(
    rgb: np.ndarray, alpha: np.ndarray | None, grayscale: bool, ext: str
) -> np.ndarray:
    """float RGB (+alpha) -> float array in OpenCV channel order for the target format."""
    keep_alpha = alpha is not None and ext in ALPHA_EXTENSIONS
    if grayscale:
        gray = rgb.mean(axis=2, keepdims=True)
        if not keep_alpha:
            return gray[:, :, 0]
        return cv2.cvtColor(
            np.concatenate([gray, gray, gray, alpha[:, :, None]], axis=2), cv2.COLOR_RGBA2BGRA
        )
    if keep_alpha:
        return cv2.cvtColor(np.concatenate([rgb, alpha[:, :, None]], axis=2), cv2.COLOR_RGBA2BGRA)
    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32), cv2.COLOR_RGB2BGR)


def _to_integer(values: np.ndarray, depth16: bool) -> np.ndarray:
    """float [0, 1] -> uint8 or uint16 with rounding to nearest."""
    top = 65535.0 if depth16 else 255.0
    return np.rint(np.clip(values, 0.0, 1.0) * top).astype(np.uint16 if depth16 else np.uint8)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 [0, 255], rounding to nearest."""
    return _to_integer(rgb, depth16=False)


def from_uint8(pixels: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return pixels.astype(np.float32) / 255.0


def write_image(
    path: Path | str,
    rgb: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    grayscale: bool = False,
    bit_depth: int = 8,
    quality: int = 95,
) -> None:
    """Encode (see `encode_image`) and write atomically: a kill leaves no partial file."""
    data = encode_image(
        path, rgb, alpha=alpha, grayscale=grayscale, bit_depth=bit_depth, quality=quality
    )
    write_bytes_atomic(Path(path), data)


def as_written(
    path: Path | str,
    rgb: np.ndarray,
    *,
    grayscale: bool = False,
    bit_depth: int = 8,
    quality: int = 95,
) -> np.ndarray:
    """The float32 RGB a reader gets back from the file `write_image` would write at `path`
    (quantised to 8 or 16 bits, gray, JPEG/WebP-compressed): metrics on outputs score these."""
    data = encode_image(path, rgb, grayscale=grayscale, bit_depth=bit_depth, quality=quality)
    return decode_image(data, source=path, max_pixels=rgb.shape[0] * rgb.shape[1]).rgb
