"""Colour spaces (ldsr.data.color) and colorization measures (ldsr.evaluation.colorization): CIELAB round trips,
exact luminance recombination, chroma quantisation, CIEDE2000 on Sharma et al.'s published pairs,
colourfulness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldsr.data.color import (
    ab_bins,
    gray_to_l,
    l_to_gray,
    lab_to_rgb,
    rebalance_weights,
    recombine,
    rgb_to_gray,
    rgb_to_lab,
    smooth_prior,
)
from ldsr.evaluation.colorization import ciede2000_map, colourfulness, delta_e_map, luminance_error_map

# Sharma, Wu & Dalal 2005, "The CIEDE2000 color-difference formula: implementation notes, supplementary test
# data, and mathematical observations", Table 1: (L1, a1, b1, L2, a2, b2, dE00).
SHARMA = np.array([
    [50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425],
    [50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615],
    [50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412],
    [50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000],
    [50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000],
    [50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000],
    [50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669],
    [50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669],
    [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792],
    [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792],
    [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195],
    [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195],
    [50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045],
    [50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045],
    [50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461],
    [50.0000, -0.0010, 2.4900, 50.0000, 0.0012, -2.4900, 4.7461],
    [50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065],
    [50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492],
    [50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977],
    [50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030],
    [50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535],
    [50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000],
    [50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000],
    [50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000],
    [50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000],
    [60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644],
    [63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630],
    [61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731],
    [35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645],
    [22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373],
    [36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146],
    [90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441],
    [90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381],
    [6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377],
    [2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082],
])  # fmt: skip


def test_ciede2000_matches_sharma_table() -> None:
    got = ciede2000_map(SHARMA[:, :3], SHARMA[:, 3:6])
    # the table gives 4 decimals: every pair within half a unit of the last one
    np.testing.assert_allclose(got, SHARMA[:, 6], atol=5e-5, rtol=0)
    np.testing.assert_allclose(ciede2000_map(SHARMA[:, 3:6], SHARMA[:, :3]), got, atol=1e-12)  # symmetric
    assert ciede2000_map(SHARMA[:1, :3], SHARMA[:1, :3])[0] == 0.0


def test_lab_reference_colours_and_round_trip() -> None:
    # sRGB primaries in CIELAB (D65), the usual published values
    lab = rgb_to_lab(np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1, 1], [0, 0, 0]]))
    np.testing.assert_allclose(lab[0], [53.24, 80.09, 67.20], atol=0.02)
    np.testing.assert_allclose(lab[1], [87.73, -86.18, 83.18], atol=0.02)
    np.testing.assert_allclose(lab[2], [32.30, 79.19, -107.86], atol=0.02)
    np.testing.assert_allclose(lab[3], [100, 0, 0], atol=1e-9)
    np.testing.assert_allclose(lab[4], [0, 0, 0], atol=1e-9)
    rgb = np.random.default_rng(0).random((16, 16, 3))
    np.testing.assert_allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-12)
    # torch, channels on axis 1, agrees with numpy
    t = torch.from_numpy(np.moveaxis(rgb, -1, 0)[None])
    np.testing.assert_allclose(np.moveaxis(rgb_to_lab(t, axis=1)[0].numpy(), 0, -1), rgb_to_lab(rgb), atol=1e-10)


def test_grey_luminance_and_rgb_to_grey() -> None:
    g = np.linspace(0, 1, 257)
    lab = rgb_to_lab(np.stack([g, g, g], axis=-1))
    np.testing.assert_allclose(lab[:, 1:], 0.0, atol=1e-10)  # greys are achromatic
    np.testing.assert_allclose(lab[:, 0], gray_to_l(g), atol=1e-10)
    np.testing.assert_allclose(l_to_gray(gray_to_l(g)), g, atol=1e-12)
    rgb = np.random.default_rng(1).random((8, 8, 3))
    np.testing.assert_allclose(gray_to_l(rgb_to_gray(rgb)), rgb_to_lab(rgb)[..., 0], atol=1e-10)


@pytest.mark.parametrize("bits", [8, 16])
def test_recombine_keeps_luminance_exactly(bits: int) -> None:
    """Any chroma, even far outside the gamut: L* of the output is the grey's (float64), in [0, 1]."""
    rng = np.random.default_rng(bits)
    levels = 2**bits - 1
    gray = rng.integers(0, levels + 1, (32, 32)) / levels  # an 8- or 16-bit grey image
    gray[0, :4] = [0.0, 1.0, 1 / levels, 1 - 1 / levels]  # black, white and their neighbours
    ab = rng.uniform(-150, 150, (32, 32, 2))
    rgb = recombine(gray_to_l(gray), ab)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert luminance_error_map(rgb, gray).max() < 1e-9
    # in-gamut chroma is kept as given, out-of-gamut chroma shortened along its hue
    lab = rgb_to_lab(rgb)
    scale = np.hypot(lab[..., 1], lab[..., 2]) / np.maximum(np.hypot(ab[..., 0], ab[..., 1]), 1e-12)
    assert scale.max() <= 1.0 + 1e-6
    mid = (gray > 0.3) & (gray < 0.7)
    small = recombine(gray_to_l(gray), ab * 0.05)
    np.testing.assert_allclose(rgb_to_lab(small)[mid][:, 1:], (ab * 0.05)[mid], atol=1e-8)


