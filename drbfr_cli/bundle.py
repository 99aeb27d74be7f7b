"""Model bundles: one folder that `restore` and `eval` load, made by `drbfr export`.

    BUNDLE/
      bundle.json             format, version, the three parts' configs, the noise schedule,
                              the default sampling, and the sha256 of every weights file
      drm_encoder.safetensors E_DR of the DRM run
      vae.safetensors         the VQ autoencoder (its latent scaling factor is in bundle.json)
      ldrm.safetensors        the denoiser; ldrm.ema.safetensors its EMA (preferred) when kept

Loading checks the hashes and that the parts agree (face size, latent channels, DR tokens and
width), so a bundle assembled from mismatched runs fails with one line, not a shape error.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from drbfr_cli import __version__
from drbfr_cli.choices import Precision
from drbfr_cli.config import from_dict, to_dict
from drbfr_cli.diffusion.sampling import NoiseSchedule, SamplingConfig
from drbfr_cli.errors import DrbfrError
from drbfr_cli.nets.autoencoder import FirstStage, VQAutoencoder
from drbfr_cli.nets.drm import DREncoder, DRMConfig, build_drm
from drbfr_cli.nets.ldrm import LDRM, LDRMConfig
from drbfr_cli.train import checkpoint as ckpt
from drbfr_cli.train.drm import drm_config_from_preset, load_drm
from drbfr_cli.train.ldm import (
    FrozenParts,
    LDMConfig,
    check_geometry,
    ldm_config_from_preset,
    load_ldm,
    restore_faces,
)
from drbfr_cli.train.vae import LatentStats, VAEConfig, load_vae, vae_config_from_preset
from drbfr_cli.weights import home_dirs

FORMAT = "drbfr-bundle"
VERSION = 1
MANIFEST = "bundle.json"
PARTS = ("drm_encoder", "vae", "ldrm")
DEFAULT_NAME = "default"


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: frozen parts, denoiser, schedule and default sampling, on the CPU."""

    parts: FrozenParts
    ldrm: LDRM
    schedule: NoiseSchedule
    sampling: SamplingConfig
    face_size: int
    path: Path | None = None

    @property
    def use_dr(self) -> bool:
        return self.ldrm.config.use_dr

    @torch.no_grad()
    def restore(
        self, lq: torch.Tensor, seeds: Sequence[int], sampling: SamplingConfig | None = None
    ):
        """Restored faces in [-1, 1] of LQ faces in [-1, 1] (N x 3 x S x S, S = face_size)."""
        return restore_faces(
            self.ldrm,
            self.parts,
            lq,
            seeds=list(seeds),
            schedule=self.schedule,
            sampling=sampling or self.sampling,
            use_dr=self.use_dr,
        )

    def to(self, device: torch.device | str) -> Bundle:
        for module in (self.parts.encoder, self.parts.first_stage.model, self.ldrm):
            module.to(device)
        return self


# ---------------------------------------------------------------------------------------------
# Agreement of the parts


def check_agreement(
    vae_model: Mapping[str, Any], drm_model: Mapping[str, Any], network: LDRMConfig
):
    """One-line error unless the LDRM's widths are those of this VAE and DRM."""
    if network.latent_channels != vae_model["latent_channels"]:
        raise DrbfrError(
            f"parts disagree: the denoiser expects {network.latent_channels} latent channels, "
            f"the VAE makes {vae_model['latent_channels']}"
        )
    if network.use_dr and (network.dr_tokens, network.dr_width) != (
        drm_model["tokens"],
        drm_model["token_dim"],
    ):
        raise DrbfrError(
            f"parts disagree: the denoiser attends to {network.dr_tokens} x {network.dr_width} DR "
            f"tokens, the DRM makes {drm_model['tokens']} x {drm_model['token_dim']}"
        )


