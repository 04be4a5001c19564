"""Full-reference SR metrics (PSNR, SSIM) that agree with the literature, and the folder job behind `ldsr metrics`.

Conventions
-----------
* Images are `(H, W)` or `(H, W, C)` arrays of any dtype; everything is computed in float64.
* `data_range` is the peak-to-peak range of the values (1.0 for floats in [0, 1], 255 for 8-bit, 65535
  for 16-bit). It is always passed explicitly; nothing is guessed from the dtype.
* Metric functions return maps (`squared_error_map`, `ssim_map`); `psnr` and `ssim` reduce them.
* SR papers measure images as stored: the SR output is quantised to the integer grid (`quantize`) before
  measuring. `metrics_folder` therefore measures files exactly as they are on disk, on the integer grid of
  the ground truth's bit depth.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ldsr.evaluation.heatmap import (
    save_ssim_heatmap,
)  # re-exported: ARCHITECTURE lists it under ldsr.evaluation.metrics
from ldsr.io import ImageError, ImageMeta, atomic_path, list_images, read_image
from ldsr.io.batch import BatchResult, run_batch

# SSIM constants of Wang et al. 2004 (and MATLAB `ssim`, scikit-image with gaussian_weights=True).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
_SSIM_PAD = (SSIM_WINDOW - 1) // 2  # the valid map loses 5 pixels on each side

# ITU-R BT.601 luma for R, G, B in [0, 1], giving Y in 8-bit units in [16, 235] (MATLAB rgb2ycbcr).
_Y_OFFSET_8BIT = 16.0
_Y_WEIGHTS_8BIT = np.array([65.481, 128.553, 24.966])


# ----------------------------------------------------------------------------------------------------------
# validation helpers


def _check_data_range(data_range: float) -> float:
    value = float(data_range)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"data_range must be a finite number > 0, got {data_range!r}")
    return value


def _as_float_image(img: np.ndarray, what: str) -> np.ndarray:
    """Any-dtype (H, W) or (H, W, C) array -> float64 (H, W, C); NaN or inf is an error."""
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{what} must be (H, W) or (H, W, C), got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return arr


def _check_border(border: int) -> int:
    if isinstance(border, bool) or not isinstance(border, (int, np.integer)) or border < 0:
        raise ValueError(f"crop border must be an integer >= 0, got {border!r}")
    return int(border)


def crop(img: np.ndarray, border: int) -> np.ndarray:
    """Remove `border` pixels from each side of the two spatial axes (the SR 'shave' of `scale` pixels)."""
    border = _check_border(border)
    if border == 0:
        return img
    h, w = img.shape[:2]
    if h <= 2 * border or w <= 2 * border:
        raise ValueError(f"crop border {border} leaves nothing of an image of size {h}x{w}")
    return img[border : h - border, border : w - border]


def rgb_to_y(img: np.ndarray, *, data_range: float) -> np.ndarray:
    """BT.601 luma Y = 16 + 65.481 R + 128.553 G + 24.966 B (R, G, B in [0, 1], Y in 8-bit units).

    The result is returned in the input's units: Y_8bit * data_range / 255, so white maps to
    235 * data_range / 255 and black to 16 * data_range / 255. It is not rounded (MATLAB rounds when the
    input is uint8; BasicSR and most Python SR code do not). `(H, W, 3)` -> `(H, W, 1)` float64; grey
    `(H, W)` or `(H, W, 1)` input is returned unchanged; any other channel count is an error.
    """
    dr = _check_data_range(data_range)
    arr = np.asarray(img)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        return arr
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"Y channel needs an (H, W, 3) RGB or a grey image, got shape {arr.shape}")
    # (H, W, 3) @ (3,) -> (H, W): the weighted sum in units of data_range, rescaled to 8-bit units' span.
    y = arr.astype(np.float64, copy=False) @ _Y_WEIGHTS_8BIT / 255.0 + _Y_OFFSET_8BIT * dr / 255.0
    return y[:, :, None]


def quantize(img: np.ndarray, bit_depth: Literal[8, 16]) -> np.ndarray:
    """[0, 1] floats -> the stored integer grid: uint8 (0..255) or uint16 (0..65535).

    Rounds half away from zero like MATLAB's im2uint8 / im2uint16 (values are clipped to [0, 1] first),
    which is how SR papers quantise the SR output before measuring it.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    arr = np.asarray(img, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("cannot quantise an image that contains NaN or infinite values")
    peak = float(2**bit_depth - 1)
    q = np.floor(np.clip(arr, 0.0, 1.0) * peak + 0.5)
    return q.astype(np.uint8 if bit_depth == 8 else np.uint16)


def _prepare(
    pred: np.ndarray, gt: np.ndarray, *, data_range: float, crop_border: int, y_channel: bool
) -> tuple[np.ndarray, np.ndarray, float]:
    """Validate a pair and return both as float64 (H, W, C) after the crop and the optional Y conversion."""
    dr = _check_data_range(data_range)
    p_shape, g_shape = np.shape(pred), np.shape(gt)
    if p_shape != g_shape:
        raise ValueError(f"prediction and ground truth differ in shape: pred {p_shape} vs gt {g_shape}")
    p = _as_float_image(pred, "prediction")
    g = _as_float_image(gt, "ground truth")
    if y_channel and p.shape[2] not in (1, 3):
        raise ValueError(f"y_channel needs RGB (3 channels) or grey (1 channel) images, got {p.shape[2]} channels")
    p = crop(p, crop_border)
    g = crop(g, crop_border)
    if y_channel:
        p = rgb_to_y(p, data_range=dr)
        g = rgb_to_y(g, data_range=dr)
    return p, g, dr


# ----------------------------------------------------------------------------------------------------------
# PSNR


def squared_error_map(
    pred: np.ndarray, gt: np.ndarray, *, data_range: float, crop_border: int = 0, y_channel: bool = False
) -> np.ndarray:
    """Per-pixel squared error (pred - gt)^2 averaged over channels: (H - 2b, W - 2b) float64.

    Its mean is the MSE over all pixels and channels (the channel mean of equal-size maps does not change it).
    """
    p, g, _ = _prepare(pred, gt, data_range=data_range, crop_border=crop_border, y_channel=y_channel)
    return np.mean((p - g) ** 2, axis=2)


def psnr(
    pred: np.ndarray, gt: np.ndarray, *, data_range: float, crop_border: int = 0, y_channel: bool = False
) -> float:
    """PSNR = 10 log10(data_range^2 / MSE) in dB; identical images give `inf`."""
    se = squared_error_map(pred, gt, data_range=data_range, crop_border=crop_border, y_channel=y_channel)
    mse = float(np.mean(se))
    if mse == 0.0:
        return math.inf
    return float(10.0 * math.log10(float(data_range) ** 2 / mse))


# ----------------------------------------------------------------------------------------------------------
# SSIM


def _gaussian_1d() -> np.ndarray:
    # w[k] ∝ exp(-k^2 / (2 sigma^2)) for k = -5..5, normalised to sum 1. The 2-D window is the outer
    # product w w^T, i.e. MATLAB fspecial('gaussian', 11, 1.5) and scipy's gaussian_filter(sigma=1.5,
    # truncate=3.5) as used by scikit-image.
    k = np.arange(SSIM_WINDOW, dtype=np.float64) - _SSIM_PAD
    w = np.exp(-(k**2) / (2.0 * SSIM_SIGMA**2))
    return w / w.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' weighted local mean: (H, W) -> (H - 10, W - 10), no padding involved."""
    # sliding_window_view(x, 11, axis=0) is (H-10, W, 11); contracting the window axis with w filters rows.
    rows = sliding_window_view(x, SSIM_WINDOW, axis=0) @ w
    return sliding_window_view(rows, SSIM_WINDOW, axis=1) @ w


def _ssim_map_2d(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    w = _gaussian_1d()
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_x = _filter_valid(x, w)
    mu_y = _filter_valid(y, w)
    # Population (weights sum to 1, no N/(N-1)) local variances and covariance: E[xy] - E[x]E[y].
    var_x = _filter_valid(x * x, w) - mu_x * mu_x
    var_y = _filter_valid(y * y, w) - mu_y * mu_y
    cov_xy = _filter_valid(x * y, w) - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return num / den


def ssim_map(
    pred: np.ndarray, gt: np.ndarray, *, data_range: float, crop_border: int = 0, y_channel: bool = False
) -> np.ndarray:
    """SSIM map of Wang et al. 2004 (Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, population covariance).

    Computed per channel and averaged over channels, over the 'valid' region only: for an (H, W) input after
    the crop the map is (H - 10, W - 10), like MATLAB's ssim with valid filtering and scikit-image's crop of
    its full map. Identical images give a map of exactly 1.
    """
    p, g, dr = _prepare(pred, gt, data_range=data_range, crop_border=crop_border, y_channel=y_channel)
    h, w = p.shape[:2]
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} after the crop, got {h}x{w}")
    maps = [_ssim_map_2d(p[:, :, c], g[:, :, c], dr) for c in range(p.shape[2])]
    return np.mean(maps, axis=0)


def ssim(
    pred: np.ndarray, gt: np.ndarray, *, data_range: float, crop_border: int = 0, y_channel: bool = False
) -> float:
    """Mean SSIM: the mean of `ssim_map` (equal to the mean over channels of per-channel mean SSIM)."""
    return float(np.mean(ssim_map(pred, gt, data_range=data_range, crop_border=crop_border, y_channel=y_channel)))


# ----------------------------------------------------------------------------------------------------------
# folder job


@dataclass(frozen=True)
class ImageScore:
    """One measured pair. `data_range` is the peak used (explicit, or the gt's full scale)."""

    name: str
    psnr: float
    ssim: float
    height: int
    width: int
    channels: int
    data_range: float


@dataclass(frozen=True)
class StoredGrid:
    """How read_image's x in [0, 1] maps back to the values stored in the file: v = lo + x * span.

    `integer` grids are rounded back to whole numbers. `peak` is the default data_range: the full range of
    the storage (255, 65535, 2^BitsStored - 1 for DICOM; the value span for float files), not of one image.
    """

    lo: float
    span: float
    integer: bool
    peak: float


def stored_grid(meta: ImageMeta) -> StoredGrid:
    """The stored grid of an `ldsr.io.ImageMeta`.

    PNG / JPEG / TIFF: 0..255 or 0..65535 (float files: their value range). DICOM integers: read_image's
    window `dicom.stored_range`, so the grid gives back the stored integers; peak 2^BitsStored - 1. NIfTI
    integers scaled by their volume range: that range, peak 2^bits - 1.
    """
    bit_depth = int(meta.bit_depth)
    integer = bit_depth in (8, 16)
    dicom = meta.dicom
    if integer and dicom is not None:
        lo, hi = float(dicom.stored_range[0]), float(dicom.stored_range[1])
        peak = float(2**dicom.bits_stored - 1)
    else:
        lo, hi = sorted((float(meta.value_range[0]), float(meta.value_range[1])))
        peak = float(2**bit_depth - 1) if integer else hi - lo
    if hi <= lo:
        hi = lo + 1.0  # a constant image: any positive span maps it back
        peak = peak if peak > 0 else 1.0
    return StoredGrid(lo=lo, span=hi - lo, integer=integer, peak=peak)


def _is_full_scale(meta: ImageMeta) -> bool:
    """True when x in [0, 1] means the same value in every file of its kind (0..2^b - 1, or [0, 1] floats)."""
    peak = float(2 ** int(meta.bit_depth) - 1) if int(meta.bit_depth) in (8, 16) else 1.0
    return meta.dicom is None and tuple(meta.value_range) == (0.0, peak)


def _on_grid(x: np.ndarray, grid: StoredGrid) -> np.ndarray:
    # x in [0, 1] -> stored values; integer grids round half away from zero (as `quantize`).
    v = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) * grid.span
    if grid.integer:
        v = np.floor(v + 0.5)
    return v + grid.lo


