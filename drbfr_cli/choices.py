"""Closed choices the CLI offers, as str Enums in a module that imports nothing heavy, so that
building the command line (and `--help`, `--version`) never loads torch."""

from __future__ import annotations

from enum import StrEnum


class Metric(StrEnum):
    """A metric `drbfr eval` computes."""

    PSNR = "psnr"
    SSIM = "ssim"
    LPIPS = "lpips"
    NIQE = "niqe"
    FID = "fid"
    IDS = "ids"
    """Identity distance (dlib face ResNet) to the ground truth, or to the LQ input without one."""


class LpipsNet(StrEnum):
    """LPIPS backbone."""

    VGG = "vgg"
    ALEX = "alex"


class Ablation(StrEnum):
    """Table 3 of the paper: which DR losses are trained."""

    NONE = "none"
    """DR-ALL: reconstruction + contrastive + distribution."""
    CL = "cl"
    """DR-CL: contrastive (+ distribution) only; G_LQ is not trained."""
    REC = "rec"
    """DR-REC: reconstruction (+ distribution) only; no projection head."""


class Sampler(StrEnum):
    """Diffusion sampler (a diffusers scheduler)."""

    DDIM = "ddim"
    DPMSOLVER = "dpmsolver++"


class FirstStageKind(StrEnum):
    """The autoencoder whose latent space the LDRM diffuses in."""

    VQ = "vq"
    """A VQ autoencoder trained by `drbfr train vae` (the paper's first stage)."""
    TAEF2 = "taef2"
    """The pretrained TAEF2 (nets/taef2.py), fetched by the weights registry."""


class Precision(StrEnum):
    """Floating-point precision of the restoration networks."""

    AUTO = "auto"
    """fp16 on CUDA, fp32 elsewhere."""
    FP16 = "fp16"
    BF16 = "bf16"
    FP32 = "fp32"


class Background(StrEnum):
    """How `drbfr restore` upscales the background (restore/background.py builds each kind but
    `auto`, which restore/tools.py resolves)."""

    AUTO = "auto"
    """Real-ESRGAN when its weights are in a weights folder, else Lanczos (with a notice)."""
    REALESRGAN = "realesrgan"
    LANCZOS = "lanczos"
    NONE = "none"
    """No upsampler: a plain bilinear resize (at --upscale 1 the background is the input)."""


class NoFace(StrEnum):
    """What `drbfr restore` writes for a whole image in which no face is found."""

    KEEP = "keep"
    """The upscaled background, as for any image (status no_face)."""
    SKIP = "skip"
    """Nothing (status no_face)."""
    FAIL = "fail"
    """Nothing; the image counts as failed (a non-zero exit code)."""


class OutputFormat(StrEnum):
    """File format of restored images."""

    PNG = "png"
    JPG = "jpg"
    SAME = "same"
    """The input's own extension."""
