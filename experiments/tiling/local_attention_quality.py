"""Neighbourhood vs global attention at the shipped defaults, untiled, on a held-out split (paired per image).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/tiling/local_attention_quality.py -m mri-x4 \
        -d runs/data/mri_test --presets bicubic,bsrgan,kspace --radii none,7,11 --out q.json

Each HR image is degraded by each preset (seed 0 per image name, as experiments/tiling/tile_norm_gap.py), upscaled
with the model's defaults (faithful, consistency as shipped) once per attention radius (none: global), and
scored on the Y channel (PSNR, SSIM, data range 1). Printed: the mean per radius and the paired mean difference to
global attention with its standard error.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from ldsr.data.degrade import degrade, rng_for
from ldsr.evaluation.metrics import psnr, ssim
from ldsr.io import read_image
from ldsr.models.local_attention import local_attention
from ldsr.pipeline import load


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-d", "--data", required=True)
    ap.add_argument("--presets", default="bicubic,bsrgan")
    ap.add_argument("--radii", default="none,7")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    up = load(args.model)
    radii = [None if r == "none" else int(r) for r in args.radii.split(",")]
    files = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in (".png", ".jpg", ".tif"))
    files = files[: args.limit] if args.limit else files
    rows = []
    for preset in args.presets.split(","):
        for p in files:
            hr = read_image(p)[0]
            hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
            lr, _ = degrade(hr, 4, preset, rng_for(0, p.stem))
            y = hr.shape[2] == 3
            for r in radii:
                with local_attention(up.model.unet, r):
                    sr = up.upscale(lr, seed=0).image
                rows.append({"preset": preset, "image": p.stem, "radius": r,
                             "psnr": psnr(sr, hr, data_range=1.0, y_channel=y),
                             "ssim": ssim(sr, hr, data_range=1.0, y_channel=y)})  # fmt: skip
        summarize(rows, preset, radii)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))


def summarize(rows: list[dict], preset: str, radii: list) -> None:
    for key in ("psnr", "ssim"):
        by = {r: np.array([x[key] for x in rows if x["preset"] == preset and x["radius"] == r]) for r in radii}
        parts = []
        for r in radii:
            d = by[r] - by[radii[0]]
            se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else 0.0
            parts.append(f"r={r}: {by[r].mean():.4f} ({d.mean():+.4f} ± {se:.4f})")
        print(f"{preset:8s} {key:5s} n={len(by[radii[0]])}  " + "  ".join(parts), flush=True)


if __name__ == "__main__":
    main()
