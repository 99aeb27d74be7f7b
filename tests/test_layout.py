"""The package's architecture, checked: inference never loads training, layers import only
downwards, one module asks for CUDA, and no two files import each other (lazy imports inside
functions included)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "drbfr_cli"
INFERENCE = ("restore", "diffusion", "nets", "faces", "bundle.py")
"""Inference code: none of it may import training, benchmarks or the CLI."""
FORBIDDEN_FOR_INFERENCE = ("drbfr_cli.train", "drbfr_cli.benchmark", "drbfr_cli.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> Iterator[str]:
    """drbfr_cli modules a file imports anywhere (top level, functions, TYPE_CHECKING blocks);
    `from pkg import name` counts as importing pkg.name when that is a module."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("drbfr_cli"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            if not base.startswith("drbfr_cli"):
                continue
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            if subs and len(subs) == len(node.names):
                yield from subs
            else:
                yield base
                yield from subs


def import_graph() -> dict[str, set[str]]:
    known = set(modules())
    return {
        name: {m for m in imported(path, known) if m in known and m != name}
        for name, path in modules().items()
    }


def test_importing_bundle_and_restore_loads_no_training_code() -> None:
    """In a fresh interpreter. diffusers itself imports accelerate whenever it is installed, so
    the check is that drbfr adds none of accelerate beyond what diffusers' own models load."""
    probe = """
import sys
def loaded(prefixes):
    return {m for m in sys.modules if m.split('.')[0] in prefixes}
from diffusers import DDIMScheduler, UNet2DConditionModel, VQModel
before = loaded({'accelerate'})
import drbfr_cli.bundle, drbfr_cli.diffusion.pipeline
import drbfr_cli.restore.run, drbfr_cli.restore.finish, drbfr_cli.restore.tools
added = loaded({'accelerate'}) - before
training = {m for m in sys.modules if m.startswith(
    ('drbfr_cli.train', 'drbfr_cli.benchmark', 'drbfr_cli.cli'))}
print(','.join(sorted(added | training)))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", out.stdout


def test_sampling_options_are_checked_without_importing_torch() -> None:
    """The CLI's check of the sampling options (parse_sampling: SamplingOverrides over
    --fidelity, applied to a SamplingConfig) runs in a fresh interpreter without torch, so
    `restore --start-t 1.5` fails before the seconds torch takes to import."""
    probe = """
import sys
import typer
from drbfr_cli.cli.common import parse_sampling
from drbfr_cli.diffusion.sampling_config import SamplingConfig
overrides, auto = parse_sampling("0.5", start_t=None, steps=4)
assert overrides.apply(SamplingConfig()).steps == 4 and not auto
try:
    parse_sampling(None, start_t=1.5)
except typer.BadParameter as exc:
    print("refused:", exc)
print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers')))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    refused, modules = out.stdout.strip().splitlines()
    assert refused == "refused: start_t must lie in (0, 1], got 1.5"
    assert modules == "[]"


@pytest.mark.parametrize("where", INFERENCE)
def test_inference_code_imports_no_training_benchmark_or_cli(where: str) -> None:
    known = set(modules())
    root = PACKAGE / where
    files = [root] if root.suffix == ".py" else sorted(root.rglob("*.py"))
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in files
        for name in imported(path, known)
        if name.startswith(FORBIDDEN_FOR_INFERENCE)
    ]
    assert offenders == []


@pytest.mark.parametrize("where", ("restore", "metrics"))
def test_restore_and_metrics_import_nothing_from_the_gallery(where: str) -> None:
    """The gallery is written from the outputs, by the CLI (a run's on_finish): restore/ and
    metrics/ never import gallery/, lazily or not, so there is no package loop."""
    known = set(modules())
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in sorted((PACKAGE / where).rglob("*.py"))
        for name in imported(path, known)
        if name == "drbfr_cli.gallery" or name.startswith("drbfr_cli.gallery.")
    ]
    assert offenders == []


def test_the_import_finder_sees_a_lazy_gallery_import() -> None:
    """cli/report.py imports the gallery inside its command only."""
    found = set(imported(PACKAGE / "cli" / "report.py", set(modules())))
    assert {"drbfr_cli.gallery.page", "drbfr_cli.gallery.restore"} <= found


def test_only_devices_asks_for_cuda() -> None:
    callers = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "cuda.is_available" in path.read_text(encoding="utf-8") and path.name != "devices.py"
    ]
    assert callers == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_files_lazy_imports_included() -> None:
    assert _cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_in_ci_missing_shared_data_fails_the_run_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "CI": "true", "DRBFR_SHARED": str(tmp_path / "absent")}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_losses.py"],
        capture_output=True, text=True, env=env, cwd=PACKAGE.parent, timeout=300,
    )  # fmt: skip
    assert out.returncode != 0
    assert "CI=true but the shared test data is missing" in out.stdout + out.stderr


MAX_FILE_LINES = 500
MAX_BODY_LINES = 60


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, its docstring and signature (a CLI command's option
    declarations) left out."""
    body = node.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return (node.end_lineno or body[-1].lineno) - body[0].lineno + 1


def test_no_file_over_500_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in sorted(PACKAGE.rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    }
    assert long == {}


def test_no_function_body_over_60_lines() -> None:
    long = {
        f"{path.relative_to(PACKAGE)}:{node.name}": n
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (n := body_lines(node)) > MAX_BODY_LINES
    }
    assert long == {}


def test_body_lines_leaves_out_the_docstring_and_signature() -> None:
    source = (
        'def f(\n    a: int = 1,\n    b: int = 2,\n) -> int:\n    """Doc."""\n'
        "    x = a\n    return x + b\n"
    )
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.FunctionDef)
    assert body_lines(node) == 2


DETECTION_PARAMETERS = {
    "det_threshold": "DetThresholdOption",
    "det_retry": "DetRetryOption",
    "det_size": "DetSizeOption",
    "min_face": "MinFaceOption",
    "max_faces": "MaxFacesOption",
    "only_center_face": "OnlyCenterFaceOption",
}


@pytest.mark.parametrize("command", ["restore", "align", "inspect"])
def test_detection_options_are_declared_once(command: str) -> None:
    """restore, align and inspect take the same detection options: each parameter's annotation
    is the one declaration in cli/detect_options.py (the same typer.Option object)."""
    import importlib
    import typing

    from drbfr_cli.cli import detect_options

    module = importlib.import_module(f"drbfr_cli.cli.{command}")
    hints = typing.get_type_hints(getattr(module, command), include_extras=True)
    for parameter, declaration in DETECTION_PARAMETERS.items():
        shared = getattr(detect_options, declaration).__metadata__
        assert hints[parameter].__metadata__[0] is shared[0], (command, parameter)
