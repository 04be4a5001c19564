"""experiments/scripts/histology_val_windows.py: the validation windows never touch a tile and hold enough tissue."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "scripts" / "histology_val_windows.py"
TILE = ROOT / "fixtures" / "histology" / "cmu1sr_y2700_x0900.png"


def _module() -> SimpleNamespace:
    return SimpleNamespace(**runpy.run_path(str(SCRIPT)))  # its functions; main() runs only as __main__


def test_windows_avoid_taken_pixels_and_each_other() -> None:
    m = _module()
    rgb = np.asarray(Image.open(TILE).convert("RGB"))  # a real H&E tile as a small "slide"
    tissue = m.tissue_mask(rgb)
    assert 0.3 < tissue.mean() < 1.0  # stained tissue and some white
    taken = np.zeros(tissue.shape, dtype=bool)
    taken[:, :50] = True  # a "tile" on the left
    before = taken.copy()
    found = m.windows(tissue, taken, 32, 0.6)
    assert found
    cover = np.zeros(tissue.shape, dtype=int)
    for y, x, frac in found:
        assert not before[y : y + 32, x : x + 32].any()
        assert frac >= 0.6 and frac == float(tissue[y : y + 32, x : x + 32].mean())
        cover[y : y + 32, x : x + 32] += 1
    assert cover.max() == 1  # non-overlapping


def test_script_cuts_windows_outside_every_tile(tmp_path: Path) -> None:
    slide = tmp_path / "slide.png"
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    rgb = np.asarray(Image.open(TILE).convert("RGB"))
    Image.fromarray(rgb).save(slide)
    Image.fromarray(rgb[:64, :64]).save(tiles / "cmu1sr_y0000_x0000.png")  # the slide's top-left corner is a tile
    out = tmp_path / "val"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(out),
            "--slide",
            str(slide),
            "--tiles",
            str(tiles),
            "--size",
            "32",
            "--min-tissue",
            "0.5",
        ],
        check=True,
        capture_output=True,
    )
    meta = json.loads((out / "windows.json").read_text())
    assert meta["tiles_excluded"] == 1 and meta["windows"]
    for w in meta["windows"]:
        y, x = w["y"], w["x"]
        assert not (y < 64 and x < 64 and y + 32 > 0 and x + 32 > 0)  # no overlap with the tile
        crop = np.asarray(Image.open(out / f"cmu1val_y{y:04d}_x{x:04d}.png"))
        assert np.array_equal(crop, rgb[y : y + 32, x : x + 32])
