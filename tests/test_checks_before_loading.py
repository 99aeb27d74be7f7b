"""Every `drbfr restore` option, the device, the precision and the output paths are checked
before any model is loaded: each bad one is one line on stderr with exit code 2, OUT is not
created, and neither the bundle loader nor diffusers has even been imported.

All cases run in one fresh process through the console-script entry point (`main.run`), so
that the imports it made can be seen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import PROJECT_ROOT

_SCRIPT = """
import contextlib, io, json, sys, time
for name in json.loads(sys.argv[2]):
    sys.modules[name] = None  # not installed, as far as imports and find_spec can tell
from drbfr_cli.cli import main

results = []
for args in json.loads(sys.argv[1]):
    sys.argv = ["drbfr", *args]
    err = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stderr(err):
        try:
            main.run()
        except SystemExit as exc:
            code = exc.code
    results.append([code, err.getvalue(), time.perf_counter() - started])
loaded = [name in sys.modules for name in ("diffusers", "drbfr_cli.bundle")]
print(json.dumps({"results": results, "loaded": loaded}))
"""


def _run_all(
    cases: list[list[str]], blocked: tuple[str, ...] = (), home: Path | None = None
) -> tuple[list[tuple[int, str, float]], list[bool]]:
    """Run `cases` in one process, offline, with the modules `blocked` made unimportable and
    HOME at `home` (no weights cache but the folders named)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "DRBFR_OFFLINE": "1"}
    if home is not None:
        env["HOME"] = str(home)
        env.pop("DRBFR_HOME", None)
    command = [sys.executable, "-c", _SCRIPT, json.dumps(cases), json.dumps(blocked)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    return [tuple(result) for result in answer["results"]], answer["loaded"]


def test_bad_options_and_outputs_fail_in_one_line_before_any_model_loads(
    real_lq_aligned_dir: Path, tmp_path: Path
) -> None:
    face = str(sorted(real_lq_aligned_dir.glob("*.png"))[0])
    out = tmp_path / "out"
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    base = ["restore", face, "-o", str(out), "--aligned", "--device", "cpu"]  # shipped model
    cases = {
        "--start-t 1.5": "start_t must lie in (0, 1], got 1.5",
        "--start-t 0": "start_t must lie in (0, 1], got 0.0",
        "--tem-t 1": "tem_t must lie in [0, 1)",
        "--fidelity 0.5 --start-t 2": "start_t must lie in (0, 1], got 2.0",
        "--steps 0": "Invalid value for '--steps'",
        "--samples 0": "Invalid value for '--samples'",
        "--low-freq -1": "Invalid value for '--low-freq'",
        "--fidelity 1.5": "Invalid value for '--fidelity'",
        "--guidance -1": "Invalid value for '--guidance'",
        "--max-pixels 0": "--max-pixels 0: every image would fail",
        "--precision fp16": "fp16 needs a GPU",
        f"--report-csv {tmp_path}": f"{tmp_path}: is a folder, not a file",
        f"--bg-model {tmp_path / 'none.pth'}": "background model file not found",
        f"--bg-model {blocker} --bg-upsampler lanczos": "give only one of the two",
    }
    argv = [[*base, *extra.split()] for extra in cases]
    outputs = {
        str(blocker): "cannot create the output folder (a file of that name exists)",
        str(blocker / "sub"): f"cannot create the output folder ({blocker} is a file)",
    }
    argv += [["restore", face, "-o", where, "--aligned", "--device", "cpu"] for where in outputs]
    expected = [*cases.values(), *outputs.values()]
    if not torch.cuda.is_available():
        argv.append([*base, "--device", "cuda"])
        expected.append("device 'cuda': this machine has 0 usable CUDA device(s)")
    results, loaded = _run_all(argv)
    for args, (code, stderr, _seconds), message in zip(argv, results, expected, strict=True):
        assert code == 2, (args, stderr)
        assert stderr.startswith("error: ") and stderr.count("\n") == 1, (args, stderr)
        assert message in stderr, (args, stderr)
        assert "╭" not in stderr and "Traceback" not in stderr
    assert loaded == [False, False]  # no bundle part was read: its loader was never imported
    assert not out.exists() and blocker.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_output_folder_that_is_not_writable_fails_before_any_model_loads(
    real_lq_aligned_dir: Path, tmp_path: Path
) -> None:
    face = str(sorted(real_lq_aligned_dir.glob("*.png"))[0])
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        argv = [["restore", face, "-o", str(where), "--aligned", "--device", "cpu"]
                for where in (locked, locked / "out")]  # fmt: skip
        results, loaded = _run_all(argv)
    finally:
        locked.chmod(0o755)
    assert [code for code, _, _ in results] == [2, 2]
    assert results[0][1] == f"error: {locked}: output folder is not writable\n"
    assert results[1][1] == (
        f"error: {locked / 'out'}: cannot create the output folder ({locked} is not writable)\n"
    )
    assert loaded == [False, False] and not (locked / "out").exists()


def _check_one_line_errors(
    argv: list[list[str]], results: list[tuple[int, str, float]], expected: list[str]
) -> None:
    for args, (code, stderr, _seconds), message in zip(argv, results, expected, strict=True):
        assert code == 2, (args, stderr)
        assert stderr.startswith("error: ") and stderr.count("\n") == 1, (args, stderr)
        assert message in stderr, (args, stderr)
        assert "╭" not in stderr and "Traceback" not in stderr


def test_missing_detector_and_background_weights_fail_before_any_model_loads(
    real_lq_whole_dir: Path, shared_weights_dir: Path, tmp_path: Path
) -> None:
    """The detector's weights and those of `--bg-upsampler realesrgan` are looked for (not
    read) before the bundle loads: missing offline, or of the wrong size, is one line."""
    photo = str(sorted(real_lq_whole_dir.iterdir())[0])
    out = tmp_path / "out"
    empty, short = tmp_path / "empty", tmp_path / "short"
    empty.mkdir()
    short.mkdir()
    (short / "face_detection_yunet_2023mar.onnx").write_bytes(b"not a model")
    base = ["restore", photo, "-o", str(out), "--device", "cpu"]  # shipped model
    shared = ["--weights-dir", str(shared_weights_dir)]
    cases = {
        # RetinaFace-R50 is not in the shared folder: the error names the detectors that are
        ("--detector", "retinaface", *shared): (
            "retinaface-resnet50: detection_Resnet50_Final.pth not found (offline); run "
            "`drbfr weights fetch retinaface-resnet50`"
        ),
        ("--detector", "retinaface-mobile", *shared, "--bg-upsampler", "realesrgan"): (
            "realesrgan-x2plus: RealESRGAN_x2plus.pth not found (offline)"
        ),
        ("--detector", "yunet", *shared, "--bg-upsampler", "realesrgan", "--upscale", "4"): (
            "realesrgan-x4plus: RealESRGAN_x4plus.pth not found (offline)"
        ),
        ("--weights-dir", str(empty)): "retinaface-resnet50: detection_Resnet50_Final.pth not",
        ("--detector", "yunet", "--weights-dir", str(short)): (
            f"yunet-2023mar: {short / 'face_detection_yunet_2023mar.onnx'} is corrupt (size 11 "
            "bytes, expected 232589); delete it and run `drbfr weights fetch yunet-2023mar`"
        ),
    }
    argv = [[*base, *extra] for extra in cases]
    results, loaded = _run_all(argv, home=tmp_path)
    _check_one_line_errors(argv, results, list(cases.values()))
    assert results[0][1].endswith("; or use --detector retinaface-mobile / yunet (found)\n")
    assert "(found)" not in results[3][1]  # nothing is there to suggest
    assert loaded == [False, False] and not out.exists()


def test_metrics_ids_without_dlib_fails_before_any_model_loads(
    real_lq_aligned_dir: Path, real_lq_whole_dir: Path, tmp_path: Path
) -> None:
    """--metrics ids needs dlib and face_recognition_models' files: without either, one line
    that says how to install them, before the bundle loads (aligned faces or whole photos)."""
    face = str(sorted(real_lq_aligned_dir.glob("*.png"))[0])
    photo = str(sorted(real_lq_whole_dir.iterdir())[0])
    out = tmp_path / "out"
    argv = [
        ["restore", face, "-o", str(out), "--aligned", "--metrics", "niqe,ids"],
        ["restore", photo, "-o", str(out), "--metrics", "ids", "--detector", "yunet"],
    ]
    for blocked in ("dlib", "face_recognition_models"):
        results, loaded = _run_all(argv, blocked=(blocked,))
        _check_one_line_errors(argv, results, ["pip install 'drbfr[identity]'"] * 2)
        assert loaded == [False, False] and not out.exists()
