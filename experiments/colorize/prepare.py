"""Data of the colorization table (issue 17): the held-out H&E references and the constant mean-chroma baseline.

    .venv/bin/python experiments/colorize/prepare.py [--out runs/colorize] [--data ../shared/data]

Writes OUT/heldout/*.png: every held-out tile of CMU-1-Small-Region (y >= 2400) and Kather 2016 (index >= 80),
the Kather tiles resized back to their native 150 pixels (MATLAB bicubic, as training does), 8-bit RGB; and
OUT/mean_chroma.txt: `chroma:A,B`, the mean CIELAB chroma of every pixel of the training split (the same files
and resize as the training runs), for `-m mean-chroma=chroma:A,B` of `ldsr evaluate-colorization`.
Run from the repository root with ../shared/data present.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ldsr.data.color import rgb_to_lab
from ldsr.data.datasets import list_sources, resize_shorter_side
from ldsr.data.splits import load_split_rules
from ldsr.io import read_image, write_image

FOLDERS = ["histology/cmu1-small-region/tiles150", "histology/kather2016"]  # under --data
RULES = ["experiments/splits/cmu1.yaml", "experiments/splits/kather2016.yaml"]
SIDE = 150


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/colorize"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = ap.parse_args()
    rules = load_split_rules(RULES)
    folders = [str(args.data / f) for f in FOLDERS]
    held = list_sources(folders, "test", rules=rules)
    for src in held:
        img, _ = read_image(src.path)
        write_image(args.out / "heldout" / f"{src.path.stem}.png", resize_shorter_side(img, SIDE), bit_depth=8)
    total, count = np.zeros(2), 0
    for src in list_sources(folders, "train", rules=rules):
        img, _ = read_image(src.path)
        ab = rgb_to_lab(resize_shorter_side(img, SIDE).astype(np.float64))[..., 1:].reshape(-1, 2)
        total += ab.sum(axis=0)
        count += ab.shape[0]
    a, b = total / max(count, 1)
    spec = f"chroma:{a:.3f},{b:.3f}"
    (args.out / "mean_chroma.txt").write_text(spec + "\n", encoding="utf-8")
    print(f"{len(held)} held-out references in {args.out / 'heldout'}; training mean chroma {spec} ({count} pixels)")


if __name__ == "__main__":
    main()
