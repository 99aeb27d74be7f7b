"""Model bundles: one folder that `restore` and `eval` load, made by `drbfr export`.

    BUNDLE/
      bundle.json             format, version, the three parts' configs, the noise schedule,
                              the default sampling, and the sha256 of every weights file
      drm_encoder.safetensors E_DR of the DRM run
      vae.safetensors         the VQ autoencoder (its latent scaling factor is in bundle.json),
                              or nothing: bundle.json's `first_stage` names the pretrained TAEF2
                              by registry name and sha256 (fetched like any other weight) with
                              its per-channel latent statistics
      ldrm.safetensors        the denoiser; ldrm.ema.safetensors its EMA (preferred) when kept.
                              A shipping export (`--ema-only`) stores only the EMA, as
                              ldrm.safetensors, and says so in bundle.json (`denoiser`: "ema")
      fidelity.safetensors    optional: the fidelity network F (nets/fidelity.py), whose output
                              replaces the input as the low-frequency reference; its shape is
                              bundle.json's `fidelity.network`
      drm_head.safetensors    optional: the degradation head (nets/drm_head.py) on E_DR's tokens,
                              the per-face estimate of `drbfr inspect` and the restore report;
                              its shape is bundle.json's `drm_head.network`

Weights are float32, or float16 when bundle.json says `"dtype": "float16"` (`drbfr export
--half`); loading casts them to float32, so a half bundle computes in float32 on any device.
Loading checks the hashes and that the parts agree (face size, latent channels, DR tokens and
width), so a bundle assembled from mismatched runs fails with one line, not a shape error.
This module is the bundle format and its loading only: it imports no training code (bundles
are written from runs by train/export.py; random bundles for benchmarks are in benchmark/, the
FaceRestorer over a bundle in restore/restorer.py).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from drbfr_cli import weights
from drbfr_cli.choices import FirstStageKind
from drbfr_cli.config import from_dict, to_dict
from drbfr_cli.diffusion.pipeline import FrozenParts, restore_faces
from drbfr_cli.diffusion.sampling import SamplingConfig
from drbfr_cli.diffusion.schedule import NoiseSchedule
from drbfr_cli.errors import DrbfrError, first_line, load_strict
from drbfr_cli.estimate import DegradationEstimate, estimate_faces
from drbfr_cli.imaging import make_temporary_folder
from drbfr_cli.nets.autoencoder import FirstStage, LatentStats, VQAutoencoder
from drbfr_cli.nets.drm import DRMConfig, build_drm
from drbfr_cli.nets.drm_head import DegradationHead, DRHeadConfig
from drbfr_cli.nets.fidelity import FidelityConfig, FidelityNet
from drbfr_cli.nets.ldrm import LDRM, LDRMConfig
from drbfr_cli.nets.taef2 import ChannelLatentStats, TAEF2FirstStage, load_taef2
from drbfr_cli.presets import VAEConfig, first_stage_geometry
from drbfr_cli.weights import home_dirs, sha256_bytes
from drbfr_cli.zoo import models_dir

FORMAT = "drbfr-bundle"
VERSION = 1
MANIFEST = "bundle.json"
PARTS = ("drm_encoder", "vae", "ldrm", "fidelity", "drm_head")
DEFAULT_NAME = "drbfr-small"
"""The bundle restore, eval and doctor use when no model is named (shipped in models/bundles)."""
LEGACY_DEFAULT_NAME = "default"
"""A user's own default bundle in the cache folders: still preferred to the shipped one."""


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: frozen parts, denoiser, schedule and default sampling, on the CPU."""

    parts: FrozenParts
    ldrm: LDRM
    schedule: NoiseSchedule
    sampling: SamplingConfig
    face_size: int
    path: Path | None = None
    train_t_max: float = 1.0
    """The largest start_t the denoiser was trained for (presets.LDMConfig.train_t_max)."""
    fidelity: FidelityNet | None = None
    """F, the low-frequency reference of the restorations (None: the LQ input is)."""
    drm_head: DegradationHead | None = None
    """The degradation head on E_DR's tokens (None: the bundle estimates nothing)."""

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
            fidelity=self.fidelity,
        )

    def check_sampling(self, sampling: SamplingConfig) -> None:
        """One-line error for sampling that starts at noise levels the denoiser never saw."""
        if sampling.start_t > self.train_t_max:
            where = self.path or "this bundle"
            raise DrbfrError(
                f"{where} was trained for start_t <= {self.train_t_max}; "
                f"start_t {sampling.start_t} is beyond it"
            )

    def to(self, device: torch.device | str) -> Bundle:
        for module in (self.parts.encoder, self.parts.first_stage.model, self.ldrm):
            module.to(device)
        for optional in (self.fidelity, self.drm_head):
            if optional is not None:
                optional.to(device)
        return self

    def estimate(self, lq: torch.Tensor) -> list[DegradationEstimate] | None:
        """Each LQ face's degradation estimate (faces in [-1, 1]), or None without a head."""
        if self.drm_head is None:
            return None
        return estimate_faces(self.parts.encoder, self.drm_head, lq)


