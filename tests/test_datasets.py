"""File-backed training faces: folders and weighted mixtures, read when indexed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drbfr_cli.errors import DrbfrError
from drbfr_cli.imaging import write_image
from drbfr_cli.train import datasets
from drbfr_cli.train.datasets import FaceFiles, FolderShare, load_faces, parse_mixture


def _faces(folder: Path, count: int, value: float = 0.5) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        write_image(folder / f"{i:02d}.png", np.full((40, 40, 3), value, np.float32))
    return folder


def test_mixture_specs_parse() -> None:
    assert parse_mixture("a") == [FolderShare(Path("a"))]
    assert parse_mixture("a:2,b") == [FolderShare(Path("a"), 2.0), FolderShare(Path("b"))]
    assert parse_mixture(["c:0.5"]) == [FolderShare(Path("c"), 0.5)]
    assert parse_mixture("x:y") == [FolderShare(Path("x:y"))]  # not a number: part of the path
    with pytest.raises(DrbfrError, match="positive"):
        parse_mixture("a:0")
    with pytest.raises(DrbfrError, match="no training folder"):
        parse_mixture(" , ")


def test_faces_are_decoded_only_when_indexed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _faces(tmp_path / "a", 30)
    calls = []
    real = datasets.read_image
    monkeypatch.setattr(datasets, "read_image", lambda p, **k: calls.append(p) or real(p, **k))
    faces = load_faces(folder, 32)
    assert len(faces) == 30 and len(calls) == 1  # one probe at start, nothing kept in memory
    face = faces[7]
    assert face.shape == (32, 32, 3) and face.dtype == np.uint8 and len(calls) == 2
    with pytest.raises(IndexError):
        faces[30]
    assert len(list(load_faces(folder, 8))) == 30  # iteration ends


def test_weights_repeat_a_folders_faces(tmp_path: Path) -> None:
    a = _faces(tmp_path / "a", 4, 0.2)
    b = _faces(tmp_path / "b", 2, 0.8)
    faces = load_faces(f"{a},{b}:2", 16)
    assert len(faces) == 4 + 4
    values = sorted(round(float(faces[i].mean()) / 255, 1) for i in range(len(faces)))
    assert values == [0.2] * 4 + [0.8] * 4
    assert len(load_faces(f"{a}:0.5", 16)) == 2


def test_unreadable_files_are_replaced_and_empty_folders_refused(tmp_path: Path) -> None:
    folder = _faces(tmp_path / "a", 2, 0.6)
    (folder / "00.png").write_bytes(b"not an image")
    faces = FaceFiles([FolderShare(folder)], 16)
    assert round(float(faces[0].mean()) / 255, 1) == 0.6  # the next readable face
    with pytest.raises(DrbfrError, match="no images"):
        load_faces(_faces(tmp_path / "empty", 0), 16)
