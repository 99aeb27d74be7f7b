"""The plan stage of `drbfr restore`: where every output goes, and each face's seed.

Pure functions of the inputs and the options; nothing is read or written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from drbfr_cli.batch import claim_outputs, clashing_input, item_seed
from drbfr_cli.choices import OutputFormat
from drbfr_cli.errors import DrbfrError
from drbfr_cli.folders import RESTORED_IMGS
from drbfr_cli.imaging import IMAGE_EXTENSIONS, ImageSource, fit_name
from drbfr_cli.restore.options import RestoreOptions


def output_path(relative: Path, options: RestoreOptions) -> Path:
    """OUT/restored_imgs/<relative>, with --ext and --suffix applied (unknown extensions: png;
    a name over 255 bytes cut, see fit_name)."""
    ext = relative.suffix if options.ext is OutputFormat.SAME else f".{options.ext.value}"
    if ext.lower() not in IMAGE_EXTENSIONS:
        ext = ".png"
    name = fit_name(relative.stem, f"{options.suffix}{ext}")
    return options.out_dir / RESTORED_IMGS / relative.with_name(name)


def face_path(output: Path, options: RestoreOptions, folder: str, index: int) -> Path:
    """Where face `index` of the image written to `output` goes in OUT/<folder>."""
    relative = output.relative_to(options.out_dir / RESTORED_IMGS)
    name = fit_name(relative.stem, f"_{index:02d}{relative.suffix}")
    return options.out_dir / folder / relative.with_name(name)


def plan_outputs(sources: Sequence[ImageSource], options: RestoreOptions) -> list[Path]:
    """The output path of every source; DrbfrError when two share one or one is an input."""
    owners = claim_outputs(
        ((output_path(source.relative, options), source.path) for source in sources),
        hint="use --ext same or rename one",
    )
    clash = clashing_input(owners, sources)
    if clash is not None:
        raise DrbfrError(f"{clash[0]}: output would overwrite an input; choose another -o")
    return list(owners)


def face_seed(run_seed: int, relative: str, index: int) -> int:
    """A 53-bit seed for face `index` of an image: the same in any batch, order or rerun (and
    exact in any JSON reader)."""
    return item_seed(run_seed, relative, index, bits=53)
