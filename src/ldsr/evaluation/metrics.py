"""Full-reference SR metrics (PSNR, SSIM; HFEN, GMSD and the high-frequency energy ratio, which punish blur;
calibration of a predicted std) and the folder job behind `ldsr metrics`.

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
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ldsr.evaluation.heatmap import (
    save_ssim_heatmap,
)  # re-exported: ARCHITECTURE lists it under ldsr.evaluation.metrics
from ldsr.io import ImageError, ImageMeta, atomic_path, list_images, read_image
from ldsr.io.batch import BatchResult, run_batch
from ldsr.io.meta import quantize as quantize  # re-exported: the metrics' grid is the writers' (one rule)
from ldsr.io.meta import to_grid

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
# Measures that punish blur: HFEN, GMSD, high-frequency energy ratio; and calibration of a predicted std

# HFEN (Ravishankar & Bresler 2011): Laplacian of Gaussian, MATLAB fspecial('log', 15, 1.5).
HFEN_SIZE = 15
HFEN_SIGMA = 1.5
# GMSD (Xue et al. 2014): T = 170 for images in 0..255; 2x2 average + down-sampling by 2; Prewitt / 3.
GMSD_T_255 = 170.0
# High-frequency energy ratio: power above this radial frequency (cycles / pixel; Nyquist is 0.5).
HF_CUTOFF = 0.125  # a quarter of Nyquist
CALIBRATION_K = 3.0  # calibration counts |error| > k * predicted std
_FLAT = 1e-20  # reference energy below this share of its total counts as none (round-off): NaN measures


def log_kernel(size: int = HFEN_SIZE, sigma: float = HFEN_SIGMA) -> np.ndarray:
    """MATLAB fspecial('log', size, sigma): (size, size), sums to 0.

    g = exp(-(x^2 + y^2) / (2 s^2)) / sum, h1 = g (x^2 + y^2 - 2 s^2) / s^4, h = h1 - mean(h1) (zero sum,
    so a constant image has no response).
    """
    if size < 3 or size % 2 == 0 or not sigma > 0:
        raise ValueError(f"LoG kernel needs an odd size >= 3 and sigma > 0, got {size}, {sigma}")
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    xx, yy = np.meshgrid(r, r)
    rr = xx * xx + yy * yy
    g = np.exp(-rr / (2.0 * sigma**2))
    g[g < np.finfo(np.float64).eps * g.max()] = 0.0
    g /= g.sum()
    h1 = g * (rr - 2.0 * sigma**2) / sigma**4
    return h1 - h1.sum() / h1.size


def _correlate_valid(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """2-D correlation over the 'valid' region: (H, W) -> (H - kh + 1, W - kw + 1), no padding involved."""
    from scipy import signal

    # fftconvolve convolves; flipping the kernel makes it a correlation (the LoG is symmetric anyway).
    return np.asarray(signal.fftconvolve(x, k[::-1, ::-1], mode="valid"))


def hfen_map(
    pred: np.ndarray, gt: np.ndarray, *, data_range: float, crop_border: int = 0, y_channel: bool = False
) -> np.ndarray:
    """HFEN map: (LoG(pred) - LoG(gt))^2 summed over channels / sum of LoG(gt)^2 over pixels and channels.

    HFEN (Ravishankar & Bresler 2011) = ||LoG(pred) - LoG(gt)||_2 / ||LoG(gt)||_2 = sqrt(sum of this map),
    with the 15x15, sigma 1.5 LoG. The map covers the 'valid' region (H - 14, W - 14): no padding enters
    (MATLAB's imfilter would zero-pad, which adds a border response to both images). 0 is a perfect match;
    a blurred prediction loses the reference's LoG response and moves towards 1, noise adds to it. The
    ratio does not depend on `data_range` (validated only). A ground truth without LoG response gives NaN.
    """
    p, g, _ = _prepare(pred, gt, data_range=data_range, crop_border=crop_border, y_channel=y_channel)
    if min(p.shape[:2]) < HFEN_SIZE:
        raise ValueError(f"HFEN needs images of at least {HFEN_SIZE}x{HFEN_SIZE} after the crop, got {p.shape[:2]}")
    k = log_kernel()
    lp = np.stack([_correlate_valid(p[:, :, c], k) for c in range(p.shape[2])], axis=2)
    lg = np.stack([_correlate_valid(g[:, :, c], k) for c in range(g.shape[2])], axis=2)
    ref = float(np.sum(lg * lg))
    err = np.sum((lp - lg) ** 2, axis=2)
    # FFT round-off leaves ~1e-30 relative energy where the true response is 0 (a flat ground truth).
    return err / ref if ref > _FLAT * float(np.sum(g * g)) * float(np.sum(k * k)) else np.full(err.shape, math.nan)


def hfen(
    pred: np.ndarray, gt: np.ndarray, *, data_range: float, crop_border: int = 0, y_channel: bool = False
) -> float:
    """HFEN = sqrt(sum of `hfen_map`); lower is better, 0 for identical images."""
    return float(
        np.sqrt(np.sum(hfen_map(pred, gt, data_range=data_range, crop_border=crop_border, y_channel=y_channel)))
    )


def _half_average(x: np.ndarray) -> np.ndarray:
    """MATLAB conv2(x, ones(2)/4, 'same') sampled at (1:2:end, 1:2:end): 2x2 block means, zero beyond the edge."""
    h, w = x.shape
    x = np.pad(x, ((0, h % 2), (0, w % 2)))
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])  # (ceil(H/2), ceil(W/2))


def _prewitt_magnitude(x: np.ndarray) -> np.ndarray:
    """sqrt(Ix^2 + Iy^2) with the Prewitt filters [1 0 -1; 1 0 -1; 1 0 -1] / 3 (and transpose), zero padding."""
    z = np.pad(x, 1)
    # Column differences summed over the 3 rows (Ix) and row differences summed over the 3 columns (Iy).
    dx = z[:, 2:] - z[:, :-2]  # (H + 2, W)
    dy = z[2:, :] - z[:-2, :]  # (H, W + 2)
    ix = (dx[:-2] + dx[1:-1] + dx[2:]) / 3.0
    iy = (dy[:, :-2] + dy[:, 1:-1] + dy[:, 2:]) / 3.0
    return np.sqrt(ix * ix + iy * iy)


def gms_map(
    pred: np.ndarray, gt: np.ndarray, *, data_range: float, crop_border: int = 0, y_channel: bool = False
) -> np.ndarray:
    """Gradient magnitude similarity map of GMSD (Xue et al. 2014): (ceil(H/2), ceil(W/2)), 1 where equal.

    Both images are 2x2-averaged and down-sampled by 2, their Prewitt gradient magnitudes m_p, m_g taken,
    and GMS = (2 m_p m_g + T) / (m_p^2 + m_g^2 + T) with T = 170 (data_range / 255)^2 (the paper's T for
    0..255 scaled with the squared range). Multi-channel input without `y_channel` averages the channel maps;
    the paper measures grey / luma, as `y_channel=True` does.
    """
    p, g, dr = _prepare(pred, gt, data_range=data_range, crop_border=crop_border, y_channel=y_channel)
    if min(p.shape[:2]) < 2:
        raise ValueError(f"GMSD needs images of at least 2x2 after the crop, got {p.shape[:2]}")
    t = GMSD_T_255 * (dr / 255.0) ** 2
    maps = []
    for c in range(p.shape[2]):
        mp, mg = _prewitt_magnitude(_half_average(p[:, :, c])), _prewitt_magnitude(_half_average(g[:, :, c]))
        maps.append((2.0 * mp * mg + t) / (mp * mp + mg * mg + t))
    return np.mean(maps, axis=0)


def gmsd(
    pred: np.ndarray, gt: np.ndarray, *, data_range: float, crop_border: int = 0, y_channel: bool = False
) -> float:
    """GMSD = standard deviation of `gms_map` (with N - 1, as MATLAB std2 in the authors' code); 0 is best."""
    m = gms_map(pred, gt, data_range=data_range, crop_border=crop_border, y_channel=y_channel)
    return float(np.std(m, ddof=1)) if m.size > 1 else 0.0


def _power_spectrum(x: np.ndarray) -> np.ndarray:
    """|FFT2(w * (x - mean))|^2, centred (fftshift); w is a separable Hann window against edge leakage."""
    h, w = x.shape
    win = np.outer(np.hanning(h), np.hanning(w)) if min(h, w) > 2 else np.ones((h, w))
    f = np.fft.fftshift(np.fft.fft2((x - x.mean()) * win))
    return (f.real**2 + f.imag**2).astype(np.float64)


def hf_energy_map(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    data_range: float,
    crop_border: int = 0,
    y_channel: bool = False,
    cutoff: float = HF_CUTOFF,
) -> np.ndarray:
    """High-frequency energy map (H, W) in centred frequency order: the prediction's power at each frequency
    above `cutoff` (radial, cycles / pixel; 0.125 = a quarter of Nyquist), over the reference's total power
    above it, summed over channels. Its sum is the HF energy ratio: 1 as sharp as the reference, < 1 blurrier,
    > 1 noisier or over-sharpened. Both images are mean-removed and Hann-windowed before the FFT, so the
    image border (a jump under the FFT's periodic extension) adds no false high frequencies. NaN if the
    reference has no power above the cutoff. The ratio does not depend on `data_range` (validated only).
    """
    p, g, _ = _prepare(pred, gt, data_range=data_range, crop_border=crop_border, y_channel=y_channel)
    if not 0.0 < cutoff < 0.5 * math.sqrt(2.0):
        raise ValueError(f"cutoff must lie in (0, 0.707) cycles per pixel, got {cutoff}")
    h, w = p.shape[:2]
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    mask = np.sqrt(fy * fy + fx * fx) > cutoff  # (H, W)
    pp = sum(_power_spectrum(p[:, :, c]) for c in range(p.shape[2])) * mask
    ref = float(np.sum(sum(_power_spectrum(g[:, :, c]) for c in range(g.shape[2])) * mask))
    # Parseval: the total power is H W sum(g^2); below _FLAT of it the reference has no high frequencies.
    return pp / ref if ref > _FLAT * h * w * float(np.sum(g * g)) else np.full((h, w), math.nan)


def hf_energy_ratio(
    pred: np.ndarray, gt: np.ndarray, *, data_range: float, crop_border: int = 0, y_channel: bool = False
) -> float:
    """Sum of `hf_energy_map`: prediction over reference power above a quarter of Nyquist."""
    return float(np.sum(hf_energy_map(pred, gt, data_range=data_range, crop_border=crop_border, y_channel=y_channel)))


def calibration_map(
    pred: np.ndarray,
    gt: np.ndarray,
    std: np.ndarray,
    *,
    data_range: float,
    crop_border: int = 0,
    k: float = CALIBRATION_K,
) -> np.ndarray:
    """(H, W) share of channels whose |pred - gt| exceeds k times the predicted std (k = 3 by default).

    `std` is the per-pixel spread of the prediction (e.g. over posterior draws) in the images' units: the
    shape of `pred`, or (H, W) / (H, W, 1) for every channel. Its mean is the share of pixels outside the
    predicted k-sigma band: about 0.003 for well-calibrated Gaussian errors, far more for an over-confident
    prediction. Measured on the channels as given (a per-channel std says nothing about luma's spread).
    """
    p, g, _ = _prepare(pred, gt, data_range=data_range, crop_border=0, y_channel=False)
    sd = _as_float_image(std, "predicted std")
    if sd.shape[:2] != p.shape[:2] or sd.shape[2] not in (1, p.shape[2]):
        raise ValueError(f"predicted std has shape {np.shape(std)}, expected {p.shape[:2]} or {p.shape}")
    if np.any(sd < 0):
        raise ValueError("predicted std contains negative values")
    if not k > 0:
        raise ValueError(f"k must be > 0, got {k}")
    p, g, sd = crop(p, crop_border), crop(g, crop_border), crop(sd, crop_border)
    return np.mean(np.abs(p - g) > k * sd, axis=2).astype(np.float64)


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
    hfen: float = math.nan  # on the same channel as PSNR / SSIM (Y or all)
    gmsd: float = math.nan
    hf_ratio: float = math.nan
    calibration: float = math.nan  # share of pixels with |error| > 3 std; NaN without a std map


# The measures of an ImageScore after its name, in table / CSV order.
SCORE_KEYS = ("psnr", "ssim", "hfen", "gmsd", "hf_ratio", "calibration")


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
    # x in [0, 1] -> stored values lo + x * span; integer grids by ldsr's one quantisation rule (`to_grid`).
    if grid.integer:
        return to_grid(x, grid.span) + grid.lo
    return np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) * grid.span + grid.lo


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
        "hfen": f"||LoG(sr) - LoG(gt)|| / ||LoG(gt)||, LoG {HFEN_SIZE}x{HFEN_SIZE} sigma {HFEN_SIGMA}, valid region",
        "gmsd": f"Xue et al. 2014: 2x2 average, down by 2, Prewitt, T = {GMSD_T_255:g} (range / 255)^2, std N-1",
        "hf_ratio": f"SR / GT power above {HF_CUTOFF} cycles per pixel (a quarter of Nyquist), Hann-windowed",
        "calibration": f"share of pixels with |sr - gt| > {CALIBRATION_K:g} x the predicted std (all channels)",
        "mean": "mean of per-image values",
        "ldsr_version": __version__,
        "pred_dir": str(Path(pred_dir).resolve()),
        "gt_dir": str(Path(gt_dir).resolve()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def mean_scores(scores: list[ImageScore]) -> dict[str, float]:
    """Mean of every measure over measured images (NaN if none; inf if any PSNR is inf)."""
    if not scores:
        return {key: math.nan for key in SCORE_KEYS}
    return {key: float(np.mean([getattr(s, key) for s in scores])) for key in SCORE_KEYS}


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
        writer.writerow(["name", *SCORE_KEYS, "height", "width", "channels", "data_range"])
        for s in scores:
            values = [repr(float(getattr(s, key))) for key in SCORE_KEYS]
            writer.writerow([s.name, *values, s.height, s.width, s.channels, repr(s.data_range)])
        m = mean_scores(scores)
        writer.writerow(["mean", *[repr(m[key]) for key in SCORE_KEYS], "", "", "", ""])


def _write_json(path: Path, prov: dict[str, Any], scores: list[ImageScore], failures: list[tuple[str, str]]) -> None:
    m = mean_scores(scores)
    doc = {
        "provenance": prov,
        "images": [{**asdict(s), **{k: _json_number(getattr(s, k)) for k in SCORE_KEYS}} for s in scores],
        "mean": {**{k: _json_number(m[k]) for k in SCORE_KEYS}, "count": len(scores)},
        "failures": [{"name": n, "reason": r} for n, r in failures],
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _std_path(std_root: Path, stem: str) -> Path:
    """The std map of `stem` under `std_root`: `<stem>_std.<ext>` as `ldsr upscale --std-map` names it."""
    found = [p for p in list_images(std_root / Path(stem).parent) if p.stem == f"{Path(stem).name}_std"]
    if len(found) != 1:
        what = "no" if not found else "several"
        raise ValueError(f"{what} std map {Path(stem).name}_std.* in {std_root / Path(stem).parent}")
    return found[0]


def _measure_pair(
    p: np.ndarray,
    g: np.ndarray,
    *,
    peak: float,
    crop_border: int,
    y_channel: bool,
    std: np.ndarray | None,
) -> dict[str, Any]:
    """Every measure of one pair in the gt's stored units; also returns the SSIM map as `ssim_map`."""
    kw: dict[str, Any] = {"data_range": peak, "crop_border": crop_border, "y_channel": y_channel}
    smap = ssim_map(p, g, **kw)
    calibration = math.nan
    if std is not None:
        calibration = float(np.mean(calibration_map(p, g, std, data_range=peak, crop_border=crop_border)))
    return {
        "ssim_map": smap,
        "psnr": psnr(p, g, **kw),
        "ssim": float(np.mean(smap)),
        "hfen": hfen(p, g, **kw),
        "gmsd": gmsd(p, g, **kw),
        "hf_ratio": hf_energy_ratio(p, g, **kw),
        "calibration": calibration,
    }


def _check_folders(*folders: tuple[str, str | os.PathLike[str] | None]) -> None:
    for what, root in folders:
        if root is not None and not Path(root).is_dir():
            raise ValueError(f"{what} folder {root} does not exist or is not a folder")


def metrics_folder(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    *,
    y_channel: bool,
    crop_border: int,
    data_range: float | None,
    out_dir: str | os.PathLike[str] | None,
    ssim_map_dir: str | os.PathLike[str] | None = None,
    std_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> BatchResult[ImageScore]:
    """Measure every prediction against the ground truth with the same relative path stem.

    Both images are measured in the gt's stored units (`stored_grid`: read_image's [0, 1] back to 0..255 or
    0..65535, rounded, so files are compared as their stored integers, and a 16-bit or float SR output is
    quantised to an 8-bit gt's grid; see `_pred_grid` for DICOM / NIfTI). `data_range=None` uses the gt's
    storage range (255, 65535; 2^BitsStored - 1 for DICOM). A stem found in only one folder, or in several files of
    one folder, is a per-file failure. Writes `metrics.csv` and `metrics.json` (with provenance) to `out_dir`
    (nothing when it is None) and, if `ssim_map_dir` is given, one SSIM heat-map PNG per image.

    `std_dir`: predicted std maps as `ldsr upscale --std-map` writes them (`<stem>_std.png`, 2 x std); calibration.
    """
    if data_range is not None:
        _check_data_range(data_range)
    _check_border(crop_border)
    pred_root, gt_root = Path(pred_dir), Path(gt_dir)
    _check_folders(("prediction", pred_root), ("ground-truth", gt_root), ("std-map", std_dir))
    preds, gts = _relative_stems(pred_root), _relative_stems(gt_root)

    def measure(stem: str) -> ImageScore:
        for what, found, root in (("prediction", preds, pred_root), ("ground truth", gts, gt_root)):
            files = found.get(stem, [])
            if not files:
                raise ValueError(f"no {what} with this name in {root}")
            if len(files) > 1:
                raise ValueError(f"several {what} files share this name: {', '.join(p.name for p in files)}")
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
        std = None
        if std_dir is not None:
            # The std map stores 2 x std of [0, 1] images (see `ldsr upscale --std-map`); into the gt's units.
            std = read_image(_std_path(Path(std_dir), stem))[0].astype(np.float64) / 2.0 * grid.span
        m = _measure_pair(p, g, peak=peak, crop_border=crop_border, y_channel=y_channel, std=std)
        smap = m.pop("ssim_map")
        if ssim_map_dir is not None:
            save_ssim_heatmap(smap, Path(ssim_map_dir) / f"{stem}_ssim.png", title=f"{stem}  SSIM {smap.mean():.4f}")
        return ImageScore(
            name=pred_path.relative_to(pred_root).as_posix(),
            height=int(g.shape[0]),
            width=int(g.shape[1]),
            channels=int(g.shape[2]) if g.ndim == 3 else 1,
            data_range=float(peak),
            **m,
        )

    def label(stem: str) -> str:
        # Report a pair by the relative file name found first (prediction, else ground truth).
        pred_files, gt_files = preds.get(stem, []), gts.get(stem, [])
        root, files = (pred_root, pred_files) if pred_files else (gt_root, gt_files)
        return files[0].relative_to(root).as_posix() if len(files) == 1 else stem

    stems = sorted(set(preds) | set(gts))
    result = run_batch(stems, measure, desc="metrics", name=label, progress=progress)
    if out_dir is not None:
        prov = provenance(
            pred_dir=pred_root, gt_dir=gt_root, y_channel=y_channel, crop_border=crop_border, data_range=data_range
        )
        out = Path(out_dir)
        _write_csv(out / "metrics.csv", prov, result.ok, result.failures)
        _write_json(out / "metrics.json", prov, result.ok, result.failures)
    return result


def format_table(scores: list[ImageScore]) -> str:
    """Per-image table of every measure with the mean as its last row (calibration only when measured)."""
    keys = [k for k in SCORE_KEYS if k != "calibration" or any(math.isfinite(s.calibration) for s in scores)]
    heads = {"psnr": "PSNR (dB)", "ssim": "SSIM", "hfen": "HFEN", "gmsd": "GMSD", "hf_ratio": "HF ratio",
             "calibration": ">3 std"}  # fmt: skip
    width = max([len("mean"), len("image")] + [len(s.name) for s in scores])

    def row(name: str, values: dict[str, float]) -> str:
        cells = [f"{values[k]:>{len(heads[k])}.{2 if k == 'psnr' else 4}f}" for k in keys]
        return "  ".join([f"{name:<{width}}", *cells])

    lines = ["  ".join([f"{'image':<{width}}", *(heads[k] for k in keys)])]
    lines += [row(s.name, {k: float(getattr(s, k)) for k in keys}) for s in scores]
    lines.append(row("mean", mean_scores(scores)))
    return "\n".join(lines)
