"""Render a comparison sheet: one row per face, one column per folder of faces.

    python docs/compare_sheet.py OUT.jpg LABEL=DIR [LABEL=DIR ...] [--faces N] [--every K]
                                 [--zoom] [--names a,b,...]

Faces are matched by file stem across the folders (the first folder names them): every K-th of
its faces by name, at most N. Each tile is the 512 px face at 256 px, or with --zoom its eye
region (x 96-416, y 160-320 of the aligned face, FFHQ template) at its own resolution.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

SIDE, LABEL, GAP = 256, 20, 6
EYES = (96, 160, 416, 320)
"""Eye band of a 512 px FFHQ-aligned face (left, top, right, bottom)."""
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def faces_by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in SUFFIXES}


def tile(path: Path | None, zoom: bool) -> Image.Image:
    if path is None:
        return Image.new("RGB", (EYES[2] - EYES[0], EYES[3] - EYES[1]) if zoom else (SIDE, SIDE))
    image = Image.open(path).convert("RGB").resize((512, 512), Image.Resampling.LANCZOS)
    return image.crop(EYES) if zoom else image.resize((SIDE, SIDE), Image.Resampling.LANCZOS)


def sheet(columns: list[tuple[str, Path]], stems: list[str], zoom: bool) -> Image.Image:
    tables = [faces_by_stem(folder) for _, folder in columns]
    width, height = tile(None, zoom).size
    canvas = Image.new(
        "RGB",
        (len(columns) * (width + GAP) - GAP, LABEL + len(stems) * (height + GAP)),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    for column, (label, _) in enumerate(columns):
        draw.text((column * (width + GAP) + 4, 4), label, fill="black")
    for row, stem in enumerate(stems):
        for column, table in enumerate(tables):
            position = (column * (width + GAP), LABEL + row * (height + GAP))
            canvas.paste(tile(table.get(stem), zoom), position)
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("columns", nargs="+", help="LABEL=DIR")
    parser.add_argument("--faces", type=int, default=6)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--names", default="", help="comma list of stems (overrides --every)")
    parser.add_argument("--zoom", action="store_true")
    args = parser.parse_args()
    columns = [(c.split("=", 1)[0], Path(c.split("=", 1)[1])) for c in args.columns]
    stems = args.names.split(",") if args.names else list(faces_by_stem(columns[0][1]))
    stems = stems[:: 1 if args.names else args.every][: args.faces]
    sheet(columns, stems, args.zoom).save(args.out, quality=90)
    print(args.out)


if __name__ == "__main__":
    main()
