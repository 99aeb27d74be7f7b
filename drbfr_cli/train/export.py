"""`drbfr export`: a bundle (bundle.py's format) from an LDM run and the DRM run (or bundle)
and VAE run it was trained on (a VQ run, or TAEF2 by registry name). Runs written before
configs were nested export too: every config is read through its typed class and written in
the current layout."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from drbfr_cli import __version__
from drbfr_cli.bundle import (
    FORMAT,
    MANIFEST,
    VERSION,
    check_agreement,
    load_bundle_encoder,
    load_bundle_fidelity,
    read_manifest,
    read_part,
    write_bundle,
)
from drbfr_cli.choices import FirstStageKind
from drbfr_cli.config import from_dict, normalised, to_dict
from drbfr_cli.diffusion.sampling import SamplingConfig
from drbfr_cli.errors import DrbfrError
from drbfr_cli.nets.autoencoder import LatentStats
from drbfr_cli.nets.drm import DRMConfig
from drbfr_cli.presets import LDMConfig, VAEConfig, first_stage_geometry
from drbfr_cli.train import checkpoint as ckpt
from drbfr_cli.train.drm_head import encoder_fingerprint, load_drm_head
from drbfr_cli.train.fidelity import load_fidelity
from drbfr_cli.train.ldm import load_frozen_encoder, load_ldm
from drbfr_cli.train.vae import load_vae

_CHECKPOINT_DIR = re.compile(r"^step_\d+$")


def export_bundle(
    ldm_run: Path,
    out: Path,
    *,
    drm_run: Path | None = None,
    vae_run: Path | None = None,
    half: bool = False,
    ema_only: bool = False,
    fidelity_run: Path | None = None,
    fidelity_ema: bool = True,
    drm_head_run: Path | None = None,
) -> Path:
    """Write a bundle of an LDM run and the DRM / VAE runs it was trained on (default: the runs
    recorded in the LDM run). Refuses an existing non-empty `out`; written atomically.

    For shipping: `half` stores every floating-point tensor as float16 (loading casts back to
    float32), `ema_only` stores only the EMA denoiser, as ldrm.safetensors. `fidelity_run`: a
    `train fidelity` run whose F the bundle carries (its EMA when kept and `fidelity_ema`, else
    its trained weights). `drm_head_run`: a `train drm-head` run on this E_DR."""
    ldrm, saved = load_ldm(ldm_run, ema=False)
    drm_run = drm_run or Path(saved["drm"])
    encoder, drm_saved = load_frozen_encoder(drm_run)  # a DRM run or a bundle's E_DR
    frozen = saved["frozen"]
    drm_config = from_dict(DRMConfig, drm_saved["model"], source=f"{drm_run} drm config")
    _same_part("DRM", normalised(DRMConfig, frozen["drm"]["model"]), to_dict(drm_config))
    model = from_dict(LDMConfig, saved["model"], source=f"{ldm_run} ldm config")
    tensors = {
        "drm_encoder": encoder.state_dict(),
        **_denoiser(ldm_run, ldrm, ema_only),
    }
    if frozen["vae"].get("kind") == FirstStageKind.TAEF2:
        first_stage = {"first_stage": frozen["vae"]}
    else:
        first_stage = _vq_part(vae_run or Path(saved["vae"]), frozen["vae"], tensors)
    geometry = first_stage_geometry(first_stage.get("first_stage") or first_stage["vae"])
    check_agreement(geometry.latent_channels, drm_config, ldrm.config)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "drbfr": __version__,
        "face_size": geometry.face_size,
        "decode_quantized": model.decode_quantized,
        "drm": {"preset": drm_saved.get("preset"), "model": to_dict(drm_config)},
        **first_stage,
        "ldrm": {"preset": saved.get("preset"), "network": to_dict(ldrm.config)},
        "schedule": to_dict(model.schedule),
        "sampling": to_dict(model.sampling),
        "train_t_max": model.train_t_max,
        "dtype": "float16" if half else "float32",
        "denoiser": "ema" if ema_only else "trained",
        "sources": {
            "drm": source_name(drm_run),
            "vae": source_name(vae_run or saved.get("vae", "")),
            "ldm": source_name(ldm_run),
        },
    }
    if fidelity_run is not None:
        manifest["fidelity"], tensors["fidelity"] = fidelity_part(
            fidelity_run, geometry.face_size, ema=fidelity_ema
        )
        manifest["sources"]["fidelity"] = source_name(fidelity_run)
    if drm_head_run is not None:
        manifest["drm_head"], tensors["drm_head"] = drm_head_part(drm_head_run, encoder)
        manifest["sources"]["drm_head"] = source_name(drm_head_run)
    if half:
        tensors = {name: to_half(state, name) for name, state in tensors.items()}
    return write_bundle(out, manifest, tensors)


def fidelity_part(
    run: Path, face_size: int, *, ema: bool = True
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The bundle's `fidelity` entry and F's weights (the EMA when kept and `ema`, else the
    trained weights) from a `train fidelity` run, or copied from a bundle that carries F (the
    F an LDRM trained behind with `train ldm --fidelity BUNDLE`)."""
    if (run / MANIFEST).is_file():
        entry = read_manifest(run).get("fidelity")
        if entry is None:
            raise DrbfrError(f"{run}: this bundle carries no fidelity network")
        return dict(entry), load_bundle_fidelity(run).state_dict()
    network, saved = load_fidelity(run, ema=ema)
    if face_size % network.config.multiple:
        raise DrbfrError(
            f"{run}: F needs sides that are multiples of {network.config.multiple}, "
            f"the bundle restores {face_size} px faces"
        )
    weights = "ema" if ema and saved_has_ema(run) else "trained"
    entry = {"preset": saved.get("preset"), "network": to_dict(network.config), "weights": weights}
    return entry, network.state_dict()


