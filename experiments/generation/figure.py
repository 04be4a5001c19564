"""The thesis's Fig 5.5 layout for the generation benchmark: one row per generator (GAN, pixel DDPM, VAE-DDPM,
VQ-DDPM) beside a row of held-out real images, the first K samples of each `ldsr generate` folder (seed 0, so
the row is the same on every rerun; no picking).

    python experiments/generation/figure.py --real runs/gen/sets/mri/test \
        --rows GAN=runs/gen/samples/mri_gan "DDPM (pixel)"=runs/gen/samples/mri_pixel \
               VAE-DDPM=runs/gen/samples/mri_vae VQ-DDPM=runs/gen/samples/mri_vq \
        --k 8 --out docs/figures/generation_mri_fig5_5.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ldsr.io import atomic_path, read_image


def first_images(folder: Path, k: int) -> list[np.ndarray]:
    """The first k images (sorted names) of folder or folder/samples, as float arrays in [0, 1]."""
    sub = folder / "samples"
    folder = sub if sub.is_dir() else folder
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".tif", ".tiff", ".jpg"})[:k]
    if len(files) < k:
        raise SystemExit(f"error: {folder}: {len(files)} images, {k} needed")
    return [read_image(p)[0] for p in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", type=Path, required=True, help="held-out real images (evenly spaced K are drawn)")
    ap.add_argument("--rows", nargs="+", required=True, help="LABEL=FOLDER, top to bottom")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real_files = sorted(p for p in a.real.iterdir() if p.suffix.lower() in {".png", ".tif", ".tiff"})
    real = [read_image(real_files[i * len(real_files) // a.k])[0] for i in range(a.k)]
    rows = [(label, first_images(Path(folder), a.k)) for label, folder in (r.split("=", 1) for r in a.rows)]
    rows.append(("real (held-out)", real))
    fig, axes = plt.subplots(len(rows), a.k, figsize=(1.3 * a.k, 1.4 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, im in enumerate(images):
            ax = axes[r][c]
            ax.imshow(im[:, :, 0] if im.shape[2] == 1 else im, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=9)
    fig.tight_layout(pad=0.3)
    with atomic_path(a.out) as tmp:
        fig.savefig(tmp, dpi=90, format="jpg" if a.out.suffix.lower() in {".jpg", ".jpeg"} else "png")
    plt.close(fig)
    print(a.out)


if __name__ == "__main__":
    main()
