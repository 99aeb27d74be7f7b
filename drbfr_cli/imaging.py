"""The I/O boundary for images.

This is the only module that sees file paths of images, uint8/uint16 pixels, BGR order, alpha
channels or EXIF orientation. Everything it returns is float32 RGB in [0, 1] (HxWx3 numpy), and
the tensor helpers convert to/from the networks' float32 RGB NCHW layout in [-1, 1] and
batches of face crops to/from the restorer's NCHW layout in [0, 1] (`drbfr_cli.restore.restorer`).
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from drbfr_cli.errors import DrbfrError, ImageReadError, ImageWriteError

if TYPE_CHECKING:
    import torch

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

TEMP_PREFIX = ".drbfr-"
TEMP_SUFFIX = ".tmp"
TEMP_SESSION = secrets.token_hex(8)
"""This process's mark in the name of every temporary it creates: atomic writes go through
`.drbfr-SESSION-XXXXXXXX.tmp` in the target folder, then a rename. The name does not hold the
target's (a 255-byte name stays writable), and a restore run lists SESSION in its record file,
so cleanup deletes only temporaries that a recorded drbfr process created."""
_TEMP_NAME = re.compile(r"^\.drbfr-([0-9a-f]{16})-[0-9a-f]{8}\.tmp$")
OUTPUT_MARKERS = ("report.records*.jsonl", "drbfr-gallery.txt")
"""A folder holding one of these (restore's record files, records.RECORDS_GLOB, or the gallery's
marker, gallery.page.MARKER_NAME) is drbfr output: never searched for inputs below a named one."""
GLOB_CHARACTERS = frozenset("*?[")
STDIN_ARGUMENT = "-"
"""An input argument that stands for paths read from stdin, one per line."""

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


@dataclass(frozen=True)
class ImageSource:
    """An input image file and the relative path its outputs are written under."""

    path: Path
    relative: Path


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


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name in the target folder, fsync, then rename over `path`."""
    with open_atomic(path) as handle:
        handle.write(data)


@contextmanager
def open_atomic(path: Path) -> Iterator[BinaryIO]:
    """A binary file handle whose content appears at `path` only when the block completes.

    The data goes to a temporary beside `path` (see TEMP_SESSION), is fsynced
    and renamed over `path`; an error inside the block or while writing removes the temporary.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = _create_temporary(path)
    except OSError as exc:
        raise ImageWriteError(path, f"cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise ImageWriteError(path, f"cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _create_temporary(path: Path) -> tuple[int, str]:
    """Create a temporary beside `path` for writing; returns (descriptor, name).

    Unlike tempfile.mkstemp (always 0600), the file gets 0666 less the process umask, as any
    file the user creates: 0644 under the usual umask 022.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        name = _temporary_name(path)
        try:
            return os.open(name, flags, 0o666), str(name)
        except FileExistsError:
            continue


def make_temporary_folder(path: Path) -> Path:
    """Create an empty temporary folder beside `path`, to fill and rename to `path`.

    Unlike tempfile.mkdtemp (always 0700), it gets 0777 less the process umask, as any folder
    the user creates: 0755 under the usual umask 022.
    """
    while True:
        name = _temporary_name(path)
        try:
            name.mkdir(0o777)
            return name
        except FileExistsError:
            continue


def _temporary_name(path: Path) -> Path:
    return path.parent / f"{TEMP_PREFIX}{TEMP_SESSION}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


NAME_MAX = 255
"""Longest file name in bytes on the common file systems (ext4, XFS, Btrfs, APFS)."""


def fit_name(stem: str, tail: str) -> str:
    """`stem + tail` as a file name of at most NAME_MAX bytes: a stem too long for it is cut
    and marked `~` plus 8 hex digits of its sha256, so that stems cut alike stay apart."""
    if len(os.fsencode(stem + tail)) <= NAME_MAX:
        return stem + tail
    mark = "~" + hashlib.sha256(os.fsencode(stem)).hexdigest()[:8]
    room = NAME_MAX - len(os.fsencode(mark + tail))
    while len(os.fsencode(stem)) > room:
        stem = stem[:-1]
    return stem + mark + tail


