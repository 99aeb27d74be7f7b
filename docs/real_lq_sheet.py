"""Render the README's before/after sheet of real LQ faces from an aligned restore.

    drbfr restore ../shared/data/real_lq/aligned --aligned -o OUT --metrics niqe
    python docs/real_lq_sheet.py ../shared/data/real_lq/aligned OUT

Takes every 4th face by name (6 of the 23), and lays out input and restored face side by side
at 256 px, three pairs per row, each under its NIQE from OUT/report.json. Writes
docs/real_lq_before_after.jpg.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

DOCS = Path(__file__).resolve().parent
SIDE, LABEL, GAP, PER_ROW, EVERY = 256, 22, 12, 3, 4


def niqe_by_name(report: Path) -> dict[str, tuple[float, float]]:
    """Input and restored NIQE of each single-face aligned image, by input file name."""
    scores = {}
    for image in json.loads(report.read_text())["images"]:
        face = image["faces"][0]
        scores[Path(image["input"]).name] = (face["niqe_input"], face["niqe_restored"])
    return scores


def tile(image: Image.Image, caption: str) -> Image.Image:
    canvas = Image.new("RGB", (SIDE, SIDE + LABEL), "white")
    canvas.paste(image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS), (0, LABEL))
    ImageDraw.Draw(canvas).text((4, 5), caption, fill="black")
    return canvas


def main(inputs: Path, out: Path, model: str = "drbfr-small") -> None:
    scores = niqe_by_name(out / "report.json")
    names = sorted(scores)[::EVERY]
    pairs = []
    for name in names:
        before, after = scores[name]
        restored = next((out / "restored_imgs").glob(Path(name).stem + ".*"))
        pair = Image.new("RGB", (2 * SIDE, SIDE + LABEL), "white")
        pair.paste(tile(Image.open(inputs / name), f"input NIQE {before:.2f}"), (0, 0))
        pair.paste(tile(Image.open(restored), f"{model} NIQE {after:.2f}"), (SIDE, 0))
        pairs.append(pair)
    rows = -(-len(pairs) // PER_ROW)
    width = PER_ROW * 2 * SIDE + (PER_ROW - 1) * GAP
    sheet = Image.new("RGB", (width, rows * (SIDE + LABEL)), "white")
    for i, pair in enumerate(pairs):
        sheet.paste(pair, ((i % PER_ROW) * (2 * SIDE + GAP), (i // PER_ROW) * (SIDE + LABEL)))
    path = DOCS / "real_lq_before_after.jpg"
    sheet.save(path, quality=90)
    print(f"{path}: {len(pairs)} pairs, {sheet.size[0]}x{sheet.size[1]}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
