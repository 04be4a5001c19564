"""MATLAB-compatible imresize: exact properties and an independent per-pixel formulation."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from ldsr.data.resize import imresize, output_size

# --------------------------------------------------------------------------------------------------------
# An independent, loop-based formulation of MATLAB's imresize written from the definition: for output
# sample j (1-based) at input coordinate u = j/s + (1 - 1/s)/2, sum k(u - i) * x[mirror(i)] over every
# integer i where the (possibly stretched) kernel is non-zero, divided by the sum of the weights.
# --------------------------------------------------------------------------------------------------------


def _keys(t: float) -> float:
    a = -0.5
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t <= 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def _tri(t: float) -> float:
    return max(0.0, 1.0 - abs(t))


def _mirror(i: int, n: int) -> int:
    # 1-based index into the symmetric extension ... 2 1 | 1 2 ... n | n n-1 ...; returns 0-based.
    while i < 1 or i > n:
        i = 1 - i if i < 1 else 2 * n + 1 - i
    return i - 1


def _weights_1d(n_in: int, n_out: int, s: float, kern, support: float, aa: bool) -> list[list[tuple[int, float]]]:
    rows = []
    stretch = aa and s < 1
    for j in range(1, n_out + 1):
        u = j / s + 0.5 * (1 - 1 / s)
        half = (support / s if stretch else support) / 2
        taps = []
        for i in range(math.floor(u - half) - 1, math.ceil(u + half) + 2):
            w = s * kern(s * (u - i)) if stretch else kern(u - i)
            if w != 0.0:
                taps.append((i, w))
        total = sum(w for _, w in taps)
        rows.append([(_mirror(i, n_in), w / total) for i, w in taps])
    return rows


def _reference(x: np.ndarray, out_hw: tuple[int, int], scales: tuple[float, float], kern, support, aa) -> np.ndarray:
    wy = _weights_1d(x.shape[0], out_hw[0], scales[0], kern, support, aa)
    wx = _weights_1d(x.shape[1], out_hw[1], scales[1], kern, support, aa)
    out = np.zeros(out_hw)
    for r in range(out_hw[0]):
        for c in range(out_hw[1]):
            out[r, c] = sum(a * b * x[i, k] for i, a in wy[r] for k, b in wx[c])
    return out


X79 = np.arange(63, dtype=np.float64).reshape(7, 9) ** 1.5 % 17 / 17.0  # a fixed, non-smooth 7x9 array


@pytest.mark.parametrize(
    "scale,size,kernel,antialias",
    [
        (0.5, None, "bicubic", True),
        (1 / 3, None, "bicubic", True),
        (1 / 3, None, "bicubic", False),
        (2.0, None, "bicubic", True),
        (1.7, None, "bicubic", True),
        (0.6, None, "bilinear", True),
        (3.0, None, "bilinear", True),
        (None, (4, 13), "bicubic", True),
        (None, (5, 3), "bilinear", True),
    ],
)
def test_matches_independent_formulation(scale, size, kernel, antialias):
    kern, support = (_keys, 4.0) if kernel == "bicubic" else (_tri, 2.0)
    if scale is not None:
        out_hw = (math.ceil(7 * scale - 1e-9), math.ceil(9 * scale - 1e-9))
        scales = (scale, scale)
    else:
        out_hw = size
        scales = (size[0] / 7, size[1] / 9)
    ref = _reference(X79, out_hw, scales, kern, support, antialias)
    got = imresize(X79, scale, size=size, kernel=kernel, antialias=antialias)
    assert got.shape == out_hw
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kernel", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.5, 1.5, 2.0, 4.0])
def test_constant_stays_constant(kernel, scale):
    x = np.full((24, 30, 3), 0.3125, dtype=np.float32)
    y = imresize(x, scale, kernel=kernel)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, 0.3125, atol=1e-6)


def test_shapes_down_then_up():
    x = np.random.default_rng(0).random((64, 48, 3)).astype(np.float32)
    down = imresize(x, 0.25)
    assert down.shape == (16, 12, 3)
    assert imresize(down, 4).shape == (64, 48, 3)
    assert imresize(x[..., 0], 0.5).shape == (32, 24)
    assert imresize(np.zeros((30, 33)), 1 / 3).shape == (10, 11)
    assert imresize(np.zeros((10, 10)), 0.35).shape == (4, 4)  # ceil(3.5)
    assert imresize(np.zeros((9, 9, 1)), size=(7, 5)).shape == (7, 5, 1)
    assert output_size((255, 49), 1 / 3) == (85, 17)


@pytest.mark.parametrize("kernel", ["bicubic", "bilinear"])
@pytest.mark.parametrize("antialias", [True, False])
def test_ramp_downscale_matches_closed_form(kernel, antialias):
    # A symmetric, normalised kernel reproduces a linear ramp: output (i, j) (0-based) sits at input
    # coordinate 2i + 0.5, so away from the mirrored borders the result is the ramp evaluated there.
    i, j = np.mgrid[0:40, 0:40].astype(np.float64)
    x = 0.01 * i + 0.02 * j + 0.1
    y = imresize(x, 0.5, kernel=kernel, antialias=antialias)
    ii, jj = np.mgrid[0:20, 0:20].astype(np.float64)
    expected = 0.01 * (2 * ii + 0.5) + 0.02 * (2 * jj + 0.5) + 0.1
    np.testing.assert_allclose(y[3:-3, 3:-3], expected[3:-3, 3:-3], atol=1e-12)


@pytest.mark.parametrize(
    "kernel,scale",
    # nearest at 1/2 is excluded: every centre falls on a tie, which the half-open box breaks to one side.
    [(k, s) for k in ("bicubic", "bilinear") for s in (0.5, 1 / 3, 2.0)] + [("nearest", 1 / 3), ("nearest", 2.0)],
)
def test_flip_symmetry(kernel, scale):
    # When in * scale is an integer the sampling grid is symmetric, so resizing commutes with flips.
    x = np.random.default_rng(1).random((12, 18))
    y = imresize(x, scale, kernel=kernel)
    np.testing.assert_allclose(imresize(x[::-1], scale, kernel=kernel), y[::-1], atol=1e-12)
    np.testing.assert_allclose(imresize(x[:, ::-1], scale, kernel=kernel), y[:, ::-1], atol=1e-12)


def test_nearest_picks_the_right_pixels():
    x = np.arange(48, dtype=np.float64).reshape(6, 8)
    np.testing.assert_array_equal(imresize(x, 2, kernel="nearest"), np.repeat(np.repeat(x, 2, 0), 2, 1))
    # Down by 2: output j (1-based) sits at 2j - 0.5, the box [-0.5, 0.5) takes input 2j (1-based).
    np.testing.assert_array_equal(imresize(x, 0.5, kernel="nearest"), x[1::2, 1::2])
    # Down by 3: centres at 3j - 1, i.e. 0-based 1, 4, 7, ...
    y = np.arange(81, dtype=np.float64).reshape(9, 9)
    np.testing.assert_array_equal(imresize(y, 1 / 3, kernel="nearest"), y[1::3, 1::3])


def test_scale_one_is_identity():
    x = np.random.default_rng(2).random((5, 7, 3)).astype(np.float32)
    for kernel in ("bicubic", "bilinear", "nearest"):
        np.testing.assert_array_equal(imresize(x, 1.0, kernel=kernel), x)


def test_antialias_lowpasses_a_checkerboard():
    # A Nyquist checkerboard aliases to a flat but wrong image without antialiasing; with it, the kernel
    # averages both phases so the result is close to the mean 0.5.
    # At 1/3 the output centres fall on input pixels, so without antialiasing the samples are 0 or 1.
    x = (np.indices((36, 36)).sum(0) % 2).astype(np.float64)
    y = imresize(x, 1 / 3, antialias=True)
    assert np.abs(y[2:-2, 2:-2] - 0.5).max() < 0.01
    z = imresize(x, 1 / 3, antialias=False)
    np.testing.assert_allclose(np.abs(z[2:-2, 2:-2] - 0.5), 0.5, atol=1e-12)


def test_errors():
    x = np.zeros((8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(x)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(x, 0.5, size=(4, 4))
    with pytest.raises(ValueError, match="floating-point"):
        imresize(np.zeros((8, 8), dtype=np.uint8), 0.5)
    with pytest.raises(ValueError, match="kernel"):
        imresize(x, 0.5, kernel="lanczos")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        imresize(x, -1.0)


def test_fast_enough():
    x = np.random.default_rng(3).random((512, 512, 3)).astype(np.float32)
    imresize(x, 0.25)
    t = time.perf_counter()
    imresize(x, 0.25)
    assert time.perf_counter() - t < 0.5  # ~5 ms on the 2-core dev machine; generous for slow CI
