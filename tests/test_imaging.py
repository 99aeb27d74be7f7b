"""Reading and writing images the way users have them (generated files of every kind)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from drbfr_cli.errors import ImageReadError, ImageWriteError
from drbfr_cli.imaging import (
    collect_images,
    image_to_tensor,
    is_temporary,
    open_atomic,
    read_image,
    tensor_to_image,
    to_uint8,
    write_image,
)


def _gradient(height: int = 48, width: int = 64) -> np.ndarray:
    """An asymmetric uint8 RGB test pattern (so flips and rotations are distinguishable)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + 2 * y) % 256], axis=2).astype(
        np.uint8
    )


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def test_rgb_png_round_trip_through_unicode_path(tmp_path: Path) -> None:
    pixels = _gradient()
    path = tmp_path / "fötö 顔 ünïcode.png"
    write_image(path, pixels.astype(np.float32) / 255.0)
    image = read_image(path)
    assert image.format == "PNG" and image.bit_depth == 8 and not image.grayscale
    assert image.rgb.dtype == np.float32 and image.rgb.shape == (48, 64, 3)
    np.testing.assert_array_equal(to_uint8(image.rgb), pixels)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_transpose(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_gradient()).save(path, quality=98, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    image = read_image(path)
    np.testing.assert_array_equal(to_uint8(image.rgb), expected)
    if orientation >= 5:
        assert image.size == (48, 64)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_grayscale_is_flagged_and_expanded(tmp_path: Path, ext: str) -> None:
    gray = _gradient()[:, :, 0]
    path = tmp_path / f"gray{ext}"
    Image.fromarray(gray, mode="L").save(path)
    image = read_image(path)
    assert image.grayscale and image.rgb.shape == (48, 64, 3)
    assert np.array_equal(image.rgb[:, :, 0], image.rgb[:, :, 2])
    out = tmp_path / f"back{ext}"
    write_image(out, image.rgb, grayscale=True)
    assert Image.open(out).mode == "L"


def test_rgba_keeps_alpha_through_write(tmp_path: Path) -> None:
    rgba = np.concatenate(
        [_gradient(), np.arange(48 * 64, dtype=np.uint8).reshape(48, 64, 1)], axis=2
    )
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    image = read_image(path)
    assert image.alpha is not None
    np.testing.assert_array_equal(to_uint8(image.alpha), rgba[:, :, 3])
    out = tmp_path / "alpha_out.png"
    write_image(out, image.rgb, alpha=image.alpha)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), rgba)