@dataclass(frozen=True)
class Estimator:
    """E_DR and the degradation head of a bundle: the estimate alone, without the denoiser."""

    encoder: torch.nn.Module
    head: DegradationHead

    def to(self, device: torch.device | str) -> Estimator:
        self.encoder.to(device)
        self.head.to(device)
        return self

    def estimate(self, lq: torch.Tensor) -> list[DegradationEstimate]:
        """Each LQ face's estimate (N x 3 x S x S in [-1, 1])."""
        return estimate_faces(self.encoder, self.head, lq)


# ---------------------------------------------------------------------------------------------
# Agreement of the parts, and writing (train/export.py gathers the parts from runs)


def check_agreement(latent_channels: int, drm: DRMConfig, network: LDRMConfig) -> None:
    """One-line error unless the LDRM's widths are those of the first stage and the DRM."""
    if network.latent_channels != latent_channels:
        raise DrbfrError(
            f"parts disagree: the denoiser expects {network.latent_channels} latent channels, "
            f"the first stage makes {latent_channels}"
        )
    if network.use_dr and (network.dr_tokens, network.dr_width) != (drm.tokens, drm.token_dim):
        raise DrbfrError(
            f"parts disagree: the denoiser attends to {network.dr_tokens} x {network.dr_width} DR "
            f"tokens, the DRM makes {drm.tokens} x {drm.token_dim}"
        )


