"""Automatic tiles vs untiled, PSNR against the HR, on held-out images large enough to tile (issue 15's seam target).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/tiling/auto_tile_gap.py [--mosaics 4] --out gap_auto.json

Images (`mosaics`): 1024^2 mosaics of held-out figshare slices for mri-x4, 512 x 2048 strips of the CMU-1 slide's
held-out rows for histology-x4 (at most 2); LR = bicubic x4 (`imresize`). Each model upscales each image with its
defaults twice: automatic tiles (what `ldsr upscale` does at this size) and `tile=0`. Reports both PSNRs on the
8-bit grid (Y for colour), their difference, and the PSNR between the two outputs; one JSON row per image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import date
from pathlib import Path

import numpy as np
import torch

from ldsr.data.resize import imresize
from ldsr.evaluation.metrics import psnr
from ldsr.io import list_images, read_image
from ldsr.io.wsi import Slide, to_unit
from ldsr.pipeline import load

ROOT = Path(__file__).resolve().parents[2]
SVS = ROOT.parent / "shared/data/histology/cmu1-small-region/cmu_small_region.svs"


def centre(im: np.ndarray, n: int) -> np.ndarray:
    y, x = (im.shape[0] - n) // 2, (im.shape[1] - n) // 2
    return im[y : y + n, x : x + n]


def mosaics(kind: str, count: int) -> list[tuple[str, np.ndarray]]:
    """`count` held-out HR images in [0, 1] large enough to be tiled automatically: MRI, 1024^2 mosaics of 2x2
    distinct held-out slices (centre 512^2 crops); histology, 512 x 2048 strips of the CMU-1 slide's held-out rows
    (y >= 2400, docs/DATA_SPLITS.md) at level 0."""
    if kind == "histology":
        with Slide(SVS) as slide:
            xs = [0, 170][:count]  # two strips of the 2220-px-wide region, overlapping by their middle
            return [(f"cmu1 y2420 x{x} 512x2048", to_unit(slide.read_region(x, 2420, 2048, 512))) for x in xs]
    files = list_images(ROOT / "runs" / "data" / "mri_test")
    out = []
    for m in range(min(count, len(files) // 4)):
        ims = [centre(read_image(f)[0].astype(np.float32), 512)[..., :1] for f in files[4 * m : 4 * m + 4]]
        grid = np.concatenate([np.concatenate(ims[:2], axis=1), np.concatenate(ims[2:], axis=1)], axis=0)
        out.append((f"mri mosaic {m} ({files[4 * m].name} ...)", grid))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mosaics", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for kind, model in (("mri", "mri-x4"), ("histology", "histology-x4")):
        up = load(model)
        for name, hr in mosaics(kind, a.mosaics):
            lr = np.clip(imresize(hr, 0.25), 0, 1).astype(np.float32)
            auto, whole = up.upscale(lr), up.upscale(lr, tile=0)
            q = [np.round(x * 255) for x in (hr, auto.image, whole.image)]
            ycc = hr.shape[-1] == 3
            p_auto, p_whole = (psnr(x, q[0], data_range=255, y_channel=ycc) for x in q[1:])
            row = {"model": model, "image": name, "tile": auto.tile, "psnr_auto": p_auto, "psnr_untiled": p_whole,
                   "gap_db": p_auto - p_whole, "auto_vs_untiled_db": psnr(q[1], q[2], data_range=255)}  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    summary = {"rows": rows, "worst_gap_db": max(abs(r["gap_db"]) for r in rows), "date": date.today().isoformat(),
               "machine": f"{os.cpu_count()}-core CPU ({platform.machine()}), one torch thread",
               "command": "experiments/tiling/auto_tile_gap.py" + (f" --mosaics {a.mosaics}")}  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
