"""Shipping choices on validation images: each model with and without the back-projection consistency step,
under each LR kind, in one run (PSNR / SSIM on Y, crop = scale, on the 8-bit grid as `ldsr evaluate` measures).

    .venv/bin/python experiments/scripts/validate_consistency.py --scale 4 \
        --pairs runs/eval/mrival_bicubic runs/eval/mrival_bsrgan runs/eval/mrival_kspace \
        --model mri-x4 --model runs/blind/mri_x4 [--out docs/results/validation_mri.json]

`--pairs` are `ldsr degrade` folders (hr/, lr/). Prints a Markdown table; `--out` keeps it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ldsr.evaluation.metrics import psnr, quantize, ssim
from ldsr.io import list_images, read_image
from ldsr.pipeline import load


def score(up: object, pairs: Path, scale: int, consistency: bool | None) -> tuple[float, float]:
    ps, ss = [], []
    for hr_path in list_images(pairs / "hr"):
        hr, _ = read_image(hr_path)
        lr, _ = read_image(next((pairs / "lr").glob(hr_path.stem + ".*")))
        if consistency is None:  # bicubic
            sr = up.upscale(lr).image  # type: ignore[attr-defined]  # an Upscaler
        else:
            sr = up.upscale(lr, consistency=consistency, seed=0).image  # type: ignore[attr-defined]
        a, b = quantize(sr, 8) / 255.0, quantize(hr, 8) / 255.0
        ps.append(psnr(a, b, data_range=1.0, crop_border=scale, y_channel=True))
        ss.append(ssim(a, b, data_range=1.0, crop_border=scale, y_channel=True))
    return float(np.mean(ps)), float(np.mean(ss))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=Path, nargs="+", required=True)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    rows = []
    runs = [("bicubic", load("bicubic", scale=a.scale), None)]
    for m in a.model:
        up = load(m)
        runs += [(m, up, False), (m + " + back-projection", up, True)]
    for name, up, cons in runs:
        row = {"method": name}
        for pairs in a.pairs:
            row[pairs.name] = score(up, pairs, a.scale, cons)
        rows.append(row)
        print(json.dumps(row), flush=True)
    kinds = [p.name for p in a.pairs]
    print("\n| method | " + " | ".join(kinds) + " |\n|---|" + "---:|" * len(kinds))
    for r in rows:
        print(f"| {r['method']} | " + " | ".join(f"{r[k][0]:.2f} / {r[k][1]:.4f}" for k in kinds) + " |")
    if a.out:
        meta = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "scale": a.scale,
            "rows": rows,
            "command": " ".join(["python", *sys.argv]),
            "cpus": os.cpu_count(),
        }
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
