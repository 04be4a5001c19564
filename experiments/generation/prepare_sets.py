"""Materialise the image sets that `ldsr evaluate-generation` compares: the training split (memorisation) and the
held-out split (distances), each image resized so its shorter side is SIZE (MATLAB bicubic) and centre-cropped to
SIZE x SIZE, bit depth kept (16-bit sources give 16-bit PNGs). The split rules are those of docs/DATA_SPLITS.md.

    python experiments/generation/prepare_sets.py --data ../shared/data/mri/brain-tumor-figshare \
        --split-rules experiments/splits/figshare.yaml --size 128 --out runs/gen/sets/mri
    -> runs/gen/sets/mri/train/*.png, runs/gen/sets/mri/test/*.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ldsr.data.datasets import list_sources, resize_shorter_side
from ldsr.data.splits import load_split_rules
from ldsr.io import ImageError, read_image, write_image


def centre_crop(arr: np.ndarray, size: int) -> np.ndarray:
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top : top + size, left : left + size]


def write_split(folders: list[str], rules: list[str], split: str, size: int, resize: int, out: Path,
                limit: int, channels: int) -> int:  # fmt: skip
    """Write one split; returns the number of unreadable files (reported one line each)."""
    sources = list_sources(folders, split, rules=load_split_rules(rules))  # type: ignore[arg-type]
    if limit:
        sources = sources[:: max(1, len(sources) // limit)][:limit]  # spread evenly over the sorted files
    bad = 0
    for k, src in enumerate(sources):
        try:
            img, meta = read_image(src.path)
        except ImageError as e:
            print(e, file=sys.stderr)
            bad += 1
            continue
        img = img.mean(axis=2, keepdims=True) if channels == 1 and img.shape[2] == 3 else img
        img = centre_crop(resize_shorter_side(img, resize or size), size)
        write_image(out / split / f"{k:05d}_{src.path.stem}.png", img, bit_depth=16 if meta.bit_depth > 8 else 8)
    print(f"{split}: {len(sources) - bad} images -> {out / split}")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True, help="image folders")
    ap.add_argument("--split-rules", nargs="*", default=[], help="experiments/splits/*.yaml")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--resize", type=int, default=0, help="shorter side before the crop (0: --size)")
    ap.add_argument("--channels", type=int, choices=(1, 3), default=1)
    ap.add_argument("--limit", type=int, default=0, help="at most this many images per split (0: all)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    bad = sum(write_split(a.data, a.split_rules, s, a.size, a.resize, a.out, a.limit, a.channels)
              for s in ("train", "test"))  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
