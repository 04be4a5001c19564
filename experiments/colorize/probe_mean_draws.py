"""Probe: one draw of a diffusion colorizer vs the mean chroma of several draws (a posterior-mean colouring).

    OMP_NUM_THREADS=2 .venv/bin/python experiments/colorize/probe_mean_draws.py [--model histology-colorize]
        [--refs runs/colorize/heldout] [--draws 4]

Prints the mean CIEDE2000 and colourfulness ratio of the first draw and of the draws' mean chroma (recombined
with the first draw's L*, which is the input's) over the colour references.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ldsr.data.color import lab_to_rgb, rgb_to_gray, rgb_to_lab
from ldsr.evaluation.colorization import colourfulness, delta_e_map
from ldsr.io import read_image
from ldsr.models.colorize import colorize_image, load_colorizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="histology-colorize")
    ap.add_argument("--refs", type=Path, default=Path("runs/colorize/heldout"))
    ap.add_argument("--draws", type=int, default=4)
    a = ap.parse_args()
    model = load_colorizer(a.model)
    rows = []
    for path in sorted(a.refs.glob("*.png")):
        ref, _ = read_image(path)
        ref = ref.astype(np.float64)
        res = colorize_image(model, rgb_to_gray(ref), samples=a.draws, seed=0)
        labs = [rgb_to_lab(np.asarray(im, dtype=np.float64)) for im in res.images]  # (H, W, 3) each
        lab = labs[0].copy()
        lab[..., 1:] = np.mean([x[..., 1:] for x in labs], axis=0)  # mean chroma of the draws
        mean_rgb = np.clip(lab_to_rgb(lab), 0.0, 1.0)
        one = np.asarray(res.images[0], dtype=np.float64)
        c_ref = colourfulness(ref)
        rows.append((delta_e_map(one, ref).mean(), delta_e_map(mean_rgb, ref).mean(),
                     colourfulness(one) / c_ref, colourfulness(mean_rgb) / c_ref))  # fmt: skip
    d1, dm, c1, cm = np.mean(rows, axis=0)
    print(f"{len(rows)} references: one draw ΔE2000 {d1:.2f}, colourfulness ratio {c1:.3f}; "
          f"mean chroma of {a.draws} draws ΔE2000 {dm:.2f}, ratio {cm:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
