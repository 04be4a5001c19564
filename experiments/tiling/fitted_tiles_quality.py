"""Fitted automatic tiles vs the fixed 8x-training-size tiles vs untiled, on a 1024^2 output (experiments only).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/tiling/fitted_tiles_quality.py

HR: the 1024^2 mosaic of four held-out figshare slices (`norm_sweeps.mosaic`); LR: bicubic x4 (`imresize`); the
shipped mri-x4 with its defaults. Prints the tile and the PSNR against the HR of each, and the PSNR between them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from norm_sweeps import mosaic  # noqa: E402

from ldsr.data.resize import imresize  # noqa: E402
from ldsr.pipeline import load  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a.astype(np.float64) - b) ** 2)))


def main() -> None:
    torch.set_num_threads(1)
    hr = ((mosaic(1024)[0, 0].numpy() + 1) / 2).astype(np.float32)[..., None]  # (1024, 1024, 1) in [0, 1]
    lr = np.clip(imresize(hr, 0.25), 0, 1).astype(np.float32)  # (256, 256, 1)
    up = load("mri-x4")
    out = {}
    for name, kw in [("auto", {}), ("tile256", {"tile": 256, "tile_overlap": 64}), ("untiled", {"tile": 0})]:
        r = up.upscale(lr, **kw)
        out[name] = r.image
        print(f"{name}: tile {r.tile}, PSNR vs HR {psnr(r.image, hr):.3f} dB", flush=True)
    print(f"auto vs tile256 {psnr(out['auto'], out['tile256']):.2f} dB, auto vs untiled "
          f"{psnr(out['auto'], out['untiled']):.2f} dB")  # fmt: skip


if __name__ == "__main__":
    main()