def _same_part(name: str, trained_on: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    if dict(trained_on) != dict(given):
        keys = sorted(k for k in set(trained_on) | set(given) if trained_on.get(k) != given.get(k))
        raise DrbfrError(
            f"parts disagree: the LDM was trained on another {name} (differs in {', '.join(keys)})"
        )


# ---------------------------------------------------------------------------------------------
# Export


def export_bundle(
    ldm_run: Path, out: Path, *, drm_run: Path | None = None, vae_run: Path | None = None
) -> Path:
    """Write a bundle of an LDM run and the DRM / VAE runs it was trained on (default: the runs
    recorded in the LDM run). Refuses an existing non-empty `out`; written atomically."""
    ldrm, saved = load_ldm(ldm_run, ema=False)
    drm_run = drm_run or Path(saved["drm"])
    vae_run = vae_run or Path(saved["vae"])
    drm_modules, drm_saved = load_drm(drm_run)
    trained_vae = load_vae(vae_run)
    if trained_vae.latent is None:
        raise DrbfrError(f"{vae_run}: no latent scaling factor (finish the VAE run first)")
    frozen = saved["frozen"]
    _same_part("VAE", frozen["vae"]["model"], to_dict(trained_vae.config))
    _same_part("VAE latent scaling", frozen["vae"]["latent"], to_dict(trained_vae.latent))
    _same_part("DRM", frozen["drm"]["model"], drm_saved["model"])
    check_agreement(frozen["vae"]["model"], drm_saved["model"], ldrm.config)
    tensors = {
        "drm_encoder": drm_modules["encoder"].state_dict(),
        "vae": trained_vae.model.state_dict(),
        "ldrm": ldrm.state_dict(),
    }
    if saved_has_ema(ldm_run):
        tensors["ldrm.ema"] = ckpt.load_modules(ldm_run, ema=True)[0]["ldrm"]
    model = from_dict(LDMConfig, saved["model"], source=f"{ldm_run} ldm config")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "drbfr": __version__,
        "face_size": trained_vae.config.image_size,
        "decode_quantized": model.decode_quantized,
        "drm": {"preset": drm_saved.get("preset"), "model": drm_saved["model"]},
        "vae": {
            "preset": frozen["vae"].get("preset"),
            "model": to_dict(trained_vae.config),
            "latent": to_dict(trained_vae.latent),
        },
        "ldrm": {"preset": saved.get("preset"), "network": to_dict(ldrm.config)},
        "schedule": to_dict(model.schedule()),
        "sampling": to_dict(model.sampling()),
        "sources": {"drm": str(drm_run), "vae": str(vae_run), "ldm": str(ldm_run)},
    }
    return _write_bundle(out, manifest, tensors)


def saved_has_ema(run_dir: Path) -> bool:
    return bool(ckpt.read_config(ckpt.weights_folder(Path(run_dir))).get("ema"))


