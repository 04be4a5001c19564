"""Cut the histology validation windows: tissue of CMU-1-Small-Region that no training or test tile covers.

    .venv/bin/python experiments/scripts/histology_val_windows.py OUT_DIR [--slide SVS] [--tiles DIR] [--size 96]

The histology splits (docs/DATA_SPLITS.md) use the 85 tiles of `tiles150`, cut from level 0 of the slide; the
slide has more tissue than those tiles. This script reads level 0 with Pillow, marks tissue (saturation > 0.08 and
mean < 0.9 of the RGB range), removes every pixel of every tile (train and test), and greedily keeps
non-overlapping `--size` windows (scanned on an 8-pixel grid, top to bottom) of at least `--min-tissue` tissue.
The windows share no pixel with any tile: no model saw them and no benchmark reports on them, so shipping choices
for the histology models are made on them (as the Colin27 slices z >= 120 serve mri-x4). Writes
`cmu1val_yYYYY_xXXXX.png` (the window's top-left corner on level 0) and `windows.json`.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

TILE = re.compile(r"^cmu1sr_y(\d+)_x(\d+)$")


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 H&E -> (H, W) bool: stained (saturated, not white) pixels."""
    x = rgb.astype(np.float32) / 255.0
    return (x.max(axis=2) - x.min(axis=2) > 0.08) & (x.mean(axis=2) < 0.9)


def windows(
    tissue: np.ndarray, taken: np.ndarray, size: int, min_tissue: float, stride: int = 8
) -> list[tuple[int, int, float]]:
    """Greedy non-overlapping (y, x, tissue fraction) windows avoiding `taken` (modified in place)."""
    h, w = tissue.shape
    out = []
    for y in range(0, h - size + 1, stride):
        for x in range(0, w - size + 1, stride):
            if taken[y : y + size, x : x + size].any():
                continue
            frac = float(tissue[y : y + size, x : x + size].mean())
            if frac >= min_tissue:
                out.append((y, x, frac))
                taken[y : y + size, x : x + size] = True
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    data = Path("../shared/data/histology/cmu1-small-region")
    p.add_argument("--slide", type=Path, default=data / "cmu_small_region.svs")
    p.add_argument("--tiles", type=Path, default=data / "tiles150")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--min-tissue", type=float, default=0.6)
    a = p.parse_args()

    from PIL import Image

    with Image.open(a.slide) as im:  # an SVS is a tiled JPEG TIFF; frame 0 is level 0
        rgb = np.asarray(im.convert("RGB"))
    taken = np.zeros(rgb.shape[:2], dtype=bool)
    tiles = [t for t in sorted(a.tiles.glob("*.png")) if TILE.match(t.stem)]
    if not tiles:
        raise SystemExit(f"{a.tiles}: no cmu1sr_yYYYY_xXXXX.png tiles")
    for t in tiles:
        y, x = map(int, TILE.match(t.stem).groups())
        with Image.open(t) as im:
            th, tw = im.height, im.width
        taken[y : y + th, x : x + tw] = True
    found = windows(tissue_mask(rgb), taken, a.size, a.min_tissue)
    a.out.mkdir(parents=True, exist_ok=True)
    for y, x, _ in found:
        Image.fromarray(rgb[y : y + a.size, x : x + a.size]).save(a.out / f"cmu1val_y{y:04d}_x{x:04d}.png")
    meta = {
        "slide": str(a.slide),
        "tiles_excluded": len(tiles),
        "size": a.size,
        "min_tissue": a.min_tissue,
        "windows": [{"y": y, "x": x, "tissue": round(f, 3)} for y, x, f in found],
    }
    (a.out / "windows.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{len(found)} windows of {a.size} px -> {a.out}")


if __name__ == "__main__":
    main()