def _pred_grid(pred_meta: ImageMeta, gt_meta: ImageMeta, pred_path: Path) -> StoredGrid:
    """The grid that turns the prediction's x into the gt's stored units.

    Two self-scaled files (DICOM windows, volume-scaled NIfTI) each carry their own window over the same
    stored units, so the prediction uses its own. Otherwise the prediction's x is read on the gt's grid:
    exact for PNG / TIFF / JPEG, and a 16-bit or float SR output is quantised to an 8-bit gt's grid.
    """
    if _is_full_scale(pred_meta) or _is_full_scale(gt_meta):
        return stored_grid(gt_meta)
    pd, gd = pred_meta.dicom, gt_meta.dicom
    if pd is not None and gd is not None and (pd.slope, pd.intercept) != (gd.slope, gd.intercept):
        raise ImageError(
            pred_path,
            f"DICOM rescale (slope {pd.slope}, intercept {pd.intercept}) differs from the ground truth's "
            f"(slope {gd.slope}, intercept {gd.intercept}); stored values are not comparable",
        )
    return stored_grid(pred_meta)


def _relative_stems(folder: Path) -> dict[str, list[Path]]:
    """Supported images under `folder` keyed by relative path without suffix ('sub/a' for sub/a.png)."""
    stems: dict[str, list[Path]] = {}
    for path in list_images(folder):
        rel = path.relative_to(folder).as_posix()
        rel = rel[: -len(".nii.gz")] if rel.lower().endswith(".nii.gz") else str(Path(rel).with_suffix("").as_posix())
        stems.setdefault(rel, []).append(path)
    return stems


