"""Degradation throughput: images per second of `ldsr.data.degrade.degrade` on 256x256 RGB crops at x4.

The crops come from the bundled histology fixtures (150x150 tiles, up-sampled x2 with MATLAB bicubic and
cropped to 256x256 at several offsets), so the content is real tissue texture. Only the in-memory
degradation is timed (no file I/O). Usage:

    .venv/bin/python experiments/scripts/bench_degrade.py [--n 40] [--scale 4]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ldsr.data.degrade import PRESETS, degrade, rng_for
from ldsr.data.resize import imresize

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "histology"


def crops(n: int, size: int = 256) -> list[np.ndarray]:
    paths = sorted(FIXTURES.glob("*.png"))
    tiles = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 for p in paths]
    big = [np.clip(imresize(t, 2.0), 0.0, 1.0) for t in tiles]  # 300x300
    out: list[np.ndarray] = []
    offsets = [(0, 0), (44, 44), (0, 44), (44, 0), (22, 22)]
    while len(out) < n:
        for b in big:
            for top, left in offsets:
                out.append(np.ascontiguousarray(b[top : top + size, left : left + size]))
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="images per preset (default 40)")
    ap.add_argument("--scale", type=int, default=4, help="SR factor (default 4)")
    args = ap.parse_args()
    images = crops(args.n)
    print(
        f"{platform.processor() or platform.machine()}, python {platform.python_version()}, "
        f"{args.n} images of {images[0].shape}, x{args.scale}"
    )
    for preset in ("bsrgan", "light", "bicubic"):
        assert preset in PRESETS
        degrade(images[0], args.scale, preset, rng_for(0, "warmup"))
        t = time.perf_counter()
        for i, hr in enumerate(images):
            degrade(hr, args.scale, preset, rng_for(0, f"bench_{i}"))
        dt = time.perf_counter() - t
        print(f"{preset:8s} {args.n / dt:8.1f} images/s  ({1000 * dt / args.n:.1f} ms/image)")


if __name__ == "__main__":
    main()
