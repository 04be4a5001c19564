"""Neighbourhood attention (ldsr.models.local_attention) against global: quality untiled, and tiled vs untiled.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/tiling/local_attention_gap.py [--radii none,4,7,11]
        [--schemes t128o32s0,t128o32s2] [--out gap.json]

For each attention radius (none: the UNet's global attention) and each 512^2 held-out image of
experiments/tiling/tile_norm_gap.py (LR bicubic x4, one draw, no back-projection): the untiled PSNR against the HR,
and every tiled scheme's PSNR gap to the untiled output of the same radius.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ldsr.data.degrade import degrade, rng_for
from ldsr.models.local_attention import local_attention
from ldsr.pipeline import load

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tile_norm_gap import images, psnr, run, scheme  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--radii", default="none,4,7,11")
    ap.add_argument("--schemes", default="t128o32s0,t128o32s2")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    models: dict = {}
    rows = []
    schemes = args.schemes.split(",")
    for model, name, hr in images(args.quick):
        up = models.setdefault(model, load(model))
        lr, _ = degrade(hr, 4, "bicubic", rng_for(0, name))
        for r in args.radii.split(","):
            radius = None if r == "none" else int(r)
            with local_attention(up.model.unet, radius):
                ref, _, _ = run(up, lr, {"tile": 0})
                base = psnr(ref, hr)
                row = {"model": model, "image": name, "radius": radius, "untiled_psnr": base}
                for s in schemes:
                    sr, n, sec = run(up, lr, scheme(s))
                    row[s] = {"gap_db": psnr(sr, hr) - base, "vs_untiled_db": psnr(sr, ref), "seconds": sec}
            rows.append(row)
            gaps = "  ".join(f"{s} {row[s]['gap_db']:+.3f} ({row[s]['vs_untiled_db']:.1f})" for s in schemes)
            print(f"{model:13s} {name:26s} r={r:5s} untiled {base:7.3f}  {gaps}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
