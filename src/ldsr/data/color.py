"""Colour spaces for colorization: sRGB <-> CIELAB (D65), luminance-exact recombination, chroma quantisation,
and the colorization dataset mode (colour crops as "hr", their luminance as the condition "lr").

CIELAB (CIE 15:2004) from sRGB (IEC 61966-2-1) with the D65 white of the sRGB matrix itself (its row sums),
so a grey (g, g, g) has a = b = 0 exactly and L = L_grey(g) = 116 f(lin(g)) - 16 depends on g alone:

    lin(c) = c / 12.92 (c <= 0.04045), else ((c + 0.055) / 1.055) ** 2.4          (sRGB decoding)
    (X, Y, Z) = M lin(rgb);  f(t) = t ** (1/3) (t > (6/29)**3), else t / (3 (6/29)**2) + 4/29
    L = 116 f(Y/Yn) - 16;  a = 500 (f(X/Xn) - f(Y/Yn));  b = 200 (f(Y/Yn) - f(Z/Zn))

A grayscale image is read as that grey: its pixel g carries the luminance L_grey(g), and an RGB image's own
grey is `rgb_to_gray` (the g with the same L). `recombine(L, ab)` returns the RGB image with exactly the
given L and the chroma `t * ab`, t in [0, 1] the largest factor (per pixel, by bisection) that keeps the RGB
inside [0, 1]: chroma outside the sRGB gamut is shortened along its own hue at constant L, never clipped per
channel (clipping would change L). The functions take numpy arrays (float64 inside) or torch tensors; the
channel axis is given (`axis=-1` for (H, W, 3) arrays, `axis=1` for (N, 3, H, W) tensors).

Chroma quantisation (Zhang et al. 2016, "Colorful Image Colorization"): ab bins of side 10 centred on
multiples of 10, kept when an sRGB colour falls into them (`ab_bins`, 313 bins in their paper);
`soft_encode` (5 nearest centres, Gaussian sigma 5), the rebalancing weights `rebalance_weights` and the
annealed mean `annealed_mean` (T = 0.38).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ldsr.data.config import DataConfig

A = Any  # a numpy array or a torch tensor: the conversions below work on both

# sRGB (IEC 61966-2-1) linear RGB -> XYZ, D65.
M_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
M_XYZ_TO_RGB = np.linalg.inv(M_RGB_TO_XYZ)
WHITE = M_RGB_TO_XYZ.sum(axis=1)  # (Xn, Yn, Zn) = M (1, 1, 1): white maps to L = 100, a = b = 0 exactly
DELTA = 6.0 / 29.0
AB_SCALE = 110.0  # ab / AB_SCALE is the networks' chroma in [-1, 1] (sRGB gamut: a in [-86, 98], b in [-108, 95])
BIN_SIZE = 10.0
SOFT_NEIGHBOURS = 5
SOFT_SIGMA = 5.0
TEMPERATURE = 0.38


# ----------------------------------------------------------------------------------------------------------
# element-wise pieces shared by numpy and torch


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _where(cond: Any, x: Any, y: Any) -> Any:
    if not _is_torch(cond):
        return np.where(cond, x, y)
    import torch

    return torch.where(cond, x, y)


def _split(x: A, axis: int) -> tuple[A, A, A]:
    if x.shape[axis] != 3:
        raise ValueError(f"expected 3 channels on axis {axis}, got shape {tuple(x.shape)}")
    if not _is_torch(x):
        c = np.moveaxis(x, axis, 0)
        return c[0], c[1], c[2]
    return x.select(axis, 0), x.select(axis, 1), x.select(axis, 2)


def _stack(parts: tuple[Any, Any, Any], axis: int) -> Any:
    if not _is_torch(parts[0]):
        return np.stack(parts, axis=axis)
    import torch

    return torch.stack(parts, dim=axis)


def _as_float(x: A) -> A:
    if not _is_torch(x):
        return np.asarray(x, dtype=np.float64)
    return x if x.is_floating_point() else x.float()


def srgb_to_linear(c: A) -> A:
    """sRGB decoding of values in [0, 1]; negative values continue the linear segment."""
    # clip before the power so the unused branch of `where` has no NaN (and no NaN gradient)
    return _where(c <= 0.04045, c / 12.92, ((c.clip(min=0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: A) -> A:
    """sRGB encoding (inverse of `srgb_to_linear`)."""
    return _where(c <= 0.0031308, 12.92 * c, 1.055 * c.clip(min=0.0031308) ** (1.0 / 2.4) - 0.055)


def _f(t: A) -> A:
    return _where(t > DELTA**3, t.clip(min=DELTA**3) ** (1.0 / 3.0), t / (3.0 * DELTA**2) + 4.0 / 29.0)


def _f_inv(u: A) -> A:
    return _where(u > DELTA, u**3, 3.0 * DELTA**2 * (u - 4.0 / 29.0))


def gray_to_l(g: A) -> A:
    """Luminance L* (0..100) of the grey (g, g, g), g in [0, 1]."""
    return 116.0 * _f(srgb_to_linear(_as_float(g))) - 16.0


def l_to_gray(lum: A) -> A:
    """The grey value g in [0, 1] whose L* is `lum` (inverse of `gray_to_l`)."""
    return linear_to_srgb(_f_inv((_as_float(lum) + 16.0) / 116.0))


# ----------------------------------------------------------------------------------------------------------
# sRGB <-> CIELAB


def _mix(m: np.ndarray, c0: Any, c1: Any, c2: Any) -> tuple[Any, Any, Any]:
    """3x3 matrix times the channel vector (c0, c1, c2), per pixel."""
    rows = tuple(float(m[i, 0]) * c0 + float(m[i, 1]) * c1 + float(m[i, 2]) * c2 for i in range(3))
    return rows[0], rows[1], rows[2]


def rgb_to_lab(rgb: A, axis: int = -1) -> A:
    """sRGB in [0, 1] -> CIELAB (L in 0..100, a, b), channels on `axis`."""
    r, g, b = (srgb_to_linear(c) for c in _split(_as_float(rgb), axis))
    x, y, z = _mix(M_RGB_TO_XYZ, r, g, b)
    fx, fy, fz = _f(x / WHITE[0]), _f(y / WHITE[1]), _f(z / WHITE[2])
    return _stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), axis)


def lab_to_rgb(lab: A, axis: int = -1) -> A:
    """CIELAB -> sRGB, not clipped (values outside [0, 1] mark colours outside the sRGB gamut)."""
    lum, a, b = _split(_as_float(lab), axis)
    fy = (lum + 16.0) / 116.0
    x, y, z = _f_inv(fy + a / 500.0) * WHITE[0], _f_inv(fy) * WHITE[1], _f_inv(fy - b / 200.0) * WHITE[2]
    r, g, b = (linear_to_srgb(c) for c in _mix(M_XYZ_TO_RGB, x, y, z))
    return _stack((r, g, b), axis)


def rgb_to_gray(rgb: A, axis: int = -1) -> A:
    """The grey value (in [0, 1]) with the same L* as each sRGB pixel; the channel axis is removed."""
    r, g, b = (srgb_to_linear(c) for c in _split(_as_float(rgb), axis))
    y = float(M_RGB_TO_XYZ[1, 0]) * r + float(M_RGB_TO_XYZ[1, 1]) * g + float(M_RGB_TO_XYZ[1, 2]) * b
    return linear_to_srgb(y / WHITE[1])


def _in_gamut(rgb: Any, axis: int) -> Any:
    """True where every channel is in [0, 1] (the channel axis is removed)."""
    lo = rgb.amin(axis) if _is_torch(rgb) else rgb.min(axis)
    hi = rgb.amax(axis) if _is_torch(rgb) else rgb.max(axis)
    return (lo >= 0.0) & (hi <= 1.0)


def recombine(lum: A, ab: A, axis: int = -1, *, iters: int = 30) -> A:
    """sRGB in [0, 1] with luminance exactly `lum` and chroma t * `ab` (t in [0, 1] per pixel, the largest
    that keeps the colour in the sRGB gamut, found by `iters` bisection steps; the grey t = 0 is always inside).

    `lum`: L* without a channel axis, (H, W) or (N, H, W); `ab`: two channels on `axis`. Returns 3 channels on
    `axis`. L* of the result equals `lum` to float precision (float64 for numpy input)."""
    lum, ab = _as_float(lum), _as_float(ab)
    if ab.shape[axis] != 2:
        raise ValueError(f"expected 2 chroma channels on axis {axis}, got shape {tuple(ab.shape)}")
    ab_last = _moveaxis(ab, axis, -1)  # (..., 2)
    lum_p = lum.reshape(-1).clip(0.0, 100.0)  # (P,) pixels
    ab_p = ab_last.reshape(-1, 2)  # (P, 2)
    if lum_p.shape[0] != ab_p.shape[0]:
        raise ValueError(f"luminance {tuple(lum.shape)} and chroma {tuple(ab.shape)} differ in size")

    def rgb_at(lp: A, abp: A, t: A) -> A:  # (P,), (P, 2), (P,) -> (P, 3)
        return lab_to_rgb(_cat(lp[:, None], abp * t[:, None], -1), -1)

    t = _ones_like(lum_p)
    out = ~_in_gamut(rgb_at(lum_p, ab_p, t), -1)
    if out.any():  # bisection on the pixels outside the gamut only: lo stays inside, hi outside
        lb, abb = lum_p[out], ab_p[out]
        lo, hi = _zeros_like(lb), _ones_like(lb)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            inside = _in_gamut(rgb_at(lb, abb, mid), -1)
            lo, hi = _where(inside, mid, lo), _where(inside, hi, mid)
        t[out] = lo
    rgb = rgb_at(lum_p, ab_p, t).clip(0.0, 1.0)  # inside [0, 1] up to rounding; the clip only removes that
    return _moveaxis(rgb.reshape(*ab_last.shape[:-1], 3), -1, axis)


def _moveaxis(x: A, src: int, dst: int) -> A:
    return x.movedim(src, dst) if _is_torch(x) else np.moveaxis(x, src, dst)


def _expand(x: Any, axis: int) -> Any:
    return x.unsqueeze(axis) if _is_torch(x) else np.expand_dims(x, axis)


def _cat(a: Any, b: Any, axis: int) -> Any:
    if not _is_torch(a):
        return np.concatenate([a, b], axis=axis)
    import torch

    return torch.cat([a, b], dim=axis)


def _ones_like(x: Any) -> Any:
    return x.new_ones(x.shape) if _is_torch(x) else np.ones_like(x)


def _zeros_like(x: Any) -> Any:
    return x.new_zeros(x.shape) if _is_torch(x) else np.zeros_like(x)


def colorize_gray(gray: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1) grey in [0, 1] + (H, W, 2) chroma -> (H, W, 3) sRGB float64 in [0, 1] whose L*
    equals the grey's (`recombine`)."""
    g = gray[..., 0] if gray.ndim == 3 else gray
    if ab.shape != (*g.shape, 2):
        raise ValueError(f"chroma {ab.shape} does not match the grey image {g.shape}")
    return recombine(gray_to_l(g), ab, axis=-1)


