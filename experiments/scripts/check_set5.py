"""Check ldsr's metrics and MATLAB-compatible bicubic against the published bicubic baseline on Set5.

Set5 cannot be committed (no redistribution licence), so this runs on a user's own copy:

    python experiments/scripts/check_set5.py /path/to/Set5/HR --scale 4

Protocol (the SR-paper one): the HR image is cropped to a multiple of the scale; LR = MATLAB bicubic
down-scaling (antialiased) of HR; SR = MATLAB bicubic up-scaling of LR; PSNR / SSIM on the BT.601 Y channel
with `scale` pixels cropped from each border, data_range 255.

* `--protocol rgb` (default): resize the RGB image, quantise LR and SR to uint8 (the SR output as stored),
  then measure Y (not rounded), as BasicSR-style evaluation does.
* `--protocol y`: take Y of the uint8 HR rounded to uint8 (MATLAB rgb2ycbcr on uint8), resize that one
  channel in floating point without quantisation, as the SRCNN / VDSR MATLAB code does.

Published bicubic means (Set5): x2 33.66 dB / 0.9299, x3 30.39 / 0.8682, x4 28.42 / 0.8104.
The two protocols differ from each other by a few hundredths of a dB.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ldsr.evaluation.metrics import psnr, quantize, rgb_to_y, ssim

PUBLISHED = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}


def _load_rgb_uint8(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def measure_one(hr_u8: np.ndarray, scale: int, protocol: str) -> tuple[float, float]:
    """PSNR and SSIM of bicubic SR of one uint8 RGB HR image under the chosen protocol."""
    from ldsr.data.resize import imresize  # lazy: written alongside this script

    hr_u8 = _modcrop(hr_u8, scale)
    if protocol == "rgb":
        hr = hr_u8.astype(np.float64) / 255.0
        lr = quantize(imresize(hr, 1.0 / scale, kernel="bicubic", antialias=True), 8).astype(np.float64) / 255.0
        sr = quantize(imresize(lr, float(scale), kernel="bicubic", antialias=True), 8)
        kw = dict(data_range=255.0, crop_border=scale, y_channel=True)
        return psnr(sr, hr_u8, **kw), ssim(sr, hr_u8, **kw)  # type: ignore[arg-type]
    # 'y': Y rounded to the uint8 grid, resized in floating point, never re-quantised.
    y_u8 = np.floor(rgb_to_y(hr_u8.astype(np.float64), data_range=255.0)[:, :, 0] + 0.5)
    y = y_u8 / 255.0
    sr_y = imresize(imresize(y, 1.0 / scale, kernel="bicubic"), float(scale), kernel="bicubic") * 255.0
    kw = dict(data_range=255.0, crop_border=scale, y_channel=False)
    return psnr(sr_y, y_u8, **kw), ssim(sr_y, y_u8, **kw)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hr_dir", type=Path, help="folder of Set5 HR PNGs (baby, bird, butterfly, head, woman)")
    parser.add_argument("--scale", type=int, default=4, choices=(2, 3, 4), help="SR factor (default: 4)")
    parser.add_argument("--protocol", choices=("rgb", "y"), default="rgb", help="see module doc (default: rgb)")
    args = parser.parse_args(argv)

    files = sorted(p for p in args.hr_dir.iterdir() if p.suffix.lower() in {".png", ".bmp", ".tif", ".tiff"})
    if not files:
        print(f"error: no images in {args.hr_dir}", file=sys.stderr)
        return 1
    rows = [(p.stem, *measure_one(_load_rgb_uint8(p), args.scale, args.protocol)) for p in files]
    width = max(len(r[0]) for r in rows + [("mean", 0.0, 0.0)])
    print(f"bicubic x{args.scale}, Y channel, crop {args.scale}, protocol {args.protocol}")
    for name, p, s in rows:
        print(f"{name:<{width}}  {p:8.4f} dB  {s:.4f}")
    mean_p = float(np.mean([r[1] for r in rows]))
    mean_s = float(np.mean([r[2] for r in rows]))
    print(f"{'mean':<{width}}  {mean_p:8.4f} dB  {mean_s:.4f}")
    ref_p, ref_s = PUBLISHED[args.scale]
    print(f"published  {ref_p:8.2f} dB  {ref_s:.4f}   (difference {mean_p - ref_p:+.3f} dB, {mean_s - ref_s:+.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
