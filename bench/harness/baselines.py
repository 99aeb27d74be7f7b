"""Baseline face restorers, built through spandrel with random weights (their speed and memory
do not depend on the weights): GFPGAN v1 clean (the v1.3 / v1.4 release architecture) and
CodeFormer. Both restore 512 x 512 aligned faces in one network call.

CodeFormer's architecture lives in the separate `spandrel_extra_arches` package (install the
`bench` extra); its code is under the S-Lab License 1.0 (non-commercial use). Without that
package the CodeFormer baseline is skipped with a note.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from drbfr_cli.benchmark.measure import count_flops, parameter_count

FACE_SIZE = 512
"""Side of the aligned faces GFPGAN and CodeFormer take."""
CODEFORMER_FIDELITY = 0.5
"""CodeFormer's fidelity weight w (its default in inference_codeformer.py; cost is the same
for any w)."""


@dataclass(frozen=True)
class Baseline:
    """A random-weight baseline network and how to call it on faces in [-1, 1]."""

    name: str
    module: torch.nn.Module
    call: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
    licence: str

    def __call__(self, faces: torch.Tensor) -> torch.Tensor:
        return self.call(self.module, faces)


@dataclass(frozen=True)
class Unavailable:
    """A baseline that could not be built here, and why."""

    name: str
    reason: str


def _gfpgan(device: torch.device | str) -> torch.nn.Module:
    from spandrel.architectures.GFPGAN import GFPGAN

    with torch.device(device):  # the hyperparameters spandrel loads GFPGAN v1.3 / v1.4 with
        return GFPGAN(
            out_size=FACE_SIZE,
            num_style_feat=512,
            channel_multiplier=2,
            decoder_load_path=None,
            fix_decoder=False,
            num_mlp=8,
            input_is_latent=True,
            different_w=True,
            narrow=1,
            sft_half=True,
        )


def _codeformer(device: torch.device | str) -> torch.nn.Module:
    with warnings.catch_warnings():  # the package's import warns about torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormer
    with torch.device(device):
        return CodeFormer()  # the released model's shape: 9 layers, 1024 codes, 256 tokens


def _call_gfpgan(module: torch.nn.Module, faces: torch.Tensor) -> torch.Tensor:
    return module(faces, return_rgb=False)[0]


def _call_codeformer(module: torch.nn.Module, faces: torch.Tensor) -> torch.Tensor:
    return module(faces, weight=CODEFORMER_FIDELITY)[0]


BUILDERS = {
    "gfpgan": (_gfpgan, _call_gfpgan, "Apache-2.0 (GFPGAN), through spandrel (MIT)"),
    "codeformer": (
        _codeformer,
        _call_codeformer,
        "S-Lab License 1.0, non-commercial (CodeFormer), through spandrel_extra_arches (MIT)",
    ),
}
"""name -> (builder, call, licence of the architecture's code)."""


def build_baseline(
    name: str, device: torch.device | str, *, seed: int = 0
) -> Baseline | Unavailable:
    """The baseline `name` (gfpgan, codeformer) with random weights, in eval mode on `device`."""
    if name not in BUILDERS:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BUILDERS)}")
    build, call, licence = BUILDERS[name]
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = build(device)
    except ImportError as exc:
        return Unavailable(name, f"{exc.name or exc} is not installed (pip install 'drbfr[bench]')")
    module.requires_grad_(False).eval()
    return Baseline(name, module, call, licence)


def baseline_facts(baseline: Baseline) -> dict[str, object]:
    """Parameters and FLOPs per face (counted on a shape-only copy) of a baseline."""
    meta = build_baseline(baseline.name, "meta")
    flops = None
    if isinstance(meta, Baseline):
        face = torch.empty(1, 3, FACE_SIZE, FACE_SIZE, device="meta")
        flops = count_flops(lambda: meta(face))
    return {
        "parameters": parameter_count(baseline.module),
        "flops_per_face": flops,
        "face_size": FACE_SIZE,
        "licence": baseline.licence,
    }
