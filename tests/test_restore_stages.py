"""The restore stages on their own: each returns new frozen records, the batch stage halves on
out-of-memory errors, and a run hands its complete totals to on_finish."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from drbfr_cli.faces.align import FACE_SIZE
from drbfr_cli.imaging import collect_images
from drbfr_cli.restore.batch import BatchRunner
from drbfr_cli.restore.compose import gray_faces
from drbfr_cli.restore.jobs import FaceJob
from drbfr_cli.restore.prepare import aligned_input
from drbfr_cli.restore.report import RunSummary
from drbfr_cli.restore.restorer import IdentityRestorer
from drbfr_cli.restore.run import RestoreOptions, RestoreTools, restore_images


def _face(seed: int, gray: bool = False) -> FaceJob:
    rgb = np.random.default_rng(seed).random((64, 64, 3), dtype=np.float32)
    if gray:
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    return FaceJob(aligned_input(rgb), seed)


class _ShortOfMemory(IdentityRestorer):
    """Fails with an out-of-memory error on any batch larger than `fits`."""

    def __init__(self, fits: int) -> None:
        super().__init__()
        self.fits, self.calls = fits, []

    def restore(self, faces, seeds):
        self.calls.append(len(seeds))
        if len(seeds) > self.fits:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().restore(faces, seeds)


def test_the_records_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _face(0).seed = 1  # type: ignore[misc]


def test_the_batch_stage_halves_on_out_of_memory_and_leaves_its_input_alone() -> None:
    faces = [_face(seed) for seed in range(5)]
    notes: list[str] = []
    restorer = _ShortOfMemory(fits=2)
    runner = BatchRunner(restorer, batch_size=4, notice=notes.append)
    restored = runner.restore(faces)
    assert restorer.calls == [4, 2, 2, 1] and runner.batch_size == 2
    assert notes == ["out of GPU memory: batch size lowered to 2"]
    assert [face.seed for face in restored] == [face.seed for face in faces]
    for before, after in zip(faces, restored, strict=True):
        assert before.restored is None and after.seconds > 0
        np.testing.assert_allclose(after.restored, before.aligned.crop, atol=1e-6)


def test_gray_faces_returns_new_faces_gray_where_the_input_is() -> None:
    colour, gray = _face(1), _face(2, gray=True)
    tinted = np.clip(gray.aligned.crop * np.float32([1.0, 0.8, 0.6]), 0, 1)
    faces = (
        dataclasses.replace(colour, restored=colour.aligned.crop),
        dataclasses.replace(gray, restored=tinted),
    )
    out = gray_faces(faces)
    assert out[0] is faces[0]
    assert out[1] is not faces[1] and faces[1].restored is tinted
    assert np.ptp(out[1].restored, axis=2).max() < 1e-6  # R = G = B


def test_on_finish_gets_the_totals_once_the_report_is_complete(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(3):
        pixels = np.random.default_rng(index).random((FACE_SIZE // 4,) * 2 + (3,)) * 255
        cv2.imwrite(str(inputs / f"{index}.png"), pixels.astype(np.uint8))
    out = tmp_path / "out"
    seen: list[tuple[RunSummary, bool]] = []
    summary = restore_images(
        collect_images([inputs]),
        RestoreOptions(out_dir=out, aligned=True, batch_size=2),
        RestoreTools(restorer=IdentityRestorer()),
        on_finish=lambda totals: seen.append((totals, (out / "report.json").is_file())),
    )
    assert seen == [(summary, True)] and summary.restored == 3
    assert not (out / "index.html").exists()  # the gallery is the CLI's