def make_output_folder(out_dir: Path) -> None:
    """Create an output folder (and its parents); one-line DrbfrError unless it is writable."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DrbfrError(
            f"{out_dir}: cannot create the output folder ({exc.strerror or exc})"
        ) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise DrbfrError(f"{out_dir}: output folder is not writable")


def check_folder_target(folder: Path) -> None:
    """One-line DrbfrError, creating nothing, when `folder` can be no writable folder: it, or
    the nearest folder above it that exists, is a file or is not writable (make_output_folder
    creates it later)."""
    target = Path(os.path.abspath(folder))
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        blocker = "a file of that name exists" if existing == target else f"{existing} is a file"
        raise DrbfrError(f"{folder}: cannot create the output folder ({blocker})")
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == target:
            raise DrbfrError(f"{folder}: output folder is not writable")
        raise DrbfrError(f"{folder}: cannot create the output folder ({existing} is not writable)")


def check_file_target(path: Path) -> None:
    """One-line DrbfrError, creating nothing, when no file can be written at `path`."""
    if path.is_dir():
        raise DrbfrError(f"{path}: is a folder, not a file")
    check_folder_target(path.parent)


def temporary_session(path: Path) -> str | None:
    """The TEMP_SESSION of the drbfr process that created the temporary `path`; None for a name
    that is not a drbfr temporary."""
    match = _TEMP_NAME.match(path.name)
    return match.group(1) if match else None


def is_temporary(path: Path, sessions: Iterable[str] | None = None) -> bool:
    """True for a temporary `open_atomic` creates (left behind only by a killed process); with
    `sessions`, only one that a process of those sessions created."""
    session = temporary_session(path)
    return session is not None and (sessions is None or session in set(sessions))


# ---------------------------------------------------------------------------------------------
# Finding inputs


def is_image_path(path: Path) -> bool:
    """True when the extension is a supported input format (case-insensitive)."""
    return path.suffix.lower() in INPUT_EXTENSIONS


def writable_name(relative: Path) -> Path:
    """`relative` with .png for an input format drbfr does not write (GIF)."""
    return relative if relative.suffix.lower() in IMAGE_EXTENSIONS else relative.with_suffix(".png")


def expand_inputs(arguments: Sequence[str], stdin: Iterable[str] = ()) -> list[Path]:
    """Command-line inputs -> paths: `-` stands for the lines of `stdin` (each a path, taken
    literally); an argument that names no existing path but holds a glob pattern (`*`, `?`,
    `[`, `**` for any depth) expands to its matches, sorted. Other arguments are kept as given.
    """
    paths: list[Path] = []
    for argument in arguments:
        if argument == STDIN_ARGUMENT:
            paths.extend(Path(line.strip()) for line in stdin if line.strip())
        elif not os.path.lexists(argument) and GLOB_CHARACTERS & set(argument):
            matches = sorted(glob.glob(argument, recursive=True))
            if not matches:
                raise ImageReadError(argument, "no file or folder matches this pattern")
            paths.extend(Path(match) for match in matches)
        else:
            paths.append(Path(argument))
    return paths


def find_sources(
    arguments: Sequence[str],
    stdin: Iterable[str] = (),
    *,
    exclude: Iterable[Path] = (),
    on_skip: Callable[[Path], None] | None = None,
) -> list[ImageSource]:
    """The images that command-line `arguments` name (see expand_inputs and collect_images), in
    a fixed order. A path read from stdin that does not exist is kept, so that it fails as an
    image of its own while the others run."""
    named = [argument for argument in arguments if argument != STDIN_ARGUMENT]
    listed = expand_inputs([STDIN_ARGUMENT], stdin) if STDIN_ARGUMENT in arguments else []
    present = [path for path in listed if os.path.lexists(path)]
    found = collect_images(expand_inputs(named) + present, exclude=exclude, on_skip=on_skip)
    missing = [ImageSource(path, Path(path.name)) for path in listed if path not in present]
    return sorted(found + missing, key=lambda source: source.relative.as_posix())


def collect_images(
    inputs: Sequence[Path],
    *,
    exclude: Iterable[Path] = (),
    on_skip: Callable[[Path], None] | None = None,
) -> list[ImageSource]:
    """Image files under `inputs` (files or folders, searched recursively), in a fixed order.

    Outputs are named by `relative`: the path below the folder when one folder is given, below
    the folder's name when several are, the bare file name for files given directly. Anything
    under an `exclude` folder (e.g. an output folder inside the input) is skipped, unless that
    folder is itself one of the inputs; so is a folder below an input that holds drbfr output
    (OUTPUT_MARKERS), each reported to `on_skip`. Broken symbolic links (dangling, or loops),
    named or found in a folder, are kept: reading them fails with the reason, so they are
    reported.
    """
    roots = {real_path(p) for p in inputs}
    # An excluded folder that *is* an input is kept, so that callers can refuse the clash.
    excluded = [real_path(p) for p in exclude if real_path(p) not in roots]
    prefix_with_root = sum(1 for p in inputs if p.is_dir()) > 1
    found: dict[Path, ImageSource] = {}
    for root in inputs:
        for path in _walk(root, partial(_report_skip, on_skip, excluded)):
            resolved = real_path(path)
            if any(resolved.is_relative_to(x) for x in excluded):
                continue
            relative = _relative_name(path, root, prefix_with_root)
            if relative in found and real_path(found[relative].path) != resolved:
                raise ImageReadError(path, f"has the same output name as {found[relative].path}")
            found[relative] = ImageSource(path=path, relative=relative)
    return sorted(found.values(), key=lambda s: s.relative.as_posix())


def real_path(path: Path) -> Path:
    """The absolute path with symbolic links resolved as far as they go; unlike Path.resolve
    (before Python 3.13), no error for a link loop."""
    return Path(os.path.realpath(path))


def is_broken_link(path: Path) -> bool:
    """True for a symbolic link whose target is missing or that loops back on itself."""
    return path.is_symlink() and not path.exists()


def _walk(root: Path, on_skip: Callable[[Path], None]) -> list[Path]:
    """The image files and broken links under `root` (symbolic links to folders not followed),
    without the folders below it that hold drbfr output."""
    if not root.is_dir():
        if os.path.lexists(root):  # a file, a broken link, a named pipe: reading says what fails
            return [root]
        raise ImageReadError(root, "no such file or folder")
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        if folder != str(root) and is_output_folder(files):
            on_skip(Path(folder))
            dirs.clear()
            continue
        paths = (Path(folder, name) for name in files)
        found += [p for p in paths if (p.is_file() and is_image_path(p)) or is_broken_link(p)]
    return found


def _report_skip(
    on_skip: Callable[[Path], None] | None, excluded: Sequence[Path], folder: Path
) -> None:
    """Tell `on_skip` of a skipped output folder, unless it is excluded anyway (OUT)."""
    if on_skip is not None and not any(real_path(folder).is_relative_to(x) for x in excluded):
        on_skip(folder)


def is_output_folder(names: Iterable[str]) -> bool:
    """True when file `names` of a folder hold one of OUTPUT_MARKERS."""
    return any(fnmatch.fnmatchcase(n, marker) for n in names for marker in OUTPUT_MARKERS)


def _relative_name(path: Path, root: Path, prefix_with_root: bool) -> Path:
    if not root.is_dir():
        return Path(path.name)
    relative = path.relative_to(root)
    return Path(real_path(root).name) / relative if prefix_with_root else relative


# ---------------------------------------------------------------------------------------------
# Tensors (networks see float32 RGB NCHW in [-1, 1]; restorers take faces in [0, 1])


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """float32 RGB HxWx3 in [0, 1] -> float32 tensor 1x3xHxW in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None] * 2.0 - 1.0


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """Tensor 1x3xHxW or 3xHxW in [-1, 1] -> float32 RGB HxWx3 in [0, 1] (clipped)."""
    image = tensor.detach().float().cpu()
    image = image[0] if image.ndim == 4 else image
    return ((image.clamp(-1.0, 1.0) + 1.0) / 2.0).permute(1, 2, 0).numpy()


def faces_to_tensor(faces: Sequence[np.ndarray]) -> torch.Tensor:
    """Equal-sized float32 RGB SxSx3 faces in [0, 1] -> float32 tensor Nx3xSxS in [0, 1]."""
    import torch

    stacked = np.stack([np.asarray(face, dtype=np.float32) for face in faces])
    return torch.from_numpy(np.ascontiguousarray(stacked.transpose(0, 3, 1, 2)))


def tensor_to_faces(tensor: torch.Tensor) -> list[np.ndarray]:
    """Tensor Nx3xSxS in [0, 1] -> N float32 RGB SxSx3 faces in [0, 1] (clipped)."""
    values = tensor.detach().float().cpu().clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()
    return [np.ascontiguousarray(face) for face in values]
