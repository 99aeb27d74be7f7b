"""Evaluation presets for the test sets of the DR-BFR paper, and where they sit under a root.

Layout under `--data-root DIR`:

    DIR/celeba-test/lq/*.png        synthetic LQ faces (3,000; `drbfr degrade` makes such sets)
    DIR/celeba-test/hq/*.png        their ground truth, same file names
    DIR/lfw-test/*.png              real-world LQ faces, one folder per set
    DIR/celebchild-test/*.png
    DIR/webphoto-test/*.png
    DIR/wider-test/*.png
    DIR/ffhq_fid_stats.npz          FID reference for the real-world sets
                                    (`drbfr eval fid-stats FFHQ_512_DIR -o DIR/ffhq_fid_stats.npz`)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from drbfr_cli.choices import Metric
from drbfr_cli.errors import DrbfrError

FFHQ_STATS = "ffhq_fid_stats.npz"


class Dataset(StrEnum):
    """A test set of the paper."""

    CELEBA_TEST = "celeba-test"
    LFW_TEST = "lfw-test"
    CELEBCHILD_TEST = "celebchild-test"
    WEBPHOTO_TEST = "webphoto-test"
    WIDER_TEST = "wider-test"


@dataclass(frozen=True)
class DatasetPaths:
    """Folders and files of one preset, resolved under a data root."""

    lq: Path
    gt: Path | None
    fid_stats: Path | None
    metrics: tuple[Metric, ...]


_FULL = (Metric.PSNR, Metric.SSIM, Metric.LPIPS, Metric.FID, Metric.NIQE)
_REAL = (Metric.FID, Metric.NIQE)


def resolve(dataset: Dataset, root: Path) -> DatasetPaths:
    """The preset's paths under `root` (a DrbfrError naming the first missing folder)."""
    if dataset is Dataset.CELEBA_TEST:
        base = root / dataset.value
        paths = DatasetPaths(base / "lq", base / "hq", None, _FULL)
    else:
        stats = root / FFHQ_STATS
        paths = DatasetPaths(root / dataset.value, None, stats if stats.is_file() else None, _REAL)
    for folder in (paths.lq, paths.gt):
        if folder is not None and not folder.is_dir():
            raise DrbfrError(
                f"{folder}: not found (the --dataset layout is in the README, Evaluate)"
            )
    return paths