def provenance(
    *,
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    y_channel: bool,
    crop_border: int,
    data_range: float | None,
) -> dict[str, Any]:
    """What a metrics file needs to be comparable with another: the protocol and where the numbers came from."""
    from ldsr import __version__

    return {
        "channel": "y" if y_channel else "rgb",
        "y_conversion": "BT.601 Y = 16 + 65.481R + 128.553G + 24.966B (MATLAB rgb2ycbcr), not rounded",
        "crop_border": crop_border,
        "data_range": "gt storage range (255 for 8-bit, 65535 for 16-bit, 2^BitsStored - 1 for DICOM, "
        "1.0 for [0, 1] float)"
        if data_range is None
        else float(data_range),
        "grid": "images measured as stored, on the integer grid of the gt bit depth",
        "ssim_window": f"gaussian {SSIM_WINDOW}x{SSIM_WINDOW}, sigma {SSIM_SIGMA}",
        "ssim_k1": SSIM_K1,
        "ssim_k2": SSIM_K2,
        "ssim_covariance": "population",
        "ssim_region": "valid",
        "mean": "mean of per-image values",
        "ldsr_version": __version__,
        "pred_dir": str(Path(pred_dir).resolve()),
        "gt_dir": str(Path(gt_dir).resolve()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def mean_scores(scores: list[ImageScore]) -> dict[str, float]:
    """Mean PSNR and SSIM over measured images (NaN if none; inf if any PSNR is inf)."""
    if not scores:
        return {"psnr": math.nan, "ssim": math.nan}
    return {
        "psnr": float(np.mean([s.psnr for s in scores])),
        "ssim": float(np.mean([s.ssim for s in scores])),
    }


def _json_number(x: float) -> float | str:
    # JSON has no inf/NaN; write them as the strings "inf"/"nan", which float() parses back.
    return x if math.isfinite(x) else str(x)


def _write_csv(path: Path, prov: dict[str, Any], scores: list[ImageScore], failures: list[tuple[str, str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        for key, value in prov.items():
            f.write(f"# {key}: {value}\n")
        for name, reason in failures:
            f.write(f"# failed: {name}: {reason}\n")
        writer = csv.writer(f)
        writer.writerow(["name", "psnr", "ssim", "height", "width", "channels", "data_range"])
        for s in scores:
            writer.writerow([s.name, repr(s.psnr), repr(s.ssim), s.height, s.width, s.channels, repr(s.data_range)])
        m = mean_scores(scores)
        writer.writerow(["mean", repr(m["psnr"]), repr(m["ssim"]), "", "", "", ""])


def _write_json(path: Path, prov: dict[str, Any], scores: list[ImageScore], failures: list[tuple[str, str]]) -> None:
    m = mean_scores(scores)
    doc = {
        "provenance": prov,
        "images": [{**asdict(s), "psnr": _json_number(s.psnr), "ssim": _json_number(s.ssim)} for s in scores],
        "mean": {"psnr": _json_number(m["psnr"]), "ssim": _json_number(m["ssim"]), "count": len(scores)},
        "failures": [{"name": n, "reason": r} for n, r in failures],
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def metrics_folder(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    *,
    y_channel: bool,
    crop_border: int,
    data_range: float | None,
    out_dir: str | os.PathLike[str],
    ssim_map_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> BatchResult[ImageScore]:
    """Measure every prediction against the ground truth with the same relative path stem.

    Both images are measured in the gt's stored units (`stored_grid`: read_image's [0, 1] back to 0..255 or
    0..65535, rounded, so files are compared as their stored integers, and a 16-bit or float SR output is
    quantised to an 8-bit gt's grid; see `_pred_grid` for DICOM / NIfTI). `data_range=None` uses the gt's
    storage range (255, 65535; 2^BitsStored - 1 for DICOM). A stem found in only one folder, or in several files of
    one folder, is a per-file failure. Writes `metrics.csv` and `metrics.json` (with provenance) to `out_dir`
    and, if `ssim_map_dir` is given, one SSIM heat-map PNG per image.
    """
    if data_range is not None:
        _check_data_range(data_range)
    _check_border(crop_border)
    pred_root, gt_root = Path(pred_dir), Path(gt_dir)
    for label, root in (("prediction", pred_root), ("ground-truth", gt_root)):
        if not root.is_dir():
            raise ValueError(f"{label} folder {root} does not exist or is not a folder")
    preds, gts = _relative_stems(pred_root), _relative_stems(gt_root)

    def measure(stem: str) -> ImageScore:
        for label, found, root in (("prediction", preds, pred_root), ("ground truth", gts, gt_root)):
            files = found.get(stem, [])
            if not files:
                raise ValueError(f"no {label} with this name in {root}")
            if len(files) > 1:
                raise ValueError(f"several {label} files share this name: {', '.join(p.name for p in files)}")
        pred_path, gt_path = preds[stem][0], gts[stem][0]
        gt_arr, gt_meta = read_image(gt_path)
        pred_arr, pred_meta = read_image(pred_path)
        if pred_arr.shape != gt_arr.shape:
            raise ImageError(pred_path, f"shape {pred_arr.shape} differs from ground truth {gt_arr.shape}")
        grid = stored_grid(gt_meta)
        peak = data_range if data_range is not None else grid.peak
        # Both in the gt's stored units: files are measured as the integers they store.
        g = _on_grid(gt_arr, grid)
        p = _on_grid(pred_arr, _pred_grid(pred_meta, gt_meta, pred_path))
        smap = ssim_map(p, g, data_range=peak, crop_border=crop_border, y_channel=y_channel)
        if ssim_map_dir is not None:
            save_ssim_heatmap(smap, Path(ssim_map_dir) / f"{stem}_ssim.png", title=f"{stem}  SSIM {smap.mean():.4f}")
        return ImageScore(
            name=pred_path.relative_to(pred_root).as_posix(),
            psnr=psnr(p, g, data_range=peak, crop_border=crop_border, y_channel=y_channel),
            ssim=float(np.mean(smap)),
            height=int(g.shape[0]),
            width=int(g.shape[1]),
            channels=int(g.shape[2]) if g.ndim == 3 else 1,
            data_range=float(peak),
        )

    def label(stem: str) -> str:
        # Report a pair by the relative file name found first (prediction, else ground truth).
        pred_files, gt_files = preds.get(stem, []), gts.get(stem, [])
        root, files = (pred_root, pred_files) if pred_files else (gt_root, gt_files)
        return files[0].relative_to(root).as_posix() if len(files) == 1 else stem

    stems = sorted(set(preds) | set(gts))
    result = run_batch(stems, measure, desc="metrics", name=label, progress=progress)
    prov = provenance(
        pred_dir=pred_root, gt_dir=gt_root, y_channel=y_channel, crop_border=crop_border, data_range=data_range
    )
    out = Path(out_dir)
    _write_csv(out / "metrics.csv", prov, result.ok, result.failures)
    _write_json(out / "metrics.json", prov, result.ok, result.failures)
    return result


def format_table(scores: list[ImageScore]) -> str:
    """Per-image PSNR / SSIM table with the mean as its last row."""
    width = max([len("mean"), len("image")] + [len(s.name) for s in scores])
    lines = [f"{'image':<{width}}  {'PSNR (dB)':>9}  {'SSIM':>6}"]
    lines += [f"{s.name:<{width}}  {s.psnr:>9.4f}  {s.ssim:>6.4f}" for s in scores]
    m = mean_scores(scores)
    lines.append(f"{'mean':<{width}}  {m['psnr']:>9.4f}  {m['ssim']:>6.4f}")
    return "\n".join(lines)