def gray_of(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """(H, W, 1|3) in [0, 1] -> ((H, W) grey, converted): an RGB image becomes the grey of equal L*."""
    if image.ndim == 2:
        return np.asarray(image, dtype=np.float64), False
    if image.shape[2] == 1:
        return np.asarray(image[..., 0], dtype=np.float64), False
    if image.shape[2] == 3:
        return rgb_to_gray(image, axis=-1), True
    raise ValueError(f"expected 1 or 3 channels, got shape {image.shape}")


# ----------------------------------------------------------------------------------------------------------
# chroma quantisation (Zhang et al. 2016)


@functools.cache
def ab_bins(bin_size: float = BIN_SIZE) -> np.ndarray:
    """(Q, 2) centres (multiples of `bin_size`) of the ab bins that some sRGB colour falls into: every colour
    of a 64^3 grid over the RGB cube is converted and its ab rounded to the nearest centre."""
    v = np.linspace(0.0, 1.0, 64)
    rgb = np.stack(np.meshgrid(v, v, v, indexing="ij"), axis=-1).reshape(-1, 3)
    ab = rgb_to_lab(rgb)[:, 1:]
    q = np.unique(np.round(ab / bin_size).astype(np.int64), axis=0)
    return q.astype(np.float64) * bin_size  # sorted by (a, b)


def smooth_prior(counts: np.ndarray, centres: np.ndarray, sigma: float = SOFT_SIGMA) -> np.ndarray:
    """Empirical bin distribution smoothed by a Gaussian of `sigma` ab units (over the bin centres)."""
    p = counts / max(float(counts.sum()), 1e-12)
    d2 = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1)  # (Q, Q)
    k = np.exp(-d2 / (2.0 * sigma**2))
    s = k @ p
    return s / s.sum()