def write_bundle(out: Path, manifest: dict[str, Any], tensors: dict[str, dict]) -> Path:
    """Write the parts' tensors as safetensors and bundle.json (with their sha256) into the new
    folder `out`, atomically."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DrbfrError(f"{out}: already exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temporary_folder(out)
    try:
        hashes = {}
        for name, state in tensors.items():
            data = safetensors.torch.save({k: v.detach().contiguous() for k, v in state.items()})
            (staging / f"{name}.safetensors").write_bytes(data)
            hashes[f"{name}.safetensors"] = sha256_bytes(data)
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


def read_part(
    path: Path, manifest: Mapping[str, Any], name: str, *, parse: bool = True
) -> dict[str, torch.Tensor]:
    """The tensors of bundle part `name`, after its sha256 check ({} when not `parse`)."""
    file = f"{name}.safetensors"
    expected = manifest.get("files", {}).get(file)
    if expected is None:
        raise DrbfrError(f"{path}: the bundle lists no {file}")
    try:
        data = (path / file).read_bytes()
    except OSError:
        raise DrbfrError(f"{path}: bundle part {file} is missing") from None
    if sha256_bytes(data) != expected:
        raise DrbfrError(f"{path / file}: corrupt bundle part (sha256 mismatch)")
    if not parse:
        return {}
    return {key: _as_float32(value) for key, value in _parse_part(data, path / file).items()}


def _parse_part(data: bytes, file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file's bytes; a broken header or body (even one whose
    sha256 its manifest lists) is a one-line DrbfrError."""
    try:
        return safetensors.torch.load(data)
    except (safetensors.SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise DrbfrError(f"{file}: not a readable safetensors file ({first_line(exc)})") from None


def _as_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Floating-point tensors as float32 (half bundles compute in float32); others unchanged."""
    return tensor.float() if tensor.is_floating_point() else tensor


def denoiser_part(manifest: dict[str, Any], *, ema: bool = True) -> str:
    """The part holding the denoiser to load: its EMA when kept and wanted, else the weights."""
    has_ema = "ldrm.ema.safetensors" in manifest.get("files", {})
    return "ldrm.ema" if ema and has_ema else "ldrm"


def _load_part(
    module: torch.nn.Module, path: Path, manifest: Mapping[str, Any], part: str, what: str = ""
) -> None:
    """Load the bundle's checked `part` into `module` strictly (`what`: its name in errors)."""
    state = read_part(path, manifest, part)
    message = f"{what or part} weights do not match the bundle's config"
    load_strict(module, state, what=message, where=path)


def load_bundle_fidelity(path: Path) -> FidelityNet:
    """F of a bundle, checked, frozen on the CPU: a bundle stands in for the fidelity run it was
    exported from (`train ldm --fidelity`); one-line error when it carries none."""
    network = _load_fidelity(path, read_manifest(path))
    if network is None:
        raise DrbfrError(f"{path}: this bundle carries no fidelity network")
    return network


def load_bundle_estimator(path: Path) -> Estimator:
    """E_DR and the degradation head of a bundle, checked, frozen on the CPU (no denoiser or
    first stage is read); a one-line error when the bundle carries no head."""
    encoder, drm = load_bundle_encoder(path)
    manifest = read_manifest(path)
    head = _load_drm_head(path, manifest, from_dict(DRMConfig, drm["model"]))
    if head is None:
        raise DrbfrError(
            f"{path}: this bundle carries no degradation head (add one with `drbfr export "
            "--from-bundle BUNDLE --drm-head RUN`)"
        )
    return Estimator(encoder, head)


def load_bundle_encoder(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """E_DR of a bundle, checked, frozen on the CPU, with its DRM config record ({"model",
    "preset"}): a bundle stands in for the DRM run it was exported from (`train ldm --drm`)."""
    manifest = read_manifest(path)
    try:
        drm_config = from_dict(DRMConfig, manifest["drm"]["model"], source=f"{path} drm")
    except (KeyError, TypeError) as exc:
        raise DrbfrError(f"{path}: incomplete bundle manifest (missing {exc})") from None
    encoder = build_drm(drm_config)["encoder"]
    _load_part(encoder, path, manifest, "drm_encoder")
    encoder.requires_grad_(False).eval()
    return encoder, {"model": to_dict(drm_config), "preset": manifest["drm"].get("preset")}


def load_bundle(path: Path, *, ema: bool = True, weights_dir: Path | None = None) -> Bundle:
    """A bundle folder, checked, on the CPU in eval mode (the EMA denoiser when present).

    Every file the manifest lists is hashed, used or not. A TAEF2 first stage is resolved
    through the weights registry (`weights_dir` first; downloaded unless DRBFR_OFFLINE is set).
    """
    path = Path(path)
    manifest = read_manifest(path)
    try:
        drm_config = from_dict(DRMConfig, manifest["drm"]["model"], source=f"{path} drm")
        network = from_dict(LDRMConfig, manifest["ldrm"]["network"], source=f"{path} ldrm")
        schedule = from_dict(NoiseSchedule, manifest["schedule"], source=f"{path} schedule")
        sampling = from_dict(SamplingConfig, manifest["sampling"], source=f"{path} sampling")
        face_size = int(manifest["face_size"])
        train_t_max = float(manifest.get("train_t_max", 1.0))
        first_stage, record = _load_first_stage(path, manifest, weights_dir)
    except (KeyError, TypeError) as exc:
        raise DrbfrError(f"{path}: incomplete bundle manifest (missing {exc})") from None
    geometry = first_stage_geometry(record)
    check_agreement(geometry.latent_channels, drm_config, network)
    if face_size != geometry.face_size:
        raise DrbfrError(
            f"{path}: face_size {face_size} is not the first stage's {geometry.face_size}"
        )
    verify_files(path, manifest)
    encoder = build_drm(drm_config)["encoder"]
    _load_part(encoder, path, manifest, "drm_encoder")
    ldrm = LDRM(network)
    _load_part(ldrm, path, manifest, denoiser_part(manifest, ema=ema), "ldrm")
    fidelity = _load_fidelity(path, manifest)
    drm_head = _load_drm_head(path, manifest, drm_config)
    for module in (encoder, first_stage.model, ldrm):
        module.requires_grad_(False).eval()
    parts = FrozenParts(
        first_stage=first_stage,
        encoder=encoder,
        vae_config=record,
        drm_config={"model": to_dict(drm_config), "preset": manifest["drm"].get("preset")},
    )
    bundle = Bundle(
        parts, ldrm, schedule, sampling, face_size, path, train_t_max, fidelity, drm_head
    )
    bundle.check_sampling(sampling)
    return bundle


def _load_fidelity(path: Path, manifest: Mapping[str, Any]) -> FidelityNet | None:
    """The bundle's fidelity network F, frozen, or None when the bundle has none."""
    if "fidelity" not in manifest:
        return None
    try:
        config = from_dict(
            FidelityConfig, manifest["fidelity"]["network"], source=f"{path} fidelity"
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DrbfrError(f"{path}: bad fidelity entry in the bundle manifest ({exc})") from None
    network = FidelityNet(config)
    _load_part(network, path, manifest, "fidelity")
    return network.requires_grad_(False).eval()


def _load_drm_head(
    path: Path, manifest: Mapping[str, Any], drm: DRMConfig
) -> DegradationHead | None:
    """The bundle's degradation head, frozen, or None when the bundle has none."""
    if "drm_head" not in manifest:
        return None
    try:
        config = from_dict(DRHeadConfig, manifest["drm_head"]["network"], source=f"{path} head")
    except (KeyError, TypeError, ValueError) as exc:
        raise DrbfrError(f"{path}: bad drm_head entry in the bundle manifest ({exc})") from None
    if (config.tokens, config.token_dim) != (drm.tokens, drm.token_dim):
        raise DrbfrError(
            f"parts disagree: the degradation head reads {config.tokens} x {config.token_dim} "
            f"DR tokens, the DRM makes {drm.tokens} x {drm.token_dim}"
        )
    head = DegradationHead(config)
    _load_part(head, path, manifest, "drm_head")
    return head.requires_grad_(False).eval()


def _load_first_stage(
    path: Path, manifest: Mapping[str, Any], weights_dir: Path | None
) -> tuple[FirstStage | TAEF2FirstStage, dict[str, Any]]:
    """The bundle's first stage and its record: TAEF2 by registry name and sha256, or the VQ
    autoencoder stored in the bundle (`vae.safetensors`)."""
    record = manifest.get("first_stage")
    if record is not None and record.get("kind") == FirstStageKind.TAEF2:
        for half in ("encoder", "decoder"):
            name, sha256 = record[half]["name"], record[half]["sha256"]
            if weights.spec(name).sha256 != sha256:
                raise DrbfrError(
                    f"{path}: made with another {name} file (sha256 {sha256[:12]}...) than "
                    "this drbfr's registry names"
                )
            weights.ensure(name, weights_dir)
        stats = from_dict(ChannelLatentStats, record["latent"], source=f"{path} latent")
        return load_taef2(weights_dir, stats), dict(record)
    vae_config = from_dict(VAEConfig, manifest["vae"]["model"], source=f"{path} vae")
    latent = from_dict(LatentStats, manifest["vae"]["latent"], source=f"{path} latent")
    vae = VQAutoencoder(vae_config.network)
    _load_part(vae, path, manifest, "vae")
    quantize = bool(manifest.get("decode_quantized", True))
    record = {"model": to_dict(vae_config), "latent": to_dict(latent)}
    return FirstStage(vae, latent.scaling_factor, quantize), record


def verify_files(path: Path, manifest: Mapping[str, Any]) -> None:
    """Every file the manifest lists exists and has its sha256 (one-line error otherwise)."""
    for file in manifest.get("files", {}):
        read_part(path, manifest, file.removesuffix(".safetensors"), parse=False)


def shipped_bundles_dir() -> Path:
    """models/bundles: the bundles shipped inside the package (drbfr_cli/_models in a wheel)."""
    return models_dir() / "bundles"


def bundle_search_dirs(weights_dir: Path | None = None) -> list[Path]:
    """Folders searched for a bundle by name: --weights-dir, $DRBFR_HOME/bundles,
    ~/.cache/drbfr/bundles, then the shipped models/bundles."""
    return [*home_dirs("bundles", weights_dir), shipped_bundles_dir()]


def resolve_bundle(model: str | None, weights_dir: Path | None = None) -> Path:
    """A bundle folder from a path or a name, or a one-line error saying how to get one.

    No name (None) means a user's own `default` bundle in the cache folders (--weights-dir,
    $DRBFR_HOME/bundles, ~/.cache/drbfr/bundles) when there is one, else `drbfr-small`
    (DEFAULT_NAME) from the first folder of bundle_search_dirs that has it."""
    if model is not None and (Path(model).exists() or os.sep in model or model.startswith(".")):
        return Path(model)
    dirs = bundle_search_dirs(weights_dir)
    if model is None:
        legacy = _find_named(LEGACY_DEFAULT_NAME, home_dirs("bundles", weights_dir))
        if legacy is not None:
            return legacy
    name = model or DEFAULT_NAME
    found = _find_named(name, dirs)
    if found is not None:
        return found
    raise DrbfrError(
        f"no model bundle {name!r} (looked in {', '.join(str(d) for d in dirs)}): reinstall "
        f"drbfr to get the shipped {DEFAULT_NAME!r}, or make one with `drbfr export` and pass "
        "--model BUNDLE_DIR"
    )


def _find_named(name: str, dirs: Sequence[Path]) -> Path | None:
    """The first dirs/name that holds a bundle manifest, or None."""
    return next((d / name for d in dirs if (d / name / MANIFEST).is_file()), None)
