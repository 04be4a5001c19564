"""Colorization measures and the `ldsr evaluate-colorization` job.

Measures (per image; maps where the measure is per pixel, the caller reduces):
- PSNR and SSIM on RGB (`ldsr.evaluation.metrics`, all three channels, `data_range` 1 on [0, 1] arrays);
- `ciede2000_map`: the CIEDE2000 colour difference (Sharma, Wu & Dalal 2005, eqs. 1-17; kL = kC = kH = 1)
  per pixel; the table reports its mean;
- `colourfulness`: Hasler & Suesstrunk 2003, M = sigma_rgyb + 0.3 mu_rgyb on 0..255 RGB with rg = R - G,
  yb = (R + G) / 2 - B; the table reports it and its ratio to the reference's (1 is the reference's
  colourfulness, < 1 washed out, 0 grey);
- `luminance_error_map`: |L*(output) - L*(grey input)|, the luminance check (0 up to float precision for
  every method here, as outputs are recombined with the input's L*).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ldsr.data.color import gray_to_l, rgb_to_gray, rgb_to_lab
from ldsr.io import atomic_path

if TYPE_CHECKING:
    from ldsr.models.colorize import AnyColorizer


def ciede2000_map(lab1: np.ndarray, lab2: np.ndarray, *, kl: float = 1.0, kc: float = 1.0,
                  kh: float = 1.0) -> np.ndarray:  # fmt: skip
    """CIEDE2000 difference of two CIELAB arrays (..., 3) -> (...), Sharma et al. 2005."""
    lab1, lab2 = np.asarray(lab1, dtype=np.float64), np.asarray(lab2, dtype=np.float64)
    if lab1.shape != lab2.shape or lab1.shape[-1] != 3:
        raise ValueError(f"expected two (..., 3) CIELAB arrays of one shape, got {lab1.shape} and {lab2.shape}")
    l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    c_bar7 = ((np.hypot(a1, b1) + np.hypot(a2, b2)) / 2.0) ** 7
    g = 0.5 * (1.0 - np.sqrt(c_bar7 / (c_bar7 + 25.0**7)))  # eq. 4
    a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2  # eq. 5
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)  # eq. 6
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360.0  # eq. 7 (atan2(0, 0) = 0)
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360.0
    dlp, dcp = l2 - l1, c2p - c1p  # eqs. 8-9
    dh = h2p - h1p
    cc = c1p * c2p
    dhp = np.where(cc == 0, 0.0, np.where(dh > 180.0, dh - 360.0, np.where(dh < -180.0, dh + 360.0, dh)))  # eq. 10
    d_hp = 2.0 * np.sqrt(cc) * np.sin(np.radians(dhp) / 2.0)  # eq. 11
    lbp, cbp = (l1 + l2) / 2.0, (c1p + c2p) / 2.0  # eqs. 12-13
    hs = h1p + h2p
    hbp = np.where(cc == 0, hs,
                   np.where(np.abs(h1p - h2p) <= 180.0, hs / 2.0,
                            np.where(hs < 360.0, (hs + 360.0) / 2.0, (hs - 360.0) / 2.0)))  # fmt: skip  # eq. 14
    t = (1.0 - 0.17 * np.cos(np.radians(hbp - 30.0)) + 0.24 * np.cos(np.radians(2.0 * hbp))
         + 0.32 * np.cos(np.radians(3.0 * hbp + 6.0)) - 0.20 * np.cos(np.radians(4.0 * hbp - 63.0)))  # fmt: skip
    d_theta = 30.0 * np.exp(-(((hbp - 275.0) / 25.0) ** 2))  # eq. 16
    rc = 2.0 * np.sqrt(cbp**7 / (cbp**7 + 25.0**7))  # eq. 17
    sl = 1.0 + 0.015 * (lbp - 50.0) ** 2 / np.sqrt(20.0 + (lbp - 50.0) ** 2)  # eq. 18
    sc = 1.0 + 0.045 * cbp  # eq. 19
    sh = 1.0 + 0.015 * cbp * t  # eq. 20
    rt = -np.sin(np.radians(2.0 * d_theta)) * rc  # eq. 21
    x, y, z = dlp / (kl * sl), dcp / (kc * sc), d_hp / (kh * sh)
    return np.sqrt(np.maximum(x**2 + y**2 + z**2 + rt * y * z, 0.0))  # eq. 22


def delta_e_map(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """CIEDE2000 per pixel between two (H, W, 3) sRGB images in [0, 1] -> (H, W)."""
    return ciede2000_map(rgb_to_lab(pred), rgb_to_lab(ref))


def colourfulness(rgb: np.ndarray, *, data_range: float = 1.0) -> float:
    """Hasler & Suesstrunk's M of an (H, W, 3) image (on the 0..255 scale they defined it on)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"colourfulness needs an (H, W, 3) image, got {rgb.shape}")
    x = np.asarray(rgb, dtype=np.float64) * (255.0 / data_range)
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def luminance_error_map(rgb: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """|L*(rgb) - L*(grey)| per pixel; (H, W, 3) and (H, W) in [0, 1]."""
    return np.abs(rgb_to_lab(rgb)[..., 0] - gray_to_l(gray))


# ----------------------------------------------------------------------------------------------------------
# the evaluation job


@dataclass
class ColorizationReport:
    """Rows of results.csv, per-method means (summary.json) and the failed references."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


COLUMNS = ("image", "method", "psnr", "ssim", "delta_e2000", "colourfulness", "colourfulness_ref",
           "colourfulness_ratio", "luminance_max_err", "luminance_max_err_written", "seconds")  # fmt: skip


def _on_grid(x: np.ndarray, bits: int) -> np.ndarray:
    """x quantised as a `bits`-bit file would store it (round half away from zero, as ldsr.io writes)."""
    from ldsr.io.meta import quantize

    q = quantize(np.asarray(x, dtype=np.float64), 16 if bits == 16 else 8)
    return q.astype(np.float64) / float(np.iinfo(q.dtype).max)


def _measure(out: np.ndarray, ref: np.ndarray, gray: np.ndarray, bits: int) -> dict[str, float]:
    from ldsr.evaluation.metrics import psnr, ssim

    written = _on_grid(out, bits)  # what a file of the reference's depth holds
    c_ref = colourfulness(ref)
    c_out = colourfulness(written)
    return {
        "psnr": psnr(written, ref, data_range=1.0),
        "ssim": ssim(written, ref, data_range=1.0),
        "delta_e2000": float(delta_e_map(written, ref).mean()),
        "colourfulness": c_out,
        "colourfulness_ref": c_ref,
        "colourfulness_ratio": c_out / c_ref if c_ref > 0 else math.nan,
        "luminance_max_err": float(luminance_error_map(out, gray).max()),
        "luminance_max_err_written": float(luminance_error_map(written, gray).max()),
    }


def _reference(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(colour reference (H, W, 3), its grey on the reference's grid (H, W), bit depth) of one file."""
    from ldsr.io import ImageError, read_image

    ref, meta = read_image(path)
    if ref.shape[2] != 3:
        raise ImageError(path, f"a colorization reference must be a colour image, got {ref.shape[2]} channel(s)")
    if not np.isfinite(ref).all():
        raise ImageError(path, "has NaN or infinite values")
    bits = 16 if meta.bit_depth == 16 else 8
    ref = np.asarray(ref, dtype=np.float64)
    return ref, _on_grid(rgb_to_gray(ref), bits), bits


def evaluate_colorization(
    refs: Sequence[Path],
    methods: Mapping[str, AnyColorizer],
    out: str | os.PathLike[str],
    *,
    steps: int | None = None,
    seed: int = 0,
    grid_count: int = 4,
    save_images: bool = False,
    min_side: int = 8,
) -> ColorizationReport:
    """Colorize the grey of every colour reference with every method (one draw, `seed`) and measure it.

    Writes results.csv (one row per image and method), summary.json / summary.md (means per method, with
    parameters and seconds per image), grid.png (grey | methods | reference for the first `grid_count`
    references) and, with `save_images`, <method>/<stem>.png. A reference that cannot be read (or is grey,
    or too small) is a one-line failure; the others go on."""
    from ldsr.io import check_size, write_image

    out_dir = Path(out)
    report = ColorizationReport()
    grid_rows: list[list[np.ndarray]] = []
    for path in refs:
        try:
            ref, gray, bits = _reference(path)
            check_size(ref, path, min_side=min_side)
        except ValueError as e:
            report.failures.append(str(e).splitlines()[0] if str(e) else f"{path}: unreadable")
            continue
        outs = []
        for name, method in methods.items():
            t0 = time.perf_counter()
            from ldsr.models.colorize import colorize_image

            image = colorize_image(method, gray, samples=1, steps=steps, seed=seed).images[0]
            row = {"image": path.name, "method": name, **_measure(image, ref, gray, bits)}
            row["seconds"] = time.perf_counter() - t0
            report.rows.append(row)
            outs.append(image)
            if save_images:
                report.written.append(write_image(out_dir / name / f"{path.stem}.png", image, bit_depth=bits))
        if len(grid_rows) < grid_count:
            grid_rows.append([np.repeat(gray[..., None], 3, axis=2), *outs, ref])
    report.summary = _summarise(report.rows, methods)
    report.written += _write_tables(out_dir, report)
    if grid_rows:
        report.written.append(comparison_grid(grid_rows, ["grey input", *methods, "reference"], out_dir / "grid.png"))
    return report


def _summarise(rows: list[dict[str, Any]], methods: Mapping[str, AnyColorizer]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for name, method in methods.items():
        mine = [r for r in rows if r["method"] == name]
        if not mine:
            continue
        means = {k: float(np.mean([r[k] for r in mine])) for k in COLUMNS[2:] if not k.startswith("luminance")}
        means["luminance_max_err"] = float(max(r["luminance_max_err"] for r in mine))
        means["luminance_max_err_written"] = float(max(r["luminance_max_err_written"] for r in mine))
        means["images"] = len(mine)
        means["params"] = int(method.n_params)
        summary[name] = means
    return summary


def format_table(summary: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table of the per-method means."""
    lines = ["| method | PSNR (dB) | SSIM | ΔE2000 | colourfulness ratio | max ΔL* | params | s / image |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, m in summary.items():
        lines.append(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['delta_e2000']:.2f} | "
                     f"{m['colourfulness_ratio']:.3f} | {m['luminance_max_err']:.1e} | {int(m['params']):,} | "
                     f"{m['seconds']:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _write_tables(out_dir: Path, report: ColorizationReport) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "results.csv", out_dir / "summary.json", out_dir / "summary.md"]
    with atomic_path(paths[0]) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for row in report.rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    with atomic_path(paths[1]) as tmp:
        tmp.write_text(json.dumps({"methods": report.summary, "failures": report.failures}, indent=2), "utf-8")
    with atomic_path(paths[2]) as tmp:
        tmp.write_text(format_table(report.summary), encoding="utf-8")
    return paths


def comparison_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], path: str | os.PathLike[str],
                    *, cell: float = 2.0) -> Path:  # fmt: skip
    """A PNG of rows of (H, W, 3) images in [0, 1] with `titles` over the columns (matplotlib, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_rows, n_cols = len(rows), len(titles)
    fig = Figure(figsize=(cell * n_cols, cell * n_rows + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            ax = axes[i][j]
            ax.imshow(np.clip(img, 0.0, 1.0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return target