def drm_head_part(
    run: Path, encoder: torch.nn.Module
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The bundle's `drm_head` entry and weights (the EMA when kept) from a `train drm-head`
    run, or copied from a bundle that carries a head; a one-line error unless the head's E_DR
    is `encoder` (by fingerprint)."""
    if (run / MANIFEST).is_file():
        return _bundle_drm_head(run, encoder)
    head, saved = load_drm_head(run)
    if saved.get("drm_fingerprint") != encoder_fingerprint(encoder):
        raise DrbfrError(
            f"{run}: the head was trained on another E_DR than this bundle's "
            f"(its --drm was {saved.get('drm')}); train it on this bundle"
        )
    entry = {
        "preset": saved.get("preset"),
        "network": to_dict(head.config),
        "weights": "ema" if saved_has_ema(run) else "trained",
        "targets": "estimate.py: log sigma, log r, delta / 20, (100 - q) / 40 in [0, 1]",
        "severity": "min(1, LPIPS-Alex(LQ, HQ) / 0.8) on the region",
    }
    return entry, head.state_dict()


def _bundle_drm_head(
    bundle: Path, encoder: torch.nn.Module
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The `drm_head` entry and float32 weights of a bundle whose E_DR is `encoder`."""
    manifest = read_manifest(bundle)
    if manifest.get("drm_head") is None:
        raise DrbfrError(f"{bundle}: this bundle carries no degradation head")
    if encoder_fingerprint(load_bundle_encoder(bundle)[0]) != encoder_fingerprint(encoder):
        raise DrbfrError(f"{bundle}: its head reads another E_DR than this bundle's")
    state = read_part(bundle, manifest, "drm_head")
    return dict(manifest["drm_head"]), {k: v.float() for k, v in state.items()}


def repack_bundle(
    bundle: Path,
    out: Path,
    *,
    fidelity_run: Path | None = None,
    drm_head_run: Path | None = None,
    low_freq_sigma: float | None = None,
    fidelity_ema: bool = True,
) -> Path:
    """A copy of `bundle` in the new folder `out` with the F of `fidelity_run` and/or the
    degradation head of `drm_head_run` added (or replacing its own), stored in the bundle's
    dtype; every other part byte for byte. `low_freq_sigma`: the new default sigma of the
    low-frequency transfer from F(y)."""
    manifest = read_manifest(bundle)
    if low_freq_sigma is not None:
        sampling = from_dict(SamplingConfig, manifest["sampling"], source=f"{bundle} sampling")
        manifest["sampling"] = to_dict(replace(sampling, low_freq_sigma=low_freq_sigma))
    new: dict[str, tuple[dict[str, Any], dict[str, torch.Tensor]]] = {}
    if fidelity_run is not None:
        new["fidelity"] = fidelity_part(fidelity_run, int(manifest["face_size"]), ema=fidelity_ema)
    if drm_head_run is not None:
        new["drm_head"] = drm_head_part(drm_head_run, load_bundle_encoder(bundle)[0])
    tensors = {
        file.removesuffix(".safetensors"): _stored_tensors(bundle, manifest, file)
        for file in manifest.get("files", {})
        if file.removesuffix(".safetensors") not in new
    }
    half = manifest.get("dtype") == "float16"
    sources = dict(manifest.get("sources", {}))
    manifest = {k: v for k, v in manifest.items() if k != "files"}
    for name, (entry, state) in new.items():
        tensors[name] = to_half(state, name) if half else state
        manifest[name] = entry
        sources[name] = source_name(fidelity_run if name == "fidelity" else drm_head_run)
    return write_bundle(out, {**manifest, "sources": sources}, tensors)


def _stored_tensors(bundle: Path, manifest: Mapping[str, Any], file: str) -> dict:
    """A bundle part's tensors as stored (dtype kept), after its sha256 check."""
    read_part(bundle, manifest, file.removesuffix(".safetensors"), parse=False)
    return safetensors.torch.load((bundle / file).read_bytes())


def _denoiser(ldm_run: Path, ldrm: torch.nn.Module, ema_only: bool) -> dict[str, dict]:
    """The denoiser's bundle parts: its weights and EMA (when kept), or the EMA alone."""
    ema = ckpt.load_modules(ldm_run, ema=True)[0]["ldrm"] if saved_has_ema(ldm_run) else None
    if ema_only:
        if ema is None:
            raise DrbfrError(f"{ldm_run}: no EMA weights to export (drop --ema-only)")
        return {"ldrm": ema}
    return {"ldrm": ldrm.state_dict()} | ({"ldrm.ema": ema} if ema is not None else {})


def to_half(state: Mapping[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
    """Floating-point tensors as float16 (others unchanged); a one-line error for a value that
    float16 cannot hold."""
    halved = {}
    for key, tensor in state.items():
        halved[key] = tensor.half() if tensor.is_floating_point() else tensor
        if tensor.is_floating_point() and not bool(torch.isfinite(halved[key]).all()):
            raise DrbfrError(f"{part}.{key}: values beyond float16's range; export without --half")
    return halved


def _vq_part(vae_run: Path, frozen_vae: dict[str, Any], tensors: dict[str, dict]) -> dict:
    """The bundle's `vae` entry (and its weights into `tensors`) from the VQ run the LDM was
    trained on, checked to be that run."""
    trained_vae = load_vae(vae_run)
    if trained_vae.latent is None:
        raise DrbfrError(f"{vae_run}: no latent scaling factor (finish the VAE run first)")
    _same_part("VAE", normalised(VAEConfig, frozen_vae["model"]), to_dict(trained_vae.config))
    _same_part(
        "VAE latent scaling", normalised(LatentStats, frozen_vae["latent"]),
        to_dict(trained_vae.latent),
    )  # fmt: skip
    tensors["vae"] = trained_vae.model.state_dict()
    return {
        "vae": {
            "preset": frozen_vae.get("preset"),
            "model": to_dict(trained_vae.config),
            "latent": to_dict(trained_vae.latent),
        }
    }


def source_name(path: Path | str) -> str:
    """How a manifest names the run or bundle a part came from: its folder name, with the
    checkpoint folder when one was named (`fid/checkpoints/step_0005200`); never the path on
    the machine that exported it (often a temporary folder). "" stays "" (no such part)."""
    if not str(path):
        return ""
    path = Path(path).resolve()
    keep = 1
    if path.name == ckpt.FINAL or _CHECKPOINT_DIR.match(path.name):
        keep = 3 if path.parent.name == ckpt.CHECKPOINTS else 2
    return "/".join(path.parts[-keep:])


def saved_has_ema(run_dir: Path) -> bool:
    return bool(ckpt.read_config(ckpt.weights_folder(Path(run_dir))).get("ema"))


def _same_part(name: str, trained_on: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    if dict(trained_on) != dict(given):
        keys = sorted(k for k in set(trained_on) | set(given) if trained_on.get(k) != given.get(k))
        raise DrbfrError(
            f"parts disagree: the LDM was trained on another {name} (differs in {', '.join(keys)})"
        )
