"""Statistics of a rating study: UP share and mean score with crossed bootstrap intervals, rater consistency,
and Krippendorff's alpha.

Krippendorff's alpha (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"): with the coincidence
matrix o_ck = sum over units u with m_u >= 2 values of (number of ordered pairs (c, k) of values from
different coders in u) / (m_u - 1), the marginals n_c = sum_k o_ck and n = sum_c n_c,

    alpha = 1 - (n - 1) * sum_ck o_ck d2_ck / sum_ck n_c n_k d2_ck

with the squared difference d2 of the level of measurement:
nominal (c != k), interval ((c - k)^2), ordinal ((sum_{g=c..k} n_g - (n_c + n_k) / 2)^2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Level = Literal["nominal", "ordinal", "interval"]


def krippendorff_alpha(data: np.ndarray, level: Level = "ordinal") -> float:
    """Krippendorff's alpha of a (coders, units) array of values with NaN for missing; NaN when undefined.

    Units with fewer than two values are not pairable and are dropped (as Krippendorff does).
    """
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"data must be (coders, units), got shape {x.shape}")
    values = np.unique(x[np.isfinite(x)])
    if values.size == 0:
        return float("nan")
    # counts[u, c]: how many coders gave unit u the value values[c]     (U, V)
    idx = np.searchsorted(values, np.where(np.isfinite(x), x, values[0]))
    counts = np.zeros((x.shape[1], values.size))
    for coder in range(x.shape[0]):
        ok = np.isfinite(x[coder])
        np.add.at(counts, (np.nonzero(ok)[0], idx[coder, ok]), 1.0)
    m = counts.sum(axis=1)
    counts, m = counts[m >= 2], m[m >= 2]
    if counts.size == 0:
        return float("nan")
    # o_ck = sum_u (n_uc n_uk - [c == k] n_uc) / (m_u - 1)     (V, V)
    o = np.einsum("uc,uk->ck", counts / (m - 1)[:, None], counts) - np.diag((counts / (m - 1)[:, None]).sum(0))
    n_c = o.sum(axis=1)
    n = n_c.sum()
    d2 = _delta2(values, n_c, level)
    expected = (np.outer(n_c, n_c) * d2).sum()
    if expected == 0:
        return float("nan")  # one value only: no variation to agree on
    return float(1.0 - (n - 1) * (o * d2).sum() / expected)


def _delta2(values: np.ndarray, n_c: np.ndarray, level: Level) -> np.ndarray:
    """The (V, V) squared difference of `level` between the observed values."""
    if level == "nominal":
        return 1.0 - np.eye(values.size)
    if level == "interval":
        return (values[:, None] - values[None, :]) ** 2
    if level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(n_c)])  # cum[i] = sum_{g < i} n_g
        lo = np.minimum.outer(np.arange(values.size), np.arange(values.size))
        hi = np.maximum.outer(np.arange(values.size), np.arange(values.size))
        between = cum[hi + 1] - cum[lo]  # sum_{g = c..k} n_g
        return (between - (n_c[:, None] + n_c[None, :]) / 2.0) ** 2
    raise ValueError(f"level must be nominal, ordinal or interval, got {level!r}")


def crossed_bootstrap(scores: np.ndarray, stat: Literal["mean", "up"], *, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:  # fmt: skip
    """The statistic of a (raters, images) score array (NaN: not rated) and its percentile interval.

    Raters and images are resampled independently with replacement (a two-way crossed bootstrap), so the
    interval covers both who rated and what was rated. "up": share of scores 3 or 4; "mean": mean score.
    Returns (estimate, low, high); the interval is (nan, nan) with fewer than two raters or images.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be (raters, images), got shape {s.shape}")
    valid = np.isfinite(s)
    if not valid.any():
        return float("nan"), float("nan"), float("nan")
    value = np.where(valid, (s >= 3).astype(np.float64) if stat == "up" else s, 0.0)
    weight = valid.astype(np.float64)
    estimate = float(value.sum() / weight.sum())
    n_r, n_i = s.shape
    if n_r < 2 or n_i < 2 or n_boot < 1:
        return estimate, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # resampling = integer weights: how often each rater / image is drawn     (B, R), (B, I)
    w_r = np.stack([np.bincount(rng.integers(0, n_r, n_r), minlength=n_r) for _ in range(n_boot)]).astype(float)
    w_i = np.stack([np.bincount(rng.integers(0, n_i, n_i), minlength=n_i) for _ in range(n_boot)]).astype(float)
    num = np.einsum("br,ri,bi->b", w_r, value, w_i)
    den = np.einsum("br,ri,bi->b", w_r, weight, w_i)
    boot = num[den > 0] / den[den > 0]
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return estimate, float(low), float(high)


def consistency(first: Sequence[int], second: Sequence[int]) -> dict[str, float]:
    """Agreement of a rater with themself on repeated trials: exact share, within-one share, mean |difference|."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"first and second differ in length: {a.shape} vs {b.shape}")
    if a.size == 0:
        return {"pairs": 0, "exact": float("nan"), "within_one": float("nan"), "mean_abs_diff": float("nan")}
    d = np.abs(a - b)
    return {"pairs": int(a.size), "exact": float(np.mean(d == 0)), "within_one": float(np.mean(d <= 1)),
            "mean_abs_diff": float(d.mean())}  # fmt: skip
