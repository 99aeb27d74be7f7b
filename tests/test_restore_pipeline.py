"""The restore pipeline as a library: batching across images, OOM halving, order, bounded memory,
output planning and seeds, with restorers injected directly (no model, no CLI)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from drbfr_cli.choices import Background, OutputFormat
from drbfr_cli.devices import resolve_device
from drbfr_cli.errors import DrbfrError
from drbfr_cli.faces.detect import DetectorKind, build_detector
from drbfr_cli.imaging import ImageSource, collect_images, expand_inputs, read_image, write_image
from drbfr_cli.restore.background import LanczosUpsampler
from drbfr_cli.restore.plan import face_path, face_seed, output_path, plan_outputs
from drbfr_cli.restore.restorer import IdentityRestorer
from drbfr_cli.restore.run import RestoreOptions, RestoreTools, restore_images
from drbfr_cli.restore.tools import ToolChoices, build_background
from tests.test_restore_cli import small_copies


class SeededRestorer:
    """Not the identity: a gamma curve plus noise drawn from each face's own seed."""

    def __init__(self, face_size: int = 256) -> None:
        self.face_size = face_size
        self.batch_sizes: list[int] = []

    def restore(self, faces: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        self.batch_sizes.append(faces.shape[0])
        noise = torch.stack(
            [
                torch.randn(faces.shape[1:], generator=torch.Generator().manual_seed(seed))
                for seed in seeds
            ]
        )
        return (faces.pow(0.8) + 0.05 * noise).clamp(0.0, 1.0)


class OutOfMemoryAbove(SeededRestorer):
    """Raises CUDA's out-of-memory error for batches larger than `limit`."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def restore(self, faces: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        if faces.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().restore(faces, seeds)


@pytest.fixture(scope="module")
def yunet(shared_weights_dir: Path):
    return build_detector(DetectorKind.YUNET, shared_weights_dir)


@pytest.fixture(scope="module")
def photos(real_lq_whole_dir: Path, tmp_path_factory) -> list[ImageSource]:
    """Three small real photos with 2 + 2 + 3 faces."""
    folder = tmp_path_factory.mktemp("photos")
    small_copies(real_lq_whole_dir / "Blake_Lively.jpg", folder, ["a.png"])
    small_copies(real_lq_whole_dir / "rfpp_06.png", folder, ["b.png"])
    small_copies(real_lq_whole_dir / "example.jpg", folder, ["c.png"], scale=1.0)
    return collect_images([folder])


def _run(sources, out: Path, restorer, detector, notices: list[str] | None = None, **options):
    options = RestoreOptions(out_dir=out, upscale=1.0, save_faces=True, **options)
    tools = RestoreTools(restorer=restorer, detector=detector, upsampler=LanczosUpsampler(1.0))
    on_notice = notices.append if notices is not None else None
    return restore_images(sources, options, tools, on_notice=on_notice)


def _pixels(out: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(out).as_posix(): read_image(p).rgb for p in sorted(out.rglob("*.png"))}


def test_batches_across_images_give_the_same_pixels_as_one_at_a_time(photos, yunet, tmp_path):
    single, batched = SeededRestorer(), SeededRestorer()
    summary = _run(photos, tmp_path / "one", single, yunet, batch_size=1)
    _run(photos, tmp_path / "four", batched, yunet, batch_size=4)
    assert summary.faces == 7
    assert single.batch_sizes == [1] * 7 and batched.batch_sizes == [4, 3]
    one, four = _pixels(tmp_path / "one"), _pixels(tmp_path / "four")
    assert sorted(one) == sorted(four) and len(one) == 3 + 3 * 7
    for name in one:
        np.testing.assert_array_equal(one[name], four[name], err_msg=name)
    identity = _run(photos, tmp_path / "id", IdentityRestorer(), yunet)
    assert identity.faces == 7
    restored = _pixels(tmp_path / "id")["restored_faces/a_00.png"]
    assert np.abs(restored - one["restored_faces/a_00.png"]).mean() > 0.02  # it did something


def test_out_of_memory_halves_the_batch_and_keeps_the_pixels(photos, yunet, tmp_path):
    notices: list[str] = []
    restorer = OutOfMemoryAbove(limit=1)
    summary = _run(photos, tmp_path / "oom", restorer, yunet, notices, batch_size=4)
    assert summary.faces == 7 and summary.failed == 0
    assert notices == [
        "out of GPU memory: batch size lowered to 2",
        "out of GPU memory: batch size lowered to 1",
    ]
    assert set(restorer.batch_sizes) == {1}
    _run(photos, tmp_path / "ref", SeededRestorer(), yunet, batch_size=1)
    oom, reference = _pixels(tmp_path / "oom"), _pixels(tmp_path / "ref")
    for name in reference:
        np.testing.assert_allclose(oom[name], reference[name], atol=1.5 / 255, err_msg=name)
    with pytest.raises(DrbfrError, match="one face per batch"):
        _run(photos, tmp_path / "none", OutOfMemoryAbove(limit=0), yunet, overwrite=True)


class InFlightProbe:
    """Wraps a detector; each time it takes an image, records how many images have been read
    but not yet written (the images the pipeline holds)."""

    def __init__(self, inner, written: list) -> None:
        self.inner, self.kind, self.written = inner, inner.kind, written
        self.seen, self.in_flight = 0, []

    def detect(self, image: np.ndarray, threshold: float):
        self.seen += 1
        self.in_flight.append(self.seen - len(self.written))
        return self.inner.detect(image, threshold)


def test_memory_holds_a_bounded_number_of_images(real_lq_whole_dir, yunet, tmp_path):
    """60 images, a two-face photo every 20th and blank images between: with batches of 3 the
    faces of one photo wait for the next, but the blank images behind them may not pile up."""
    folder = tmp_path / "in"
    for index in range(60):
        name = f"f{index:02d}.png"
        if index % 20 == 0:
            small_copies(real_lq_whole_dir / "Blake_Lively.jpg", folder, [name], scale=0.4)
        else:
            write_image(folder / name, np.full((48, 64, 3), 0.5, np.float32))
    written: list = []
    probe, restorer = InFlightProbe(yunet, written), SeededRestorer()
    options = RestoreOptions(out_dir=tmp_path / "out", upscale=1.0, batch_size=3, queue_size=2)
    tools = RestoreTools(restorer=restorer, detector=probe, upsampler=LanczosUpsampler(1.0))
    summary = restore_images(collect_images([folder]), options, tools, on_record=written.append)
    assert summary.images == 60 and summary.faces == 6
    assert [r.relative for r in written] == [f"f{i:02d}.png" for i in range(60)]
    assert restorer.batch_sizes == [2, 2, 2]  # short batches: the blank images could not wait
    # reader 1 + queue 2 + waiting for a batch (batch 3 + queue 2 + 1) + queue 2 + writer 1
    assert max(probe.in_flight) <= 3 + 3 * 2 + 3


def test_output_paths_ext_suffix_and_clashes(tmp_path):
    options = RestoreOptions(out_dir=tmp_path, ext=OutputFormat.PNG, suffix="_r")
    out = output_path(Path("sub/x.JPG"), options)
    assert out == tmp_path / "restored_imgs" / "sub" / "x_r.png"
    assert face_path(out, options, "cmp", 3) == tmp_path / "cmp" / "sub" / "x_r_03.png"
    same = RestoreOptions(out_dir=tmp_path)
    assert output_path(Path("x.JPG"), same).name == "x.JPG"
    assert output_path(Path("x.raw"), same).name == "x.png"
    sources = [ImageSource(tmp_path / n, Path(n)) for n in ("a.png", "a.jpg")]
    with pytest.raises(DrbfrError, match="would both be written"):
        plan_outputs(sources, options)
    assert len(plan_outputs(sources, same)) == 2
    inside = RestoreOptions(out_dir=tmp_path / "o")
    clash = [ImageSource(tmp_path / "o" / "restored_imgs" / "a.png", Path("a.png"))]
    with pytest.raises(DrbfrError, match="overwrite an input"):
        plan_outputs(clash, inside)


def test_face_seeds_depend_on_seed_path_and_index_only():
    seed = face_seed(0, "a/b.png", 1)
    assert seed == face_seed(0, "a/b.png", 1) and 0 <= seed < 2**53
    others = {face_seed(1, "a/b.png", 1), face_seed(0, "a/c.png", 1), face_seed(0, "a/b.png", 0)}
    assert seed not in others and len(others) == 3


def test_expand_inputs_globs_and_stdin(tmp_path):
    for name in ("b.png", "a.png", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert expand_inputs([str(tmp_path / "*.png")]) == [tmp_path / "a.png", tmp_path / "b.png"]
    assert expand_inputs(["-", "x"], [" p/q.png\n", "\n"]) == [Path("p/q.png"), Path("x")]
    literal = tmp_path / "[1].png"
    literal.write_bytes(b"x")
    assert expand_inputs([str(literal)]) == [literal]
    with pytest.raises(DrbfrError, match="no file or folder matches"):
        expand_inputs([str(tmp_path / "*.webp")])


def test_background_auto_falls_back_to_lanczos_with_a_notice(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DRBFR_HOME", raising=False)
    notices: list[str] = []
    choices = ToolChoices(background=Background.AUTO, weights_dir=tmp_path / "w", device="cuda")
    assert isinstance(build_background(choices, 2.0, notices.append), LanczosUpsampler)
    assert len(notices) == 1 and "drbfr weights fetch realesrgan-x2plus" in notices[0]
    monkeypatch.setenv("DRBFR_OFFLINE", "1")
    explicit = ToolChoices(background=Background.REALESRGAN, weights_dir=tmp_path / "w")
    with pytest.raises(DrbfrError, match="realesrgan-x4plus"):
        build_background(explicit, 4.0, notices.append)


def test_devices_are_resolved_and_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    for bad in ("tpu", "cuda:99"):
        with pytest.raises(DrbfrError, match="device"):
            resolve_device(bad)
