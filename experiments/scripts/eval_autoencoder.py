"""Reconstruction quality of trained autoencoders on held-out images: the ceiling a latent SR model cannot beat.

    .venv/bin/python experiments/scripts/eval_autoencoder.py --data ../shared/data/mri/brain-tumor-figshare \
        --count 50 runs/cpu/vqvae_f4 runs/cpu/vae_f4

Takes `--count` held-out images (docs/DATA_SPLITS.md, evenly spaced over the sorted list), encodes and decodes
each whole image (sides cropped to a multiple of the factor) with the EMA weights, and reports PSNR / SSIM on
the stored 8-bit grid (grey: the single channel; colour: BT.601 Y), no border crop. `--decode-tile N` decodes in
N x N latent tiles as `ldsr upscale --decode-tile` does (ldsr.models.tiling: a 16-position halo, the image's GroupNorm
statistics); `--tile-norms` keeps each tile's own GroupNorm statistics instead (the usual tiled decoding).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="autoencoders, or latent SR / generation models")
    p.add_argument("--data", required=True, help="folder of images (the held-out split is used)")
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--split", default="test", choices=["test", "train", "all"])
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--decode-tile", type=int, default=0, help="decode in tiles of this many latent positions")
    p.add_argument("--tile-norms", action="store_true", help="per-tile GroupNorm statistics (for comparison)")
    a = p.parse_args()

    from ldsr.data.datasets import list_sources, to_channels
    from ldsr.data.tensor import to_array, to_tensor
    from ldsr.evaluation.metrics import psnr, ssim
    from ldsr.io import read_image
    from ldsr.models.checkpoint import load_weights
    from ldsr.models.generation import load_autoencoder
    from ldsr.models.sr import DECODE_HALO
    from ldsr.models.tiling import decode_tiled

    sources = list_sources([a.data], a.split)
    if not sources:
        raise SystemExit(f"no {a.split} images under {a.data}")
    idx = np.linspace(0, len(sources) - 1, min(a.count, len(sources))).round().astype(int)
    picked = [sources[i].path for i in idx]
    results = {}
    for ck in a.checkpoints:
        _, run = load_weights(ck, ema=True)
        model: Any = load_autoencoder(str(ck), run["channels"])  # or the one inside a latent SR / generation model
        model.eval()
        f = model.factor
        ps, ss, t0 = [], [], time.perf_counter()
        for path in picked:
            x, _ = read_image(path)
            x = to_channels(x, run["channels"])
            x = x[: x.shape[0] - x.shape[0] % f, : x.shape[1] - x.shape[1] % f]
            with torch.no_grad():
                if a.decode_tile:
                    z = model.encode(to_tensor(x))  # (1, c_z, H/f, W/f)
                    norms = [] if a.tile_norms else [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
                    y = to_array(
                        decode_tiled(
                            model.decode, z, factor=f, tile=a.decode_tile, halo=DECODE_HALO, norms=norms
                        ).clamp(-1, 1)
                    )
                else:
                    y = to_array(model.reconstruct(to_tensor(x)))
            gt, rec = np.round(x * 255), np.round(y * 255)
            ycc = run["channels"] == 3
            ps.append(psnr(rec, gt, data_range=255, y_channel=ycc))
            ss.append(ssim(rec, gt, data_range=255, y_channel=ycc))
        name = Path(ck).name
        results[name] = {
            "checkpoint": str(ck),
            "kind": run["autoencoder"]["kind"],
            "factor": f,
            "preset": run["autoencoder"]["preset"],
            "params": sum(p.numel() for p in model.parameters()),
            "images": len(picked),
            "decode_tile": a.decode_tile,
            "tile_norms": a.tile_norms,
            "psnr": float(np.mean(ps)),
            "ssim": float(np.mean(ss)),
            "psnr_std": float(np.std(ps)),
            "seconds": time.perf_counter() - t0,
        }
        r = results[name]
        print(
            f"{name:20s} {r['kind']:6s} f={f} params={r['params']:,} images={r['images']} "
            f"PSNR {r['psnr']:.2f} ± {r['psnr_std']:.2f} dB  SSIM {r['ssim']:.4f}"
        )
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
