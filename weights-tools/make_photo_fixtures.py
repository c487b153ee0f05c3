#!/usr/bin/env python3
"""Real photographs for p2p-wgpu's real-image smoke tests: tests/fixtures/photos/.

Three colour photographs and one grey one from scikit-image's data module (pinned in requirements.txt), at their
shipped sizes, re-encoded so that every decoder path is exercised:

| file | source | size | licence (as scikit-image's data module states it) |
|---|---|---|---|
| astronaut.jpg | `skimage.data.astronaut()`: Eileen Collins, NASA | 512x512 | public domain (no known copyright restrictions) |
| coffee.jpg | `skimage.data.coffee()`: Rachel Michetti | 600x400 | CC0 |
| chelsea.webp | `skimage.data.chelsea()`: Stefan van der Walt | 451x300 | CC0 |
| camera.png | `skimage.data.camera()`: Lav Varshney (grey, 8-bit) | 512x512 | CC0 |

JPEG quality 85 and lossless WebP (PIL), PNG as grey ("L"). Our own code (p2p-wgpu project). Regenerate from the
repository root:

    weights-tools/.venv/bin/python weights-tools/make_photo_fixtures.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from skimage import data

OUT = Path(__file__).resolve().parents[1] / "tests/fixtures/photos"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.astronaut(), "RGB").save(OUT / "astronaut.jpg", quality=85)
    Image.fromarray(data.coffee(), "RGB").save(OUT / "coffee.jpg", quality=85)
    Image.fromarray(data.chelsea(), "RGB").save(OUT / "chelsea.webp", lossless=True)
    Image.fromarray(data.camera(), "L").save(OUT / "camera.png")
    for p in sorted(OUT.iterdir()):
        print(p.name, p.stat().st_size)


if __name__ == "__main__":
    main()
