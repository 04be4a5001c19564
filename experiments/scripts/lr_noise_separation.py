"""Can the LR itself say whether it is clean? Immerkær's noise estimate on clean vs degraded LR (issue 14 probe).

    .venv/bin/python experiments/scripts/lr_noise_separation.py runs/eval/histoval_bicubic runs/eval/histoval_bsrgan ...

Each argument is an `ldsr degrade` folder (lr/); prints, per folder, the noise sigma (8-bit grey levels) of every
LR image (Y for colour): min / median / max, and whether one threshold separates the clean folders (name ending in
_bicubic) from the others. Immerkær, "Fast noise variance estimation", CVIU 1996: sigma = sqrt(pi/2) / (6 (W-2)
(H-2)) * sum |I * N|, N the 3x3 Laplacian difference [[1,-2,1],[-2,4,-2],[1,-2,1]].
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ldsr.io import list_images, read_image


def immerkaer_sigma(img: np.ndarray) -> float:
    """Noise sigma of an (H, W[, C]) image in [0, 1], in 8-bit grey levels (BT.601 Y for colour)."""
    y = img[..., 0] if img.ndim == 2 or img.shape[-1] == 1 else img[..., :3] @ np.array([0.299, 0.587, 0.114])
    y = (y.squeeze() * 255.0).astype(np.float64)
    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    h, w = y.shape
    r = sum(k[i, j] * y[i : h - 2 + i, j : w - 2 + j] for i in range(3) for j in range(3))  # (H-2, W-2), valid
    return float(np.sqrt(np.pi / 2) / (6 * (w - 2) * (h - 2)) * np.abs(r).sum())


def main() -> None:
    per: dict[str, list[float]] = {}
    for folder in map(Path, sys.argv[1:]):
        per[folder.name] = [immerkaer_sigma(read_image(p)[0]) for p in list_images(folder / "lr")]
        v = np.array(per[folder.name])
        print(f"{folder.name}: n={v.size} sigma min {v.min():.2f} median {np.median(v):.2f} max {v.max():.2f}")
    clean = np.concatenate([v for k, v in per.items() if k.endswith("_bicubic")])
    other = np.concatenate([v for k, v in per.items() if not k.endswith("_bicubic")])
    if clean.size and other.size:
        print(f"clean max {clean.max():.2f} vs degraded min {other.min():.2f}: "
              f"{'separable' if clean.max() < other.min() else 'overlapping'}")  # fmt: skip


if __name__ == "__main__":
    main()
