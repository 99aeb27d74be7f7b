"""What a restore run does (RestoreOptions) and the models it uses (RestoreTools)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from drbfr_cli.choices import NoFace, OutputFormat
from drbfr_cli.faces.detect import DetectOptions
from drbfr_cli.imaging import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from drbfr_cli.faces.detect import Detector
    from drbfr_cli.faces.paste import FaceParser
    from drbfr_cli.metrics.identity import FaceEmbedder
    from drbfr_cli.restore.background import Upsampler
    from drbfr_cli.restore.restorer import FaceRestorer


@dataclass(frozen=True)
class RestoreOptions:
    """What a restore run does with each image (the CLI's defaults)."""

    out_dir: Path
    aligned: bool = False
    """Inputs are faces already aligned to the FFHQ template: no detection, no background;
    each is resized to FACE_SIZE, restored and written at FACE_SIZE."""
    detect: DetectOptions = field(default_factory=DetectOptions)
    batch_size: int = 4
    """Faces per restorer call, gathered across images."""
    seed: int = 0
    upscale: float = 2.0
    color_fix: bool = False
    save_faces: bool = False
    ext: OutputFormat = OutputFormat.SAME
    suffix: str = ""
    """Appended to each output file's stem."""
    quality: int = 95
    """JPEG / WebP quality of written images."""
    overwrite: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    niqe: bool = False
    """Score every aligned input face and its restoration with NIQE."""
    identity: bool = False
    """Score every restored face's identity distance to its aligned input face (needs an
    embedder in RestoreTools)."""
    report_csv: Path | None = None
    queue_size: int = 4
    """Images waiting between two stages (bounds memory)."""
    max_memory: int | None = None
    """Bytes an image may need (memory.estimate_peak); a larger one fails alone. None: no
    budget."""
    no_face: NoFace = NoFace.KEEP
    """What a whole image in which no face is found becomes (choices.NoFace)."""
    rank: int | None = 0
    """The rank the records name (ranks.py; None with the Ray engine)."""
    skip_clean: float | None = None
    """Faces whose estimated severity is below this are pasted back untouched (None: none)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.queue_size < 1:
            raise ValueError("batch_size and queue_size must be at least 1")
        if self.skip_clean is not None and not 0.0 <= self.skip_clean <= 1.0:
            raise ValueError(f"skip_clean must lie in [0, 1], got {self.skip_clean}")
        if self.upscale <= 0:
            raise ValueError(f"upscale must be positive, got {self.upscale}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must lie in 1-100, got {self.quality}")


@dataclass(frozen=True)
class RestoreTools:
    """The models a run uses. Whole images need a detector and an upsampler; --aligned neither."""

    restorer: FaceRestorer
    detector: Detector | None = None
    upsampler: Upsampler | None = None
    parser: FaceParser | None = None
    """Soft face-region masks for paste-back; None: the feathered square."""
    embedder: FaceEmbedder | None = None
    """Face embeddings for --metrics ids (RestoreOptions.identity)."""