def test_recombine_torch_batch() -> None:
    lum = torch.rand(2, 8, 8, dtype=torch.float64) * 100
    ab = torch.randn(2, 2, 8, 8, dtype=torch.float64) * 50
    rgb = recombine(lum, ab, axis=1)
    assert rgb.shape == (2, 3, 8, 8)
    assert (rgb_to_lab(rgb, axis=1)[:, 0] - lum).abs().max() < 1e-9


def test_ab_bins_cover_the_srgb_gamut() -> None:
    bins = ab_bins()
    # Zhang et al. report 313 in-gamut bins of side 10 (their gamut test differs); ours: 10-multiples that
    # some sRGB colour rounds to, within the sRGB ab extremes
    assert 240 <= len(bins) <= 313
    assert np.all(bins % 10 == 0)
    assert bins[:, 0].min() == -90 and bins[:, 0].max() == 100 and bins[:, 1].min() == -110
    # every colour of the RGB cube is within half a bin diagonal of a centre
    ab = rgb_to_lab(np.random.default_rng(2).random((2000, 3)))[:, 1:]
    d = np.sqrt(((ab[:, None, :] - bins[None]) ** 2).sum(-1)).min(1)
    assert d.max() <= 5 * np.sqrt(2) + 1e-9


def test_rebalance_weights_favour_rare_bins() -> None:
    bins = ab_bins()
    counts = np.zeros(len(bins))
    counts[0], counts[1], counts[-1] = 1000.0, 10.0, 1.0
    prior = smooth_prior(counts, bins)
    assert prior.sum() == pytest.approx(1.0)
    w = rebalance_weights(prior, 0.5)
    assert float((prior * w).sum()) == pytest.approx(1.0)  # E_p[w] = 1 (Zhang et al. eq. 4)
    assert w[0] < w[1] < w[len(bins) // 2]  # the common bin weighs least, a never-seen one most
    np.testing.assert_allclose(rebalance_weights(prior, 0.0), 1.0 / prior / len(bins))  # no mixing: 1 / (Q p)


def test_colourfulness_and_delta_e() -> None:
    grey = np.full((16, 16, 3), 0.5)
    assert colourfulness(grey) == 0.0
    rng = np.random.default_rng(3)
    vivid = rng.random((16, 16, 3))
    dull = 0.5 + 0.2 * (vivid - 0.5)
    assert colourfulness(vivid) > colourfulness(dull) > 0.0
    # Hasler & Suesstrunk on 0..255: a pure red image has rg = 255, yb = 127.5, no spread
    assert colourfulness(np.tile([1.0, 0.0, 0.0], (4, 4, 1))) == pytest.approx(0.3 * np.hypot(255, 127.5))
    assert delta_e_map(vivid, vivid).max() == 0.0
    assert delta_e_map(dull, vivid).mean() > 1.0
