"""Lay out the train / validation / test folders of docs/DATA_SPLITS.md as plain folders of links.

Training configs then name folders instead of applying split rules to every listed file, and a benchmark's
test folder is fixed once. Colin27 axial slices of the volume (z < 120, tissue only) join the MRI training
set as 8-bit PNGs; the 37 PNG slices of `../shared/data/mri/colin27` are split by their z like the volume.

    .venv/bin/python experiments/scripts/prepare_data.py ../shared/data runs/data
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import numpy as np

FIGSHARE_COUNTS = {"0": 930, "1": 705, "2": 1115}  # files per class folder of the full release


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(src.resolve(), dst)


def figshare(root: Path, out: Path, n_test: int) -> None:
    """Train: all but the last 10 % of each class by index; test: `n_test` evenly spaced held-out slices."""
    held = []
    for cls, n in FIGSHARE_COUNTS.items():
        files = sorted((root / cls).glob("*.jpg"), key=lambda p: int(p.stem))
        if len(files) != n:
            raise SystemExit(f"{root / cls}: {len(files)} files, the full release has {n}")
        cut = n - -(-n // 10)  # the last ceil(0.1 n) files by index are held out
        for k, f in enumerate(files):
            if k < cut:
                _link(f, out / "mri_train" / f"figshare_{cls}_{int(f.stem):04d}.jpg")
            else:
                held.append((cls, f))
    for i in np.linspace(0, len(held) - 1, n_test).round().astype(int):
        cls, f = held[i]
        _link(f, out / "mri_test" / f"figshare_{cls}_{int(f.stem):04d}.jpg")


def colin27(root: Path, out: Path) -> None:
    """PNG slices z < 120 train, z = 120..144 validation; volume slices z < 120 with tissue also train."""
    import nibabel as nib
    from PIL import Image

    for f in sorted(root.glob("*.png")):
        z = int(re.search(r"z(\d+)", f.stem).group(1))  # type: ignore[union-attr]  # every slice is named _zNNN
        if z < 120:
            _link(f, out / "mri_train" / f"colin27_{f.name}")
        elif z <= 144:
            _link(f, out / "mri_val" / f"colin27_{f.name}")
    vol = np.asarray(nib.as_closest_canonical(nib.load(root / "ch2.nii.gz")).dataobj)
    for z in range(vol.shape[2]):
        sl = np.rot90(vol[:, :, z])  # RAS -> image rows top = anterior... displayed as the PNG slices are
        if z >= 120 or (sl > 20).mean() < 0.15:
            continue
        dst = out / "mri_train" / f"colin27vol_z{z:03d}.png"
        if not dst.exists():
            Image.fromarray(sl.astype(np.uint8)).save(dst)


def _save(arr: np.ndarray, dst: Path) -> None:
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        Image.fromarray(arr).save(dst)


def histology(root: Path, out: Path, crop: int, n_crops: int, seed: int, val_size: int) -> None:
    """Test: tiles150 y >= 2400 and Kather index >= 80 (resized back to 150); validation: the slide windows of
    histology_val_windows.py; train: tiles150 y < 2400, Kather index < 80, and `n_crops` random tissue crops of
    the slide's level 0 that touch no test tile and no validation window."""
    import json
    import subprocess
    import sys

    from PIL import Image

    from ldsr.data.resize import imresize

    cmu = root / "cmu1-small-region"
    for f in sorted((cmu / "tiles150").glob("cmu1sr_y*_x*.png")):
        y = int(re.search(r"_y(\d+)_", f.name).group(1))  # type: ignore[union-attr]  # glob guarantees _yNNNN_
        _link(f, out / ("histo_test" if y >= 2400 else "histo_train") / f.name)
    for f in sorted((root / "kather2016").glob("image_*_label_*.png")):
        idx = int(f.stem.split("_")[1])
        arr = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0
        small = (imresize(arr, size=(150, 150)).clip(0, 1) * 255).round().astype(np.uint8)
        _save(small, out / ("histo_test" if idx >= 80 else "histo_train") / f"kather2016_{f.stem}_150.png")
    script = Path(__file__).with_name("histology_val_windows.py")
    if not script.exists():
        script = Path("scripts/histology_val_windows.py")
    subprocess.run([sys.executable, str(script), str(out / "histo_val"), "--size", str(val_size)], check=True)
    wins = json.loads((out / "histo_val" / "windows.json").read_text())
    with Image.open(cmu / "cmu_small_region.svs") as im:
        rgb = np.asarray(im.convert("RGB"))
    taken = np.zeros(rgb.shape[:2], dtype=bool)
    for f in (out / "histo_test").glob("cmu1sr_*.png"):
        y, x = map(int, re.findall(r"\d+", f.stem)[1:3])
        taken[y : y + 150, x : x + 150] = True
    for w in wins["windows"]:
        taken[w["y"] : w["y"] + wins["size"], w["x"] : w["x"] + wins["size"]] = True
    x01 = rgb.astype(np.float32) / 255.0
    tissue = (x01.max(axis=2) - x01.min(axis=2) > 0.08) & (x01.mean(axis=2) < 0.9)
    rng, kept, tries = np.random.default_rng(seed), 0, 0
    while kept < n_crops and tries < 200 * n_crops:
        tries += 1
        y, x = int(rng.integers(0, rgb.shape[0] - crop)), int(rng.integers(0, rgb.shape[1] - crop))
        if taken[y : y + crop, x : x + crop].any() or tissue[y : y + crop, x : x + crop].mean() < 0.5:
            continue
        _save(rgb[y : y + crop, x : x + crop], out / "histo_train" / f"cmu1crop_y{y:04d}_x{x:04d}.png")
        kept += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shared", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--mri-test", type=int, default=50)
    ap.add_argument("--val-size", type=int, default=128, help="side of the histology validation windows")
    ap.add_argument("--slide-crops", type=int, default=400, help="random 160 px tissue crops of the CMU-1 slide")
    a = ap.parse_args()
    figshare(a.shared / "mri" / "brain-tumor-figshare", a.out, a.mri_test)
    colin27(a.shared / "mri" / "colin27", a.out)
    histology(a.shared / "histology", a.out, 160, a.slide_crops, seed=0, val_size=a.val_size)
    for d in sorted(a.out.iterdir()):
        print(d, len(list(d.iterdir())))


if __name__ == "__main__":
    main()
