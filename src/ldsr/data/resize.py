"""MATLAB-compatible `imresize` for float images (bicubic with antialiasing, bilinear, nearest).

The resize is separable: along each axis an output sample at 1-based position `j` sits at the input
coordinate `u = j / s + (1 - 1/s) / 2` (pixel centres aligned, `s` = scale of that axis), and is the
weighted sum of the `P` input samples around `u`. Weights and (mirrored) indices are precomputed once per
axis, as `(out, P)` arrays, and applied with one gather and one weighted sum.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np

Kernel = Literal["bicubic", "bilinear", "nearest"]


def _cubic(x: np.ndarray) -> np.ndarray:
    # Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic'), support [-2, 2]:
    #   (a+2)|x|^3 - (a+3)|x|^2 + 1          for |x| <= 1
    #   a|x|^3 - 5a|x|^2 + 8a|x| - 4a        for 1 < |x| <= 2
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    inner = 1.5 * ax3 - 2.5 * ax2 + 1.0
    outer = -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    return np.where(ax <= 1.0, inner, np.where(ax <= 2.0, outer, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
    # Linear interpolation kernel, support [-1, 1].
    return np.clip(1.0 - np.abs(x), 0.0, None)


def _box(x: np.ndarray) -> np.ndarray:
    # Nearest neighbour: the half-open box [-0.5, 0.5), so ties go to the right-hand sample as in MATLAB.
    return ((x >= -0.5) & (x < 0.5)).astype(np.float64)


# kernel function and its support width (in input pixels, before antialias stretching)
_KERNELS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "bicubic": (_cubic, 4.0),
    "bilinear": (_triangle, 2.0),
    "nearest": (_box, 1.0),
}


def axis_weights(
    in_len: int, out_len: int, scale: float, kernel: Kernel, antialias: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Weights `(out_len, P)` and 0-based input indices `(out_len, P)` of one axis, as MATLAB computes them."""
    fn, width = _KERNELS[kernel]
    h: Callable[[np.ndarray], np.ndarray] = fn
    if scale < 1.0 and antialias:
        # Down-scaling with antialiasing: the kernel is stretched by 1/scale (a low-pass filter matched to
        # the output grid): h(x) = scale * k(scale * x), support width / scale.
        def h(x: np.ndarray) -> np.ndarray:
            return scale * fn(scale * x)

        width = width / scale
    # 1-based output positions and the input coordinate each maps to.
    j = np.arange(1, out_len + 1, dtype=np.float64)
    u = j / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # (out, P), 1-based
    w = h(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    # Symmetric boundary: the input is mirrored with its edge sample repeated (..., 2, 1, 1, 2, ..., n, n,
    # n-1, ...), i.e. index i maps through a period-2n reflection.
    i0 = (idx.astype(np.int64) - 1) % (2 * in_len)
    i0 = np.where(i0 < in_len, i0, 2 * in_len - 1 - i0)
    # Drop taps that carry no weight for any output sample (MATLAB does the same; it only saves work).
    keep = np.any(w != 0.0, axis=0)
    return w[:, keep], i0[:, keep]


def _resize_axis(x: np.ndarray, axis: int, out_len: int, scale: float, kernel: Kernel, antialias: bool) -> np.ndarray:
    w, idx = axis_weights(x.shape[axis], out_len, scale, kernel, antialias)
    xm = np.moveaxis(x, axis, 0)  # (in, ...)
    # out[o] = sum_p w[o, p] * x[idx[o, p]], accumulated tap by tap so that no (out, P, ...) temporary is
    # built; each step is one gather of `out` rows and one broadcast multiply-add.
    tail = (1,) * (xm.ndim - 1)
    out = xm[idx[:, 0]] * w[:, 0].reshape((-1,) + tail)
    for p in range(1, idx.shape[1]):
        out += xm[idx[:, p]] * w[:, p].reshape((-1,) + tail)
    return np.moveaxis(out, 0, axis)


def output_size(in_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """MATLAB's output size `ceil(in * scale)` per axis (a product within 1e-9 of an integer counts as it)."""
    # 49 * (1/49) is 0.9999999999999999 in floating point; without the tolerance a product that should be
    # exactly an integer could round up one pixel too far.
    h, w = (max(1, math.ceil(n * scale - 1e-9)) for n in in_size)
    return h, w


def imresize(
    x: np.ndarray,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    kernel: Kernel = "bicubic",
    antialias: bool = True,
) -> np.ndarray:
    """Resize a float `(H, W)` or `(H, W, C)` array like MATLAB's `imresize`.

    Give exactly one of `scale` (output `ceil(H*scale) x ceil(W*scale)`; the kernel uses `scale` itself) or
    `size=(h, w)` (each axis uses the scale `out/in`). `antialias` stretches the kernel when down-scaling;
    as in MATLAB's defaults it has no effect on `nearest`. The result has the input's float dtype and is
    not clipped (bicubic over- and undershoots at edges).
    """
    if not isinstance(x, np.ndarray) or x.ndim not in (2, 3):
        raise ValueError(f"imresize expects an (H, W) or (H, W, C) array, got shape {getattr(x, 'shape', None)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"imresize expects a floating-point array, got {x.dtype}; convert to float32 in [0, 1]")
    if kernel not in _KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {sorted(_KERNELS)}")
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    in_hw = (x.shape[0], x.shape[1])
    if min(in_hw) < 1:
        raise ValueError(f"cannot resize an empty array of shape {x.shape}")
    if scale is not None:
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        out_hw = output_size(in_hw, scale)
        scales = (float(scale), float(scale))
    else:
        assert size is not None
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be two positive integers (h, w), got {size}")
        out_hw = (int(size[0]), int(size[1]))
        scales = (out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    aa = antialias and kernel != "nearest"
    y = x.astype(np.float64, copy=False)
    # MATLAB resizes the axis with the smaller scale first (less work); the result is the same up to
    # floating-point rounding because the two 1-D operators commute.
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        if out_hw[axis] == in_hw[axis] and scales[axis] == 1.0:
            continue  # identity: every kernel is 1 at 0 and 0 at the other integers
        y = _resize_axis(y, axis, out_hw[axis], scales[axis], kernel, aa)
    return y.astype(x.dtype, copy=False)