def rebalance_weights(prior: np.ndarray, lam: float = 0.5) -> np.ndarray:
    """Zhang et al. eq. 4: w ∝ ((1 - lam) p~ + lam / Q)^-1, normalised so that E_p~[w] = 1."""
    q = prior.shape[0]
    w = 1.0 / ((1.0 - lam) * prior + lam / q)
    return w / float((prior * w).sum())


# ----------------------------------------------------------------------------------------------------------
# the colorization dataset mode


class ColorizationItems:
    """Wraps a dataset of colour items ({"hr": (3, H, W) in [-1, 1], ...}): "lr" becomes the grey of equal L*
    (1, H, W) in [-1, 1], the input a colorizer sees; other keys but "name" are dropped."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, k: int) -> dict[str, Any]:
        item = self.base[k]
        hr = item["hr"]
        if hr.shape[0] != 3:
            raise ValueError(f"colorization needs colour images; {item.get('name')} has {hr.shape[0]} channel(s)")
        gray = rgb_to_gray((hr + 1.0) * 0.5, axis=0)  # (H, W) in [0, 1]
        return {"hr": hr, "lr": (gray * 2.0 - 1.0)[None].float(), "name": item["name"]}


def colorization_datasets(cfg: DataConfig, *, seed: int) -> tuple[ColorizationItems, ColorizationItems | None]:
    """(training, validation) datasets of a colorize run: random colour crops of `data.train` (no
    degradation is computed: the HR-folder dataset runs in its `device_degrade` mode, which yields crops
    only), and `data.val_count` centre crops of the validation sources; "lr" is each crop's grey."""
    import dataclasses

    from ldsr.data.datasets import build_train_dataset, build_val_dataset

    if cfg.paired:
        raise ValueError("data.paired: colorization trains on colour folders (data.train), not on SR pairs")
    if cfg.hr_size % 2:
        raise ValueError(f"data.hr_size must be even for colorization, got {cfg.hr_size}")
    # The SR datasets need a scale; 2 divides hr_size. Their LR is never made (train) or dropped (val).
    train_cfg = dataclasses.replace(cfg, device_degrade=True, degradation="bicubic", degradation_weights={})
    val_cfg = dataclasses.replace(cfg, degradation="bicubic", val_degradation=None, degradation_weights={})
    base = build_train_dataset(train_cfg, channels=3, scale=2, seed=seed)
    val = build_val_dataset(val_cfg, channels=3, scale=2, seed=seed)
    return ColorizationItems(base), (ColorizationItems(val) if val is not None else None)
