"""Exact tiled vs streamed decode / encode of mri-x4's autoencoder (experiments only).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/tiling/norm_sweeps.py [--side 1088] [--out sweeps.json]

The image: a 2 x 2 mosaic of held-out figshare slices (runs/data/mri_test, else the fixtures), 512^2 each,
centre-cropped to `side` (a 4096^2 upscale decodes 4160^2 pixels; 1088^2 keeps the run short: 9 tiles of 128
latents with the default halo, every tile boundary inside the image). Decode: z = streamed encode of the mosaic,
decoded with exact image statistics (`decode_tiled`, one pass per GroupNorm): PSNR (data range 2, [-1, 1]) against
the whole streamed decode, and seconds; the same timing for `encode_tiled` on bicubic x4 of the mosaic's LR.

Estimated statistics (1-3 "sweeps" instead of one pass per GroupNorm: 43-49 dB from exact on the decode, latents
moved by up to 3; docs/BENCHMARKS.md, 2026-12-01) were measured with this script at revision 3fd83e0, whose
library had the `sweeps=` option; it was removed as unused.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ldsr.data.resize import imresize
from ldsr.io import read_image
from ldsr.models.tiling import decode_tiled, encode_tiled
from ldsr.pipeline import load

ROOT = Path(__file__).resolve().parents[2]


def mosaic(side: int) -> torch.Tensor:
    """(1, 1, side, side) in [-1, 1]: four 512^2 slices (held-out when present), centre-cropped."""
    held = sorted((ROOT / "runs/data/mri_test").glob("*.*"))[:4]
    files = held if len(held) == 4 else sorted((ROOT / "fixtures/mri").glob("figshare_*.jpg"))[:4]
    tiles = []
    for f in files:
        im = read_image(f)[0].astype(np.float32)[..., :1]
        y, x = (im.shape[0] - 512) // 2, (im.shape[1] - 512) // 2
        tiles.append(im[y : y + 512, x : x + 512, 0])
    big = np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])  # (1024, 1024)
    big = np.pad(big, ((side - 1024) // 2 + 1,) * 2, mode="symmetric")
    o = (big.shape[0] - side) // 2
    return torch.from_numpy(big[o : o + side, o : o + side].copy())[None, None] * 2 - 1


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)


def timed(fn):  # noqa: ANN001, ANN201
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=1088)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)
    ae = load("mri-x4").model.autoencoder
    norms = [m for m in ae.modules() if isinstance(m, nn.GroupNorm)]
    x = mosaic(a.side)
    rows: dict = {"side": a.side, "decode": {}, "encode": {}}
    with torch.no_grad():
        z = ae.encode(x, streamed=True)  # (1, 3, side / 4, side / 4)
        whole, t = timed(lambda: ae.decode(z, streamed=True))
        rows["decode"]["streamed"] = {"seconds": t}
        exact, t = timed(lambda: decode_tiled(ae.decode, z, factor=4, tile=128, halo=16, norms=norms))
        rows["decode"]["exact"] = {"seconds": t, "psnr_vs_streamed": psnr(exact.clamp(-1, 1), whole.clamp(-1, 1))}
        lr = torch.from_numpy(imresize(x[0, 0].numpy(), 0.25))[None, None]
        base = torch.from_numpy(imresize(lr[0, 0].numpy(), 4.0))[None, None].clamp(-1, 1)
        _, t = timed(lambda: encode_tiled(ae.encode, base, factor=4, tile=128, halo=16, norms=norms))
        rows["encode"]["exact"] = {"seconds": t}
        _, t = timed(lambda: ae.encode(base, streamed=True))
        rows["encode"]["streamed"] = {"seconds": t}
    print(json.dumps(rows, indent=1))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
