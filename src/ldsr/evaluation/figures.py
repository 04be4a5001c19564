"""Figures of `ldsr evaluate` (matplotlib, Agg canvas, imported lazily; every PNG written atomically).

- `comparison_grid`: LR (nearest-upscaled for display) | methods | HR, full images with a rectangle on the
  zoomed region and a second row with that region enlarged (`ldsr evaluate` labels each method with its
  PSNR / SSIM on that image; `make demo` shows bicubic, the faithful and the sharp mode of each model).
- `loss_curves`: training loss per trained model (from each run's log.csv).
- `time_memory`: bars of seconds per image and peak memory per method.
- `params_vs_psnr`: PSNR against parameter count (log x).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ldsr.io import atomic_path

_DPI = 100
Box = tuple[int, int, int, int]  # top, left, height, width


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return target


def zoom_box(hr: np.ndarray, frac: float = 0.25) -> Box:
    """A square of side max(8, frac * min(H, W)) over the most detailed part of `hr` (largest std, coarse grid)."""
    h, w = hr.shape[:2]
    side = min(h, w, max(8, int(frac * min(h, w))))
    grey = hr.mean(axis=2) if hr.ndim == 3 else hr
    stride = max(1, side // 2)
    best, box = -1.0, (0, 0, side, side)
    for top in range(0, h - side + 1, stride):
        for left in range(0, w - side + 1, stride):
            s = float(grey[top : top + side, left : left + side].std())
            if s > best:
                best, box = s, (top, left, side, side)
    return box


def nearest_up(lr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour enlargement of `lr` to `shape[:2]` (display only)."""
    rows = (np.arange(shape[0]) * lr.shape[0]) // shape[0]
    cols = (np.arange(shape[1]) * lr.shape[1]) // shape[1]
    return lr[rows][:, cols]


def _show(ax: Any, img: np.ndarray) -> None:
    img = np.clip(img, 0.0, 1.0)
    if img.ndim == 3 and img.shape[2] == 1:
        ax.imshow(img[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def comparison_grid(path: str | os.PathLike[str], *, lr: np.ndarray, panels: Sequence[tuple[str, np.ndarray]],
                    hr: np.ndarray, title: str = "", box: Box | None = None) -> Path:  # fmt: skip
    """Row 1: LR (nearest), each (label, SR) panel, HR, with the zoom rectangle; row 2: the zoomed region.

    Labels may hold a second line (e.g. the panel's PSNR / SSIM); every panel is drawn pixel for pixel
    (nearest, no smoothing), so what the figure shows along the borders is what the method wrote.
    """
    from matplotlib.patches import Rectangle

    if any(img.shape != hr.shape for _, img in panels):
        raise ValueError(f"every panel must have the HR shape {hr.shape}")
    top, left, bh, bw = box if box is not None else zoom_box(hr)
    factor = hr.shape[0] / max(1, lr.shape[0])
    items = [(f"LR input\n(nearest, x{factor:g})", nearest_up(lr, hr.shape)), *panels, ("HR\n(ground truth)", hr)]
    n = len(items)
    aspect = hr.shape[0] / hr.shape[1]
    fig = _figure(2.4 * n, 2.4 * aspect + 2.4 + 0.9)
    axes = fig.subplots(2, n, squeeze=False)
    for i, (label, img) in enumerate(items):
        _show(axes[0, i], img)
        axes[0, i].set_title(label, fontsize=10)
        axes[0, i].add_patch(Rectangle((left - 0.5, top - 0.5), bw, bh, fill=False, edgecolor="red", linewidth=1.2))
        _show(axes[1, i], img[top : top + bh, left : left + bw])
    axes[1, 0].set_ylabel(f"zoom ({bh}x{bw} px)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def loss_curves(path: str | os.PathLike[str], curves: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> Path:
    """Training loss against step, one line per model (log y when every value is positive)."""
    if not curves:
        raise ValueError("loss_curves needs at least one (steps, losses) curve")
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for name, (steps, losses) in curves.items():
        ax.plot(steps, losses, label=name, linewidth=1.2)
    if all(v > 0 for _, losses in curves.values() for v in losses):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def time_memory(path: str | os.PathLike[str], names: Sequence[str], seconds: Sequence[float],
                peak_mb: Sequence[float], *, device: str) -> Path:  # fmt: skip
    """Two bar charts side by side: seconds per image and peak memory (MiB) per method."""
    fig = _figure(max(6.0, 1.2 * len(names) * 2), 3.8)
    x = np.arange(len(names))
    for i, (values, label) in enumerate(((seconds, "seconds / image"), (peak_mb, f"peak memory (MB, {device})"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.bar(x, np.nan_to_num(np.asarray(values, dtype=float)), color="tab:blue" if i == 0 else "tab:orange")
        ax.set_xticks(x, list(names), rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def params_vs_psnr(path: str | os.PathLike[str], names: Sequence[str], params: Sequence[int],
                   psnr: Sequence[float]) -> Path:  # fmt: skip
    """PSNR against parameter count on a log x axis; 0-parameter methods are drawn at x = 1."""
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for name, n, p in zip(names, params, psnr):
        x = max(int(n), 1)
        ax.scatter([x], [p], s=40)
        ax.annotate(name if n else f"{name} (0 params)", (x, p), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("PSNR Y (dB)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _save(fig, path)
