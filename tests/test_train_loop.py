"""The shared training loop on a toy task: learning, exact resume, checkpoint errors, EMA, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from drbfr_cli.errors import DrbfrError
from drbfr_cli.train import LoopConfig, load_modules, train
from drbfr_cli.train.batches import EpochSampler, Shard, isolated_rng
from drbfr_cli.train.loop import lr_factor
from tests.train_toy import ToyTask

PROJECT_ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _loop(**overrides) -> LoopConfig:
    base = {"steps": 40, "batch_size": 4, "lr": 1e-2, "log_every": 5, "checkpoint_every": 10}
    base["cpu"] = True  # the same numbers on any machine
    return LoopConfig(**{**base, **overrides})


def _metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _final_weights(run_dir: Path, *, ema: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    return load_modules(run_dir, ema=ema)[0]


class _Killed(Exception):
    """Stands in for a kill in the middle of a run."""


def _kill_at(step: int):
    def on_log(record: dict) -> None:
        if record["step"] >= step:
            raise _Killed

    return on_log


def test_loss_falls_and_run_folder_is_complete(tmp_path):
    run = tmp_path / "run"
    result = train(ToyTask(), _loop(steps=60, sample_every=30), run)
    losses = [record["loss"] for record in _metrics(run)]
    assert result.step == 60 and len(losses) == 12
    assert losses[-1] < 0.3 * losses[0]
    assert {"step", "lr", "mse", "grad_norm", "images_per_s", "elapsed"} <= _metrics(run)[0].keys()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_0000050",
        "step_0000060",
    ]  # keep_checkpoints=2
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_0000030.png",
        "step_0000060.png",
    ]
    weights, task_config = load_modules(run)
    assert task_config == ToyTask().config() and set(weights) == {"encoder", "head"}
    assert result.final_dir == run / "final"
    assert result.last_terms["loss"] == pytest.approx(losses[-1])


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path):
    """Same final weights and the same loss curve, with workers or without, across a kill."""
    loop = _loop(grad_accum=2, ema_decay=0.9, warmup_steps=8)
    train(ToyTask(), loop, tmp_path / "straight")
    interrupted = tmp_path / "interrupted"
    with pytest.raises(_Killed):  # killed at step 25, after the checkpoint of step 20
        train(ToyTask(), replace(loop, num_workers=2), interrupted, on_log=_kill_at(25))
    first_after_resume = []
    result = train(ToyTask(), loop, interrupted, resume=True, on_log=first_after_resume.append)
    assert result.step == 40 and first_after_resume[0]["step"] == 25
    for ema in (False, True):
        straight, resumed = (
            _final_weights(tmp_path / "straight", ema=ema),
            _final_weights(interrupted, ema=ema),
        )
        for name, tensors in straight.items():
            for key, value in tensors.items():
                torch.testing.assert_close(resumed[name][key], value, rtol=0, atol=1e-6)
    straight_log, resumed_log = _metrics(tmp_path / "straight"), _metrics(interrupted)
    assert [r["step"] for r in resumed_log] == [r["step"] for r in straight_log]  # no duplicates
    for a, b in zip(straight_log, resumed_log, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
        assert b["lr"] == pytest.approx(a["lr"])


def test_lr_warms_up_holds_and_cools_down_to_zero(tmp_path):
    factor = lr_factor(_loop(steps=100, warmup_steps=10, cooldown_steps=40))
    assert [factor(k) for k in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert [factor(k) for k in (10, 59, 60)] == [1.0, 1.0, 1.0]
    assert [factor(k) for k in (70, 80, 99)] == pytest.approx([0.75, 0.5, 0.025])
    assert lr_factor(_loop(steps=100))(99) == 1.0  # no cool-down: constant
    run = tmp_path / "run"
    train(ToyTask(), _loop(steps=20, log_every=1, lr=1e-2, cooldown_steps=10), run)
    logged = [r["lr"] for r in _metrics(run)]  # after step k: the lr of step k + 1
    assert logged == pytest.approx([1e-2] * 10 + [1e-3 * k for k in range(9, -1, -1)])
    with pytest.raises(DrbfrError, match="cooldown_steps must lie in"):
        _loop(steps=10, cooldown_steps=11)


def _one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.fixture
def short_run(tmp_path) -> Path:
    """A finished 10-step run with checkpoints at steps 5 and 10."""
    run = tmp_path / "short"
    train(ToyTask(), _loop(steps=10, checkpoint_every=5), run)
    return run


@pytest.mark.parametrize("damage", ["flip_weights", "flip_state", "delete_state", "bad_config"])
def test_damaged_checkpoint_names_the_file(short_run, damage):
    latest = short_run / "checkpoints" / "step_0000010"
    target = {
        "flip_weights": latest / "encoder.safetensors",
        "flip_state": latest / "state.pt",
        "delete_state": latest / "state.pt",
        "bad_config": latest / "config.json",
    }[damage]
    if damage == "delete_state":
        target.unlink()
    elif damage == "bad_config":
        target.write_text("{not json")
    else:
        data = bytearray(target.read_bytes())
        for offset in (len(data) // 2, len(data) - 3):  # in the tensor data: headers still parse
            data[offset] ^= 0xFF
        target.write_bytes(bytes(data))
    with pytest.raises(DrbfrError) as excinfo:
        train(ToyTask(), _loop(steps=20, checkpoint_every=5), short_run, resume=True)
    assert str(target) in _one_line_error(excinfo)


def test_damaged_final_weights_are_refused_by_load_modules(short_run):
    path = short_run / "final" / "head.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DrbfrError) as excinfo:
        load_modules(short_run)
    assert str(path) in _one_line_error(excinfo)


def test_a_run_is_never_overwritten_and_resume_needs_a_checkpoint(short_run, tmp_path):
    with pytest.raises(DrbfrError, match="--resume") as excinfo:
        train(ToyTask(), _loop(steps=10), short_run)
    _one_line_error(excinfo)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DrbfrError, match="no checkpoint") as excinfo:
        train(ToyTask(), _loop(steps=10), empty, resume=True)
    _one_line_error(excinfo)
    with pytest.raises(DrbfrError, match="no such run folder"):
        train(ToyTask(), _loop(steps=10), tmp_path / "absent", resume=True)


def test_resume_refuses_a_different_config_and_continues_with_more_steps(short_run):
    with pytest.raises(DrbfrError, match=r"hidden: 16 -> 32") as excinfo:
        train(ToyTask(hidden=32), _loop(steps=20, checkpoint_every=5), short_run, resume=True)
    _one_line_error(excinfo)
    with pytest.raises(DrbfrError, match=r"lr: 0.01 -> 0.02"):
        train(ToyTask(), _loop(steps=20, lr=2e-2), short_run, resume=True)
    result = train(ToyTask(), _loop(steps=20, checkpoint_every=5), short_run, resume=True)
    assert result.step == 20 and [r["step"] for r in _metrics(short_run)] == [5, 10, 15, 20]


def test_ema_is_the_running_average_of_the_weights(tmp_path):
    decay = 0.8
    task = ToyTask()
    train(task, _loop(steps=1, ema_decay=decay), tmp_path / "one")
    with isolated_rng(0):  # the loop seeds module initialisation with LoopConfig.seed (0)
        initial = ToyTask().modules()
    trained, ema = _final_weights(tmp_path / "one"), _final_weights(tmp_path / "one", ema=True)
    for name, module in initial.items():
        for key, start in module.state_dict().items():
            expected = decay * start + (1 - decay) * trained[name][key]
            torch.testing.assert_close(ema[name][key], expected, rtol=0, atol=1e-6)
            assert not torch.equal(ema[name][key], trained[name][key])
    train(ToyTask(), _loop(steps=60, ema_decay=decay), tmp_path / "long")
    trained, ema = _final_weights(tmp_path / "long"), _final_weights(tmp_path / "long", ema=True)
    for name, module in initial.items():
        for key, start in module.state_dict().items():
            lag = (ema[name][key] - trained[name][key]).norm()
            assert 0 < lag < 0.5 * (start - trained[name][key]).norm()


def test_iterable_dataset_and_bf16_train(tmp_path):
    """A finite stream is re-iterated; bf16 autocast runs on the CPU; fp16 there is refused."""
    result = train(
        ToyTask(iterable=True, size=10), _loop(steps=8, mixed_precision="bf16"), tmp_path / "it"
    )
    assert result.step == 8 and 0 < result.last_terms["loss"] < float("inf")
    with pytest.raises(DrbfrError, match="fp16") as excinfo:
        train(ToyTask(), _loop(steps=2, mixed_precision="fp16"), tmp_path / "fp16")
    _one_line_error(excinfo)


def test_torchrun_two_processes_stay_in_sync(tmp_path, request):
    """2 CPU processes (gloo): identical final weights on both ranks, one set of logs."""
    run, out = tmp_path / "ddp", tmp_path / "ranks"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    # Bytecode of torch's optimizer stack takes seconds to compile in each fresh process when the
    # environment forbids writing it beside the sources; keep it in pytest's cache folder.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(request.config.cache.mkdir("pycache"))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += [str(PROJECT_ROOT / "tests" / "train_toy.py"), str(run), str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = safetensors.torch.load_file(out / "rank0.safetensors")
    rank1 = safetensors.torch.load_file(out / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)
    saved = _final_weights(run)
    assert torch.equal(saved["head"]["weight"], rank0["head.weight"])
    assert [p.name for p in run.rglob("metrics*")] == ["metrics.jsonl"]
    assert [r["step"] for r in _metrics(run)] == [2, 4, 6]
    config = json.loads((run / "final" / "config.json").read_text())
    assert config["world_size"] == 2
    state = torch.load(run / "checkpoints" / "step_0000006" / "state.pt", weights_only=True)
    rng0, rng1 = state["rng"]  # each rank's own stream, both saved
    assert not torch.equal(rng0["torch"], rng1["torch"])


def test_ranks_read_disjoint_items_and_a_resume_starts_mid_epoch():
    first = EpochSampler(10, seed=3, shard=Shard(rank=0, world_size=2, start=0))
    second = EpochSampler(10, seed=3, shard=Shard(rank=1, world_size=2, start=0))
    epoch0 = first.epoch_indices(0) + second.epoch_indices(0)
    assert sorted(epoch0) == list(range(10))
    assert first.epoch_indices(1) != first.epoch_indices(0)  # a new permutation per epoch
    stream = list(islice(iter(first), 12))
    resumed = list(islice(iter(EpochSampler(10, 3, Shard(0, 2, start=7))), 5))
    assert resumed == stream[7:12] and stream[5][0] == 1  # 5 items per rank and epoch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 training needs a CUDA GPU")
def test_fp16_on_gpu_learns_and_resumes(tmp_path):
    loop = _loop(steps=40, mixed_precision="fp16", cpu=False)
    run = tmp_path / "fp16"
    with pytest.raises(_Killed):
        train(ToyTask(), loop, run, on_log=_kill_at(20))
    train(ToyTask(), loop, run, resume=True)
    losses = [record["loss"] for record in _metrics(run)]
    assert losses[-1] < 0.5 * losses[0]
    state = torch.load(run / "checkpoints" / "step_0000040" / "state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0


def test_item_randomness_is_isolated_from_the_training_stream():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with isolated_rng(7):
        first = (torch.initial_seed(), torch.rand(2), np.random.rand())
    with isolated_rng(7):
        second = (torch.initial_seed(), torch.rand(2), np.random.rand())
    assert first[0] == second[0] == 7 and torch.equal(first[1], second[1]) and first[2] == second[2]
    assert torch.equal(torch.rand(3), expected)  # the caller's stream went on untouched


def test_resume_may_change_keys_are_not_compared_but_weights_must_still_fit(short_run):
    class DataMoved(ToyTask):
        resume_may_change = frozenset({"size"})

    result = train(DataMoved(size=30), _loop(steps=15, checkpoint_every=5), short_run, resume=True)
    assert result.step == 15

    class Reshaped(ToyTask):
        resume_may_change = frozenset({"hidden"})

    with pytest.raises(DrbfrError, match=r"encoder\.safetensors: does not fit") as excinfo:
        train(
            Reshaped(hidden=32, size=30),
            _loop(steps=20, checkpoint_every=5),
            short_run,
            resume=True,
        )
    _one_line_error(excinfo)
