"""Finding input images: command-line arguments, globs and stdin lists -> image files, each
with the relative path its outputs are written under."""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from drbfr_cli.errors import ImageReadError
from drbfr_cli.imaging.codec import IMAGE_EXTENSIONS, INPUT_EXTENSIONS

OUTPUT_MARKERS = ("report.records*.jsonl", "drbfr-gallery.txt")
"""A folder holding one of these (restore's record files, records.RECORDS_GLOB, or the gallery's
marker, gallery.page.MARKER_NAME) is drbfr output: never searched for inputs below a named one."""
GLOB_CHARACTERS = frozenset("*?[")
STDIN_ARGUMENT = "-"
"""An input argument that stands for paths read from stdin, one per line."""


@dataclass(frozen=True)
class ImageSource:
    """An input image file and the relative path its outputs are written under."""

    path: Path
    relative: Path


def is_image_path(path: Path) -> bool:
    """True when the extension is a supported input format (case-insensitive)."""
    return path.suffix.lower() in INPUT_EXTENSIONS


def writable_name(relative: Path) -> Path:
    """`relative` with .png for an input format drbfr does not write (GIF)."""
    return relative if relative.suffix.lower() in IMAGE_EXTENSIONS else relative.with_suffix(".png")


def expand_inputs(arguments: Sequence[str], stdin: Iterable[str] = ()) -> list[Path]:
    """Command-line inputs -> paths: `-` stands for the lines of `stdin` (each a path, taken
    literally); an argument that names no existing path but holds a glob pattern (`*`, `?`,
    `[`, `**` for any depth) expands to its matches, sorted. Other arguments are kept as given.
    """
    paths: list[Path] = []
    for argument in arguments:
        if argument == STDIN_ARGUMENT:
            paths.extend(Path(line.strip()) for line in stdin if line.strip())
        elif not os.path.lexists(argument) and GLOB_CHARACTERS & set(argument):
            matches = sorted(glob.glob(argument, recursive=True))
            if not matches:
                raise ImageReadError(argument, "no file or folder matches this pattern")
            paths.extend(Path(match) for match in matches)
        else:
            paths.append(Path(argument))
    return paths


def find_sources(
    arguments: Sequence[str],
    stdin: Iterable[str] = (),
    *,
    exclude: Iterable[Path] = (),
    on_skip: Callable[[Path], None] | None = None,
) -> list[ImageSource]:
    """The images that command-line `arguments` name (see expand_inputs and collect_images), in
    a fixed order. A path read from stdin that does not exist is kept, so that it fails as an
    image of its own while the others run."""
    named = [argument for argument in arguments if argument != STDIN_ARGUMENT]
    listed = expand_inputs([STDIN_ARGUMENT], stdin) if STDIN_ARGUMENT in arguments else []
    present = [path for path in listed if os.path.lexists(path)]
    found = collect_images(expand_inputs(named) + present, exclude=exclude, on_skip=on_skip)
    missing = [ImageSource(path, Path(path.name)) for path in listed if path not in present]
    return sorted(found + missing, key=lambda source: source.relative.as_posix())


def collect_images(
    inputs: Sequence[Path],
    *,
    exclude: Iterable[Path] = (),
    on_skip: Callable[[Path], None] | None = None,
) -> list[ImageSource]:
    """Image files under `inputs` (files or folders, searched recursively), in a fixed order.

    Outputs are named by `relative`: the path below the folder when one folder is given, below
    the folder's name when several are, the bare file name for files given directly. Anything
    under an `exclude` folder (e.g. an output folder inside the input) is skipped, unless that
    folder is itself one of the inputs; so is a folder below an input that holds drbfr output
    (OUTPUT_MARKERS), each reported to `on_skip`. Broken symbolic links (dangling, or loops),
    named or found in a folder, are kept: reading them fails with the reason, so they are
    reported.
    """
    roots = {real_path(p) for p in inputs}
    # An excluded folder that *is* an input is kept, so that callers can refuse the clash.
    excluded = [real_path(p) for p in exclude if real_path(p) not in roots]
    prefix_with_root = sum(1 for p in inputs if p.is_dir()) > 1
    found: dict[Path, ImageSource] = {}
    for root in inputs:
        for path in _walk(root, partial(_report_skip, on_skip, excluded)):
            resolved = real_path(path)
            if any(resolved.is_relative_to(x) for x in excluded):
                continue
            relative = _relative_name(path, root, prefix_with_root)
            if relative in found and real_path(found[relative].path) != resolved:
                raise ImageReadError(path, f"has the same output name as {found[relative].path}")
            found[relative] = ImageSource(path=path, relative=relative)
    return sorted(found.values(), key=lambda s: s.relative.as_posix())


def real_path(path: Path) -> Path:
    """The absolute path with symbolic links resolved as far as they go; unlike Path.resolve
    (before Python 3.13), no error for a link loop."""
    return Path(os.path.realpath(path))


def is_broken_link(path: Path) -> bool:
    """True for a symbolic link whose target is missing or that loops back on itself."""
    return path.is_symlink() and not path.exists()


def _walk(root: Path, on_skip: Callable[[Path], None]) -> list[Path]:
    """The image files and broken links under `root` (symbolic links to folders not followed),
    without the folders below it that hold drbfr output."""
    if not root.is_dir():
        if os.path.lexists(root):  # a file, a broken link, a named pipe: reading says what fails
            return [root]
        raise ImageReadError(root, "no such file or folder")
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        if folder != str(root) and is_output_folder(files):
            on_skip(Path(folder))
            dirs.clear()
            continue
        paths = (Path(folder, name) for name in files)
        found += [p for p in paths if (p.is_file() and is_image_path(p)) or is_broken_link(p)]
    return found


def _report_skip(
    on_skip: Callable[[Path], None] | None, excluded: Sequence[Path], folder: Path
) -> None:
    """Tell `on_skip` of a skipped output folder, unless it is excluded anyway (OUT)."""
    if on_skip is not None and not any(real_path(folder).is_relative_to(x) for x in excluded):
        on_skip(folder)


def is_output_folder(names: Iterable[str]) -> bool:
    """True when file `names` of a folder hold one of OUTPUT_MARKERS."""
    return any(fnmatch.fnmatchcase(n, marker) for n in names for marker in OUTPUT_MARKERS)


def _relative_name(path: Path, root: Path, prefix_with_root: bool) -> Path:
    if not root.is_dir():
        return Path(path.name)
    relative = path.relative_to(root)
    return Path(real_path(root).name) / relative if prefix_with_root else relative
