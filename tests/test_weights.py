"""The weights registry: manifest, resolution order, hashing, verify-before-load, ensure."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from drbfr_cli import weights, zoo
from drbfr_cli.errors import DrbfrError
from drbfr_cli.weights import Status, WeightsCorruptError, WeightsMissingError, WeightSpec
from tests.local_http import FileServer, closed_port, serve

SHARED_FILES = {
    "yunet-2023mar": "face_detection_yunet_2023mar.onnx",
    "retinaface-mobilenet0.25": "detection_mobilenet0.25_Final.pth",
}


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME and no DRBFR_HOME / DRBFR_OFFLINE, so no test sees a real cache."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DRBFR_HOME", raising=False)
    monkeypatch.delenv("DRBFR_OFFLINE", raising=False)
    return home


def _entry(monkeypatch: pytest.MonkeyPatch, name: str, **changes) -> WeightSpec:
    """Replace registry entry `name` for one test."""
    entry = replace(weights.REGISTRY[name], **changes)
    monkeypatch.setitem(weights.REGISTRY, name, entry)
    return entry


def _flip_one_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- manifest


def test_manifest_has_the_required_entries() -> None:
    required = {
        "yunet-2023mar",
        "retinaface-resnet50",
        "retinaface-mobilenet0.25",
        "parsenet",
        "realesrgan-x2plus",
        "realesrgan-x4plus",
        "lpips-vgg16",
        "lpips-alexnet",
        "fid-inception",
        "ffhq-fid-stats-512",
    }
    assert required <= set(weights.REGISTRY)
    assert (zoo.models_dir() / weights.MANIFEST_NAME).is_file()


def test_unknown_hashes_are_explicit_and_only_where_expected() -> None:
    unknown = {name for name, entry in weights.REGISTRY.items() if entry.sha256 is None}
    assert unknown == {"ffhq-fid-stats-512"}
    text = (zoo.models_dir() / weights.MANIFEST_NAME).read_text()
    assert text.count('sha256 = "unknown"') == len(unknown)


def test_file_names_that_carry_a_hash_prefix_agree_with_the_sha256() -> None:
    checked = 0
    for entry in weights.REGISTRY.values():
        match = re.search(r"-([0-9a-f]{8})\.pth$", entry.filename)
        if match and entry.sha256:
            assert entry.sha256.startswith(match.group(1)), entry.name
            checked += 1
    assert checked == 3  # vgg16, alexnet, inception


def test_parse_manifest_rejects_bad_entries() -> None:
    good = 'file = "a.pth"\nurl = "http://x/a.pth"\nlicence = "MIT"\nused_by = "t"\n'
    spec = weights.parse_manifest(f'["a.b"]\n{good}sha256 = "unknown"\nsize = "unknown"\n')
    assert spec["a.b"].sha256 is None and spec["a.b"].size is None
    with pytest.raises(ValueError, match="'a': sha256 must be"):
        weights.parse_manifest(f'[a]\n{good}sha256 = "abc"\nsize = 1\n')
    with pytest.raises(ValueError, match="'a': size must be"):
        weights.parse_manifest(f'[a]\n{good}sha256 = "{"0" * 64}"\nsize = -1\n')
    with pytest.raises(ValueError, match="missing key 'sha256'"):
        weights.parse_manifest(f"[a]\n{good}size = 1\n")
    with pytest.raises(ValueError, match="'a'"):
        weights.parse_manifest(f'[a]\n{good}sha256 = "unknown"\nsize = 1\navailability = "ftp"\n')


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(DrbfrError, match=r"known: .*yunet-2023mar"):
        weights.spec("nope")


# --------------------------------------------------------------------------- resolution


def test_resolution_order(tmp_path: Path, isolated_home: Path, monkeypatch) -> None:
    name = "parsenet"
    filename = weights.spec(name).filename
    explicit, drbfr_home, cache = tmp_path / "explicit", tmp_path / "dh", isolated_home
    cache_dir = cache / ".cache" / "drbfr" / "weights"
    monkeypatch.setenv("DRBFR_HOME", str(drbfr_home))
    assert weights.search_dirs(explicit) == [explicit, drbfr_home / "weights", cache_dir]
    assert weights.find(name, explicit) is None
    for folder in (cache_dir, drbfr_home / "weights", explicit):
        folder.mkdir(parents=True)
        (folder / filename).write_bytes(b"x")
        assert weights.find(name, explicit) == folder / filename  # the newest is the first
    assert weights.find(name) == drbfr_home / "weights" / filename
    monkeypatch.delenv("DRBFR_HOME")
    assert weights.find(name) == cache_dir / filename
    assert weights.download_dir() == cache_dir


def test_require_names_the_file_url_and_folder(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError) as info:
        weights.require("realesrgan-x2plus", tmp_path)
    message = str(info.value)
    assert "RealESRGAN_x2plus.pth" in message and str(tmp_path) in message
    assert weights.spec("realesrgan-x2plus").url in message


# --------------------------------------------------------------------------- hashing


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # more than one 1 MiB chunk
    path = tmp_path / "f"
    path.write_bytes(data)
    assert weights.sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_check_file_valid_size_mismatch_and_flipped_byte(tmp_path: Path, monkeypatch) -> None:
    data = b"weights" * 1000
    path = tmp_path / "parsing_parsenet.pth"
    path.write_bytes(data)
    entry = _entry(monkeypatch, "parsenet", sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    assert weights.check_file(entry, path).status is Status.VALID
    _flip_one_byte(path, 123)
    result = weights.check_file(entry, path)
    assert result.status is Status.CORRUPT and "sha256" in result.detail
    path.write_bytes(data[:-1])
    result = weights.check_file(entry, path, hash_file=False)
    assert result.status is Status.CORRUPT and "size" in result.detail


def test_unverified_file_is_checked_against_its_recorded_hash(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "inception_FFHQ_512-f7b384ab.pth"
    path.write_bytes(b"stats" * 100)
    entry = weights.spec("ffhq-fid-stats-512")
    assert weights.check_file(entry, path).status is Status.UNVERIFIED
    weights.write_record(path, weights.sha256_file(path))
    result = weights.check_file(entry, path)
    assert result.status is Status.UNVERIFIED and "matches" in result.detail
    _flip_one_byte(path, 7)
    assert weights.check_file(entry, path).status is Status.CORRUPT


def test_shared_detectors_are_valid(shared_weights_dir: Path) -> None:
    for name, filename in SHARED_FILES.items():
        result = weights.check(name, shared_weights_dir)
        assert result.status is Status.VALID, result.detail
        assert result.path == shared_weights_dir / filename


def test_corrupt_copy_of_a_real_checkpoint_is_never_loaded(
    shared_weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    filename = SHARED_FILES["retinaface-mobilenet0.25"]
    copy = tmp_path / filename
    copy.write_bytes((shared_weights_dir / filename).read_bytes())
    state = weights.load_verified("retinaface-mobilenet0.25", tmp_path)
    assert all(isinstance(v, torch.Tensor) for v in state.values()) and len(state) > 100
    _flip_one_byte(copy, copy.stat().st_size // 2)
    calls: list[object] = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(WeightsCorruptError, match=r"corrupt .*sha256"):
        weights.load_verified("retinaface-mobilenet0.25", tmp_path)
    assert calls == []
    with pytest.raises(WeightsCorruptError):
        weights.verified_path("retinaface-mobilenet0.25", tmp_path)


def test_load_verified_refuses_pickled_code(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "parsing_parsenet.pth"
    torch.save({"w": torch.ones(2), "f": Path("x")}, path)  # not allowed under weights_only
    data = path.read_bytes()
    _entry(monkeypatch, "parsenet", sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    with pytest.raises(WeightsCorruptError, match="cannot be loaded"):
        weights.load_verified("parsenet", tmp_path)


# --------------------------------------------------------------------------- ensure / fetch


def test_ensure_offline_never_connects(tmp_path: Path, monkeypatch) -> None:
    with serve(FileServer({"/p": b"payload"})) as server:
        _entry(monkeypatch, "parsenet", url=server.url("/p"), sha256=None, size=None)
        monkeypatch.setenv("DRBFR_OFFLINE", "1")
        with pytest.raises(WeightsMissingError, match="offline"):
            weights.ensure("parsenet", tmp_path)
        with pytest.raises(WeightsMissingError, match="offline"):
            weights.ensure("parsenet", tmp_path, offline=True)
    assert server.requests == []
    assert list(tmp_path.iterdir()) == []


def test_ensure_downloads_into_the_first_folder_and_verifies(tmp_path: Path, monkeypatch) -> None:
    data = b"checkpoint bytes" * 1000
    with serve(FileServer({"/p": data})) as server:
        _entry(
            monkeypatch,
            "parsenet",
            url=server.url("/p"),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
        )
        path = weights.ensure("parsenet", tmp_path, offline=False)
        assert weights.ensure("parsenet", tmp_path, offline=False) == path  # no second download
    assert path == tmp_path / "parsing_parsenet.pth" and path.read_bytes() == data
    assert len(server.requests) == 1


def test_fetch_records_the_hash_of_an_unpublished_file(tmp_path: Path, monkeypatch) -> None:
    data = b"stats" * 1000
    with serve(FileServer({"/s": data})) as server:
        _entry(
            monkeypatch,
            "ffhq-fid-stats-512",
            url=server.url("/s"),
            availability=weights.Availability.DOWNLOAD,
        )
        path = weights.fetch("ffhq-fid-stats-512", tmp_path)
    assert weights.read_record(path) == hashlib.sha256(data).hexdigest()
    assert weights.check("ffhq-fid-stats-512", tmp_path).status is Status.UNVERIFIED


def test_fetch_of_a_manual_entry_explains_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError, match=r"by hand from https://drive.google.com"):
        weights.fetch("ffhq-fid-stats-512", tmp_path)


def test_fetch_replaces_a_corrupt_copy(tmp_path: Path, monkeypatch) -> None:
    data = b"good" * 1000
    (tmp_path / "parsing_parsenet.pth").write_bytes(b"bad!" * 1000)
    with serve(FileServer({"/p": data})) as server:
        _entry(
            monkeypatch,
            "parsenet",
            url=server.url("/p"),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
        )
        path = weights.fetch("parsenet", tmp_path)
    assert path.read_bytes() == data


def test_fetch_without_network_is_one_line_with_url_and_folder(tmp_path: Path, monkeypatch) -> None:
    url = f"http://127.0.0.1:{closed_port()}/RealESRGAN_x2plus.pth"
    _entry(monkeypatch, "realesrgan-x2plus", url=url)
    with pytest.raises(DrbfrError) as info:
        weights.fetch("realesrgan-x2plus", tmp_path / "w", timeout=2)
    message = str(info.value)
    assert url in message and str(tmp_path / "w") in message and "\n" not in message
    assert not (tmp_path / "w").exists()