def _write_bundle(out: Path, manifest: dict[str, Any], tensors: dict[str, dict]) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DrbfrError(f"{out}: already exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        hashes = {}
        for name, state in tensors.items():
            data = safetensors.torch.save({k: v.detach().contiguous() for k, v in state.items()})
            (staging / f"{name}.safetensors").write_bytes(data)
            hashes[f"{name}.safetensors"] = ckpt.sha256_bytes(data)
        manifest = {**manifest, "files": hashes}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------------------------------------
# Loading


def read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not path.is_dir():
        raise DrbfrError(f"{path}: no such bundle folder")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DrbfrError(f"{path}: not a drbfr bundle (no {MANIFEST})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DrbfrError(f"{file}: unreadable bundle manifest ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise DrbfrError(f"{file}: not a drbfr bundle manifest")
    if manifest.get("version") != VERSION:
        raise DrbfrError(
            f"{file}: bundle version {manifest.get('version')} (this drbfr reads {VERSION})"
        )
    return manifest


def _read_part(path: Path, manifest: Mapping[str, Any], name: str) -> dict[str, torch.Tensor]:
    file = f"{name}.safetensors"
    expected = manifest.get("files", {}).get(file)
    if expected is None:
        raise DrbfrError(f"{path}: the bundle lists no {file}")
    try:
        data = (path / file).read_bytes()
    except OSError:
        raise DrbfrError(f"{path}: bundle part {file} is missing") from None
    if ckpt.sha256_bytes(data) != expected:
        raise DrbfrError(f"{path / file}: corrupt bundle part (sha256 mismatch)")
    return safetensors.torch.load(data)


def _load_state(module: torch.nn.Module, state: dict, what: str, path: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise DrbfrError(
            f"{path}: {what} weights do not match the bundle's config ({first_line})"
        ) from None


def load_bundle(path: Path, *, ema: bool = True) -> Bundle:
    """A bundle folder, checked, on the CPU in eval mode (the EMA denoiser when present)."""
    path = Path(path)
    manifest = read_manifest(path)
    try:
        drm_config = from_dict(DRMConfig, manifest["drm"]["model"], source=f"{path} drm")
        vae_config = from_dict(VAEConfig, manifest["vae"]["model"], source=f"{path} vae")
        latent = from_dict(LatentStats, manifest["vae"]["latent"], source=f"{path} latent")
        network = from_dict(LDRMConfig, manifest["ldrm"]["network"], source=f"{path} ldrm")
        schedule = from_dict(NoiseSchedule, manifest["schedule"], source=f"{path} schedule")
        sampling = from_dict(SamplingConfig, manifest["sampling"], source=f"{path} sampling")
        face_size = int(manifest["face_size"])
    except (KeyError, TypeError) as exc:
        raise DrbfrError(f"{path}: incomplete bundle manifest (missing {exc})") from None
    check_agreement(manifest["vae"]["model"], manifest["drm"]["model"], network)
    if face_size != vae_config.image_size:
        raise DrbfrError(f"{path}: face_size {face_size} is not the VAE's {vae_config.image_size}")
    encoder = build_drm(drm_config)["encoder"]
    _load_state(encoder, _read_part(path, manifest, "drm_encoder"), "drm_encoder", path)
    vae = VQAutoencoder(vae_config.network())
    _load_state(vae, _read_part(path, manifest, "vae"), "vae", path)
    ldrm = LDRM(network, schedule)
    has_ema = "ldrm.ema.safetensors" in manifest.get("files", {})
    _load_state(ldrm, _read_part(path, manifest, "ldrm.ema" if ema and has_ema else "ldrm"),
                "ldrm", path)  # fmt: skip
    for module in (encoder, vae, ldrm):
        module.requires_grad_(False).eval()
    parts = FrozenParts(
        first_stage=FirstStage(
            vae, latent.scaling_factor, bool(manifest.get("decode_quantized", True))
        ),
        encoder=encoder,
        vae_config={"model": manifest["vae"]["model"], "latent": manifest["vae"]["latent"]},
        drm_config={"model": manifest["drm"]["model"], "preset": manifest["drm"].get("preset")},
    )
    return Bundle(parts, ldrm, schedule, sampling, face_size, path)


def random_bundle(
    preset: str, *, seed: int = 0, use_dr: bool = True, device: torch.device | str = "cpu"
) -> Bundle:
    """A bundle of the networks of `preset` (models/presets, the same name for every part) with
    random weights, in eval mode: no training needed.

    For benchmarks, whose speed and memory do not depend on the weights. The VAE's codebook
    counts as initialised and its latent scaling factor is 1; the sampling defaults are the
    preset's. device="meta" builds shapes without storage (for FLOP counts).
    """
    drm_config, _ = drm_config_from_preset(preset)
    vae_config, _ = vae_config_from_preset(preset)
    ldm_config, _ = ldm_config_from_preset(preset)
    network = ldm_config.network(
        latent_channels=vae_config.latent_channels,
        dr_tokens=drm_config.tokens,
        dr_width=drm_config.token_dim,
        use_dr=use_dr,
    )
    check_geometry(ldm_config, to_dict(vae_config), network)
    bundle = _random_bundle(
        drm_config, vae_config, network, ldm_config.schedule(), seed=seed, device=device,
        preset=preset, quantize=ldm_config.decode_quantized,
    )  # fmt: skip
    return replace(bundle, sampling=ldm_config.sampling())


def shape_copy(bundle: Bundle) -> Bundle:
    """A bundle of the same networks on the meta device (shapes only, no weights or memory)."""
    drm = from_dict(DRMConfig, bundle.parts.drm_config["model"], source="bundle drm")
    vae = from_dict(VAEConfig, bundle.parts.vae_config["model"], source="bundle vae")
    copy = _random_bundle(
        drm, vae, bundle.ldrm.config, bundle.schedule, seed=0, device="meta",
        quantize=bundle.parts.first_stage.quantize,
    )  # fmt: skip
    return replace(copy, sampling=bundle.sampling)


def _random_bundle(
    drm_config: DRMConfig,
    vae_config: VAEConfig,
    network: LDRMConfig,
    schedule: NoiseSchedule,
    *,
    seed: int,
    device: torch.device | str,
    preset: str | None = None,
    quantize: bool = True,
) -> Bundle:
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        encoder = DREncoder(
            channels=drm_config.encoder_channels,
            tokens=drm_config.tokens,
            token_dim=drm_config.token_dim,
        )
        vae = VQAutoencoder(vae_config.network())
        ldrm = LDRM(network, schedule)
    vae.quantizer.initialised.fill_(True)
    for module in (encoder, vae, ldrm):
        module.requires_grad_(False).eval()
    latent = LatentStats(scaling_factor=1.0, mean=0.0, std=1.0, samples=0)
    parts = FrozenParts(
        first_stage=FirstStage(vae, latent.scaling_factor, quantize),
        encoder=encoder,
        vae_config={"model": to_dict(vae_config), "latent": to_dict(latent), "preset": preset},
        drm_config={"model": to_dict(drm_config), "preset": preset},
    )
    return Bundle(parts, ldrm, schedule, SamplingConfig(), vae_config.image_size)


def bundle_search_dirs(weights_dir: Path | None = None) -> list[Path]:
    """Folders searched for a bundle by name: --weights-dir, $DRBFR_HOME/bundles, then
    ~/.cache/drbfr/bundles."""
    return home_dirs("bundles", weights_dir)


def resolve_bundle(model: str | None, weights_dir: Path | None = None) -> Path:
    """A bundle folder from a path or a name (None: the default bundle), or a one-line error
    saying how to get one."""
    if model is not None and (Path(model).exists() or os.sep in model or model.startswith(".")):
        return Path(model)
    name = model or DEFAULT_NAME
    dirs = bundle_search_dirs(weights_dir)
    for folder in dirs:
        if (folder / name / MANIFEST).is_file():
            return folder / name
    raise DrbfrError(
        f"no model bundle {name!r} (looked in {', '.join(str(d) for d in dirs)}): make one with "
        f"`make demo` (a tiny demo bundle) or `drbfr export`, then pass --model BUNDLE_DIR"
    )


# ---------------------------------------------------------------------------------------------
# The FaceRestorer that `drbfr restore` uses


def pick_device(device: str) -> torch.device:
    """auto: CUDA if present, else MPS, else CPU; otherwise the named device, checked."""
    from drbfr_cli.restore_setup import resolve_device

    return torch.device(resolve_device(device))


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: plain fp32). auto: fp16 on CUDA, fp32 elsewhere."""
    if precision is Precision.AUTO:
        return torch.float16 if device.type == "cuda" else None
    if precision is Precision.FP16 and device.type == "cpu":
        raise DrbfrError("fp16 needs a GPU; use --precision bf16 or fp32 on the CPU")
    return {Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}.get(precision)


class BundleRestorer:
    """FaceRestorer over a bundle on a device, with autocast at the chosen precision."""

    def __init__(
        self,
        bundle: Bundle,
        device: torch.device,
        dtype: torch.dtype | None,
        sampling: SamplingConfig,
    ) -> None:
        self.bundle, self.device, self.dtype, self.sampling = (
            bundle.to(device),
            device,
            dtype,
            sampling,
        )
        self.face_size = bundle.face_size

    @torch.no_grad()
    def restore(self, faces: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        if len(seeds) != faces.shape[0]:
            raise ValueError(f"{faces.shape[0]} faces but {len(seeds)} seeds")
        lq = faces.to(self.device, torch.float32) * 2.0 - 1.0
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            restored = self.bundle.restore(lq, seeds, self.sampling)
        return ((restored.float() + 1.0) / 2.0).clamp(0.0, 1.0).cpu()


def load_restorer(
    model: str | None,
    *,
    device: str = "auto",
    precision: Precision = Precision.AUTO,
    sampling: Mapping[str, Any] | SamplingConfig | None = None,
    weights_dir: Path | None = None,
) -> BundleRestorer:
    """The restorer of a bundle (path or name); `sampling` overrides the bundle's defaults
    (a SamplingConfig, or a mapping of the fields to change; None values are ignored)."""
    chosen = pick_device(device)
    dtype = autocast_dtype(Precision(precision), chosen)
    bundle = load_bundle(resolve_bundle(model, weights_dir))
    if isinstance(sampling, SamplingConfig):
        config = sampling
    else:
        changes = {k: v for k, v in (sampling or {}).items() if v is not None}
        try:
            config = replace(bundle.sampling, **changes)
        except (TypeError, ValueError) as exc:
            raise DrbfrError(f"invalid sampling options ({exc})") from None
    return BundleRestorer(bundle, chosen, dtype, config)
