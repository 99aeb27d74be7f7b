"""The names of the folders drbfr writes inside an output folder OUT.

`restore/` writes the first four and never reads any of them back as inputs; `gallery/` keeps
its thumbnails in THUMBS, beside its pages. Both take the names from here, so neither needs
the other to know them.
"""

from __future__ import annotations

RESTORED_IMGS = "restored_imgs"
CROPPED_FACES = "cropped_faces"
RESTORED_FACES = "restored_faces"
CMP = "cmp"
"""Crop and restoration side by side (--save-faces)."""
THUMBS = "gallery"
"""Thumbnails and previews, beside the pages (never inside restored_imgs/)."""
OUTPUT_FOLDERS = (RESTORED_IMGS, CROPPED_FACES, RESTORED_FACES, CMP, THUMBS)
"""Subfolders of OUT that drbfr writes (never read back as inputs)."""
