"""SSIM heat-map figures: where a reconstruction departs from the ground truth (red low, blue high)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ldsr.io import atomic_path

# 'RdYlBu' runs red -> yellow -> blue, so with vmin 0 and vmax 1 a low SSIM is red and a high SSIM is blue.
HEATMAP_CMAP = "RdYlBu"
_DPI = 100
_MAX_SIDE_INCHES = 8.0


def save_ssim_heatmap(ssim_map: np.ndarray, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Render an (H, W) SSIM map as a PNG with a colour bar labelled 'SSIM'; written atomically.

    Values are shown on the fixed scale [0, 1] (negative SSIM is shown as 0), so figures are comparable.
    The figure is about 8 inches (800 px) on its longer side, with the map's aspect ratio.
    """
    smap = np.asarray(ssim_map, dtype=np.float64)
    if smap.ndim != 2 or smap.size == 0:
        raise ValueError(f"an SSIM heat map needs a non-empty (H, W) map, got shape {smap.shape}")
    if np.isnan(smap).any():
        raise ValueError("the SSIM map contains NaN values")

    # Lazy: matplotlib is only needed when a figure is asked for; the Agg canvas needs no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h, w = smap.shape
    scale = _MAX_SIDE_INCHES / max(h, w)
    # Extra width for the colour bar, extra height for the title.
    fig = Figure(figsize=(max(w * scale, 2.0) + 1.4, max(h * scale, 2.0) + (0.5 if title else 0.2)), dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(smap, cmap=HEATMAP_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, label="SSIM", fraction=0.046, pad=0.04)
    fig.tight_layout()

    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return target