def test_palette_with_transparency_gets_alpha(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    Image.fromarray(_gradient()).convert("P").save(path, transparency=0)
    assert read_image(path).alpha is not None


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_16bit_colour_keeps_full_precision(tmp_path: Path, ext: str) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, size=(40, 30, 3), dtype=np.uint16)
    path = tmp_path / f"deep{ext}"
    assert cv2.imwrite(str(path), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    image = read_image(path)
    assert image.bit_depth == 16
    np.testing.assert_array_equal(np.rint(image.rgb * 65535).astype(np.uint16), pixels)
    out = tmp_path / f"deep_out{ext}"
    write_image(out, image.rgb, bit_depth=16)
    np.testing.assert_array_equal(read_image(out).rgb, image.rgb)


def test_16bit_grayscale_png(tmp_path: Path) -> None:
    pixels = (np.arange(64 * 32, dtype=np.uint32) * 31 % 65536).astype(np.uint16).reshape(32, 64)
    path = tmp_path / "gray16.png"
    assert cv2.imwrite(str(path), pixels)
    image = read_image(path)
    assert image.grayscale and image.bit_depth == 16
    np.testing.assert_array_equal(np.rint(image.rgb[:, :, 1] * 65535).astype(np.uint16), pixels)


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(_gradient()).convert("CMYK").save(path, quality=98)
    expected = np.asarray(Image.open(path).convert("RGB")).astype(np.float32) / 255
    image = read_image(path)
    assert image.rgb.shape == (48, 64, 3)
    assert np.abs(image.rgb - expected).max() < 1e-6
    assert np.abs(image.rgb - _gradient() / 255.0).mean() < 0.03


@pytest.mark.parametrize(
    ("name", "options", "tolerance"),
    [
        ("progressive.jpg", {"progressive": True, "quality": 95}, 0.03),
        ("lossless.webp", {"lossless": True}, 0.0),
        ("plain.bmp", {}, 0.0),
        ("plain.tif", {}, 0.0),
    ],
)
def test_common_formats_decode(tmp_path: Path, name: str, options: dict, tolerance: float) -> None:
    path = tmp_path / name
    Image.fromarray(_gradient()).save(path, **options)
    image = read_image(path)
    assert np.abs(image.rgb - _gradient() / 255.0).mean() <= tolerance + 1e-7


@pytest.mark.parametrize("ext", [".jpg", ".webp", ".bmp", ".tif"])
def test_write_formats_round_trip(tmp_path: Path, ext: str) -> None:
    rgb = _gradient() / np.float32(255)
    path = tmp_path / f"out{ext}"
    write_image(path, rgb, quality=100)
    assert np.abs(read_image(path).rgb - rgb).mean() < 0.01


def _write_bomb(path: Path, side: int = 30000) -> None:
    """A valid PNG header announcing side x side pixels, with almost no data behind it."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("this is not a photo\n"), "not an image"),
        (lambda p: _write_bomb(p), "exceeds the limit"),
    ],
    ids=["zero-byte", "text-as-jpg", "header-bomb"],
)
def test_bad_files_raise_one_line_errors(tmp_path: Path, make, reason: str) -> None:
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(ImageReadError) as info:
        read_image(path, max_pixels=200_000_000)
    message = str(info.value)
    assert reason in message and str(path) in message and "\n" not in message


def test_truncated_png_is_rejected(tmp_path: Path) -> None:
    whole = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(
        whole
    )
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(cut)


def test_pixel_cap_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.fromarray(_gradient()).save(path)
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        read_image(path, max_pixels=48 * 64 - 1)
    assert read_image(path, max_pixels=48 * 64).size == (64, 48)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="is a folder"):
        read_image(tmp_path)


def test_write_into_unwritable_place_fails_cleanly_and_keeps_old_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ImageWriteError, match="cannot write"):
        write_image(blocker / "sub" / "out.png", np.zeros((4, 4, 3), np.float32))
    existing = tmp_path / "keep.png"
    write_image(existing, np.ones((4, 4, 3), np.float32))
    before = existing.read_bytes()
    with pytest.raises(ImageWriteError, match="unknown image extension"):
        write_image(tmp_path / "keep.xyz", np.zeros((4, 4, 3), np.float32))
    assert existing.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "keep.png"]


def test_open_atomic_leaves_nothing_when_the_block_fails(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), open_atomic(target) as handle:
        handle.write(b"half of the new content")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    with open_atomic(target) as handle:
        handle.write(b"new")
    assert target.read_text() == "new" and not is_temporary(target)
    assert is_temporary(tmp_path / ".drbfr-0123456789abcdef-1a2b3c4d.tmp")
    assert is_temporary(tmp_path / ".drbfr-0123456789abcdef-1a2b3c4d.tmp", ["0123456789abcdef"])
    assert not is_temporary(tmp_path / ".drbfr-0123456789abcdef-1a2b3c4d.tmp", ["f" * 16])
    for name in (".notes.tmp", ".report.json.k2j4.tmp", ".drbfr-notes.tmp"):
        assert not is_temporary(tmp_path / name)  # a user's file, never deleted


def test_open_atomic_writes_a_255_byte_name(tmp_path: Path) -> None:
    target = tmp_path / ("n" * 251 + ".jpg")
    with open_atomic(target) as handle:
        handle.write(b"data")
    assert target.read_bytes() == b"data"


def test_collect_images_is_recursive_case_insensitive_and_sorted(tmp_path: Path) -> None:
    for name in ["b/Z.PNG", "a.JpG", "b/c/d.webp", "notes.txt", "out/skip.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = collect_images([tmp_path], exclude=[tmp_path / "out"])
    assert [s.relative.as_posix() for s in found] == ["a.JpG", "b/Z.PNG", "b/c/d.webp"]
    single = collect_images([tmp_path / "a.JpG"])
    assert single[0].relative == Path("a.JpG")
    with pytest.raises(ImageReadError, match="no such file or folder"):
        collect_images([tmp_path / "missing"])


def test_several_folders_are_prefixed_by_their_names(tmp_path: Path) -> None:
    for name in ["one/x.png", "two/x.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = collect_images([tmp_path / "two", tmp_path / "one"])
    assert [s.relative.as_posix() for s in found] == ["one/x.png", "two/x.png"]


def test_tensor_round_trip_and_range() -> None:
    rgb = _gradient() / np.float32(255)
    tensor = image_to_tensor(rgb)
    assert tuple(tensor.shape) == (1, 3, 48, 64)
    assert float(tensor.min()) >= -1.0 and float(tensor.max()) <= 1.0
    np.testing.assert_allclose(tensor_to_image(tensor), rgb, atol=1e-6)
