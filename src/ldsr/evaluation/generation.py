"""Measures of unconditional generation (`ldsr evaluate-generation`): how close the samples are to held-out real
images, how much of the real variety they cover, and whether they copy training images.

Set-level measures take (N, D) feature arrays of one declared feature space (`ldsr.evaluation.features`):
- `frechet_distance`: ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) (Heusel et al. 2017); FID when the
  features are the FID Inception-v3's.
- `kid_subsets`: the unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3 per random subset
  (Binkowski et al. 2018); callers report the mean (KID) and the std over subsets.
- `precision_recall_masks`: k-NN manifold membership (Kynkaanniemi et al. 2019): a fake sample counts for
  precision when it lies inside some real sample's k-NN ball, a real one for recall when inside some fake
  sample's ball; callers take the means.
- `nearest_neighbours`: each sample's nearest training image (index, distance) in pixels or features;
  `near_copy_mask` marks the samples closer than a stated pixel RMSE threshold.
- `intensity_wasserstein`: per channel, the 1-D Wasserstein-1 distance between the pooled intensity
  distributions of two sets (the area between their CDFs, in [0, 1] intensity units).
Per-sample and per-subset functions return arrays (maps); only the two set-to-set distances are scalars.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_COPY_RMSE = 0.05  # near-copy: pixel RMSE (intensities in [0, 1], 64 x 64 grey) to a training image below this
PIXEL_SIDE = 64  # pixel-space comparisons run on images resized to this side


def _check_features(*sets: np.ndarray) -> None:
    for f in sets:
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"features must be (N, D) with N >= 2, got shape {f.shape}")
    if len({f.shape[1] for f in sets}) != 1:
        raise ValueError(f"feature sets have different dimensions: {[f.shape[1] for f in sets]}")


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance of Gaussians fitted to two (N, D) feature sets (sample covariances, N - 1)."""
    from scipy import linalg

    _check_features(real, fake)
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)  # (D, D)
    with warnings.catch_warnings():  # fewer samples than dimensions: singular; checked just below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = np.asarray(linalg.sqrtm(s1 @ s2))
    if not np.isfinite(covmean).all():  # singular product: offset the diagonals (as pytorch-fid)
        eps = 1e-6 * np.eye(s1.shape[0])
        covmean = np.asarray(linalg.sqrtm((s1 + eps) @ (s2 + eps)))
    covmean = np.real(covmean)  # tiny imaginary parts are numerical noise
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(d, 0.0)


def kid_subsets(
    real: np.ndarray, fake: np.ndarray, *, subsets: int = 50, subset_size: int = 100, seed: int = 0
) -> np.ndarray:
    """(subsets,) unbiased MMD^2 estimates, k(x, y) = (x.y / D + 1)^3, on random subsets of min(subset_size,
    N_real, N_fake) samples of each set."""
    _check_features(real, fake)
    m = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    d = real.shape[1]
    out = np.empty(subsets)
    for s in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3  # (m, m) each
        # unbiased: the diagonals k(x_i, x_i) are left out of the within-set means
        out[s] = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2.0 * kxy.mean()
    return out


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Na, Nb) Euclidean distances."""
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row of x to its k-th nearest other row."""
    d = _pairwise(x, x)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself (distance 0)


def precision_recall_masks(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(fake_in_real (N_fake,) bool, real_in_fake (N_real,) bool): k-NN manifold membership; means are the
    improved precision and recall of Kynkaanniemi et al. 2019 (k = 3 there)."""
    _check_features(real, fake)
    if k < 1 or k >= min(len(real), len(fake)):
        raise ValueError(f"k must be in [1, min(N_real, N_fake) - 1], got {k} for {len(real)}, {len(fake)}")
    r_real, r_fake = _knn_radii(real, k), _knn_radii(fake, k)
    d = _pairwise(fake, real)  # (N_fake, N_real)
    fake_in_real: np.ndarray = np.asarray((d <= r_real[None, :]).any(axis=1))
    real_in_fake: np.ndarray = np.asarray((d.T <= r_fake[None, :]).any(axis=1))
    return fake_in_real, real_in_fake


def nearest_neighbours(samples: np.ndarray, train: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(index (N,), distance (N,)) of each sample's nearest training row (Euclidean), in chunks of samples."""
    if samples.ndim != 2 or train.ndim != 2 or samples.shape[1] != train.shape[1] or not len(train):
        raise ValueError(f"expected (N, D) samples and (M, D) training rows, got {samples.shape}, {train.shape}")
    idx, dist = np.empty(len(samples), dtype=np.int64), np.empty(len(samples))
    for i in range(0, len(samples), chunk):
        d = _pairwise(samples[i : i + chunk], train)
        idx[i : i + chunk] = d.argmin(1)
        dist[i : i + chunk] = d.min(1)
    return idx, dist


def pixel_vectors(images: Sequence[np.ndarray], side: int = PIXEL_SIDE) -> np.ndarray:
    """(N, side * side) grey intensities in [0, 1] of images resized to side x side (mean of the channels)."""
    from ldsr.evaluation.features import to_batch

    return to_batch(images, side).mean(dim=1).flatten(1).double().numpy()


def near_copy_mask(
    pixel_distance: np.ndarray, side: int = PIXEL_SIDE, threshold: float = DEFAULT_COPY_RMSE
) -> np.ndarray:
    """Samples whose pixel RMSE to their nearest training image (the Euclidean distance of `pixel_vectors`
    / side) is below `threshold`."""
    return pixel_distance / side < threshold


def intensity_wasserstein(real: Sequence[np.ndarray], fake: Sequence[np.ndarray]) -> np.ndarray:
    """(C,) 1-D Wasserstein-1 distance per channel between the pooled pixel intensities of two sets."""
    from scipy.stats import wasserstein_distance

    channels = {np.asarray(a).reshape(*np.shape(a)[:2], -1).shape[2] for a in (*real, *fake)}
    if len(channels) != 1:
        raise ValueError(f"sets mix channel counts {sorted(channels)}")
    c = channels.pop()
    pooled = [np.concatenate([np.asarray(a).reshape(-1, c) for a in s]) for s in (real, fake)]  # (P, C) each
    return np.array([wasserstein_distance(pooled[0][:, j], pooled[1][:, j]) for j in range(c)])


# ----------------------------------------------------------------------------------------------------------
# the folder job


@dataclass
class GenerationReport:
    """Everything `evaluate_generation` measured, in one JSON-serialisable record."""

    real: str
    fake: str
    train: str | None
    n_real: int
    n_fake: int
    n_train: int
    spaces: dict[str, dict[str, Any]] = field(default_factory=dict)  # space name -> its distances
    intensity_w1: list[float] = field(default_factory=list)
    memorisation: dict[str, Any] | None = None
    run: dict[str, Any] | None = None  # generation_run.json of the fake folder (params, seconds, memory)
    skipped: list[str] = field(default_factory=list)  # "<path>: <reason>" of unreadable files


def set_distances(space: Any, real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, Any]:
    """Frechet distance, KID (mean, std over subsets), precision and recall in one feature space."""
    kid = kid_subsets(real, fake)
    prec, rec = precision_recall_masks(real, fake, k=min(k, len(real) - 1, len(fake) - 1))
    return {
        "space": space.name, "version": space.version, "description": space.description,
        "frechet": frechet_distance(real, fake), "kid": float(kid.mean()), "kid_std": float(kid.std()),
        "precision": float(prec.mean()), "recall": float(rec.mean()), "k": min(k, len(real) - 1, len(fake) - 1),
    }  # fmt: skip


def _read_folder(folder: Path, skipped: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """The readable images of `folder` (recursive) and their relative names; each unreadable file adds one
    "<path>: <reason>" line to `skipped` and the rest go on."""
    from ldsr.io import ImageError, list_images, read_image

    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    images, names = [], []
    for f in list_images(folder):
        try:
            images.append(read_image(f)[0])
        except ImageError as e:
            skipped.append(str(e))
            continue
        names.append(str(f.relative_to(folder)))
    if len(images) < 2:
        raise ValueError(f"{folder}: needs at least 2 readable images, found {len(images)}")
    return images, names


def memorisation(
    samples: Sequence[np.ndarray], sample_feats: np.ndarray, train: Sequence[np.ndarray], train_feats: np.ndarray,
    threshold: float = DEFAULT_COPY_RMSE,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Summary, then per sample: nearest training index and distance in pixels (RMSE) and in features."""
    p_idx, p_dist = nearest_neighbours(pixel_vectors(samples), pixel_vectors(train))
    f_idx, f_dist = nearest_neighbours(sample_feats, train_feats)
    rmse = p_dist / PIXEL_SIDE
    copies = near_copy_mask(p_dist, threshold=threshold)
    summary = {
        "near_copy_share": float(copies.mean()), "threshold_rmse": threshold, "pixel_side": PIXEL_SIDE,
        "median_nn_rmse": float(np.median(rmse)), "min_nn_rmse": float(rmse.min()),
        "median_nn_feature_distance": float(np.median(f_dist)),
        "same_neighbour_share": float((p_idx == f_idx).mean()),
    }  # fmt: skip
    return summary, p_idx, rmse, f_idx, f_dist


def evaluate_generation(
    real_dir: str | Path, fake_dir: str | Path, out_dir: str | Path, *, train_dir: str | Path | None = None,
    spaces: Sequence[Any] = (), copy_threshold: float = DEFAULT_COPY_RMSE, pairs: int = 8,
) -> GenerationReport:  # fmt: skip
    """Measure the images of `fake_dir` against `real_dir` (held-out) in every feature space of `spaces` (the
    first is the one used for memorisation), and against `train_dir` for memorisation. Writes generation.json,
    generation.md, nearest.csv and closest_pairs.png (with a training folder) to `out_dir`."""
    real_dir, fake_dir, out = Path(real_dir), Path(fake_dir), Path(out_dir)
    if not spaces:
        raise ValueError("no feature space given")
    skipped: list[str] = []
    real, _ = _read_folder(real_dir, skipped)
    fake, fake_names = _read_folder(fake_dir, skipped)
    train, train_names = _read_folder(Path(train_dir), skipped) if train_dir is not None else ([], [])
    report = GenerationReport(str(real_dir), str(fake_dir), None if train_dir is None else str(train_dir),
                              len(real), len(fake), len(train), skipped=skipped)  # fmt: skip
    feats: dict[str, np.ndarray] = {}
    for space in spaces:
        r, f = space(real), space(fake)
        feats[space.name] = f
        report.spaces[space.name] = set_distances(space, r, f)
    report.intensity_w1 = [float(v) for v in intensity_wasserstein(real, fake)]
    run_file = fake_dir / "generation_run.json"
    report.run = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else None
    if train:
        first = spaces[0]
        summary, p_idx, rmse, f_idx, f_dist = memorisation(fake, feats[first.name], train, first(train), copy_threshold)
        report.memorisation = {**summary, "feature_space": f"{first.name} v{first.version}"}
        _write_nearest(out / "nearest.csv", fake_names, train_names, p_idx, rmse, f_idx, f_dist)
        order = np.argsort(rmse)[:pairs]
        closest_pairs_figure(out / "closest_pairs.png", [fake[i] for i in order], [train[p_idx[i]] for i in order],
                             [float(rmse[i]) for i in order])  # fmt: skip
    write_report(out, report)
    return report


def image_grid(images: Sequence[np.ndarray], columns: int | None = None, pad: int = 2) -> np.ndarray:
    """(H', W', C) grid of equally sized (H, W, C) images, row-major, `pad` white pixels between them;
    `columns` defaults to ceil(sqrt(N))."""
    if not images:
        raise ValueError("no images for the grid")
    h, w, c = np.asarray(images[0]).reshape(*np.shape(images[0])[:2], -1).shape
    cols = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    grid = np.ones((rows * (h + pad) - pad, cols * (w + pad) - pad, c), dtype=np.float32)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = np.asarray(im).reshape(h, w, c)
    return grid


def closest_pairs_figure(path: Path, samples: Sequence[np.ndarray], neighbours: Sequence[np.ndarray],
                         rmse: Sequence[float]) -> None:  # fmt: skip
    """Each sample above its nearest training image (pixel space), titled with the RMSE; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ldsr.io import atomic_path

    n = len(samples)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    for i in range(n):
        for row, im in enumerate((samples[i], neighbours[i])):
            a = np.asarray(im)
            axes[row][i].imshow(a[:, :, 0] if a.ndim == 3 and a.shape[2] == 1 else a, cmap="gray", vmin=0, vmax=1)
            axes[row][i].axis("off")
        axes[0][i].set_title(f"RMSE {rmse[i]:.3f}", fontsize=8)
    axes[0][0].text(-0.1, 0.5, "sample", rotation=90, va="center", ha="right", transform=axes[0][0].transAxes)
    axes[1][0].text(-0.1, 0.5, "nearest train", rotation=90, va="center", ha="right", transform=axes[1][0].transAxes)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _write_nearest(path: Path, fake: list[str], train: list[str], p_idx: np.ndarray, rmse: np.ndarray,
                   f_idx: np.ndarray, f_dist: np.ndarray) -> None:  # fmt: skip
    from ldsr.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["sample", "nearest_train_pixels", "pixel_rmse", "nearest_train_features", "feature_distance"])
        for i, name in enumerate(fake):
            w.writerow([name, train[p_idx[i]], f"{rmse[i]:.5f}", train[f_idx[i]], f"{f_dist[i]:.5f}"])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def report_markdown(r: GenerationReport) -> str:
    """The report as a Markdown table per feature space, then intensity, memorisation and cost."""
    lines = [f"# Generation measures: {r.fake} vs {r.real}", "",
             f"{r.n_fake} samples, {r.n_real} real (held-out), {r.n_train} training images.", ""]  # fmt: skip
    lines += ["| feature space | Frechet | KID (x1e3) | precision | recall |", "|---|---|---|---|---|"]
    for s in r.spaces.values():
        kid = f"{1e3 * s['kid']:.3g} ± {1e3 * s['kid_std']:.2g}"
        lines.append(f"| {s['space']} v{s['version']} | {_fmt(s['frechet'])} | {kid} | {_fmt(s['precision'])} | "
                     f"{_fmt(s['recall'])} |")  # fmt: skip
    lines += ["", "Feature spaces: " + "; ".join(f"{s['space']} v{s['version']}: {s['description']}"
                                                 for s in r.spaces.values()) + ".", ""]  # fmt: skip
    lines.append("Intensity histogram distance (1-D Wasserstein-1 per channel, [0, 1] units): "
                 + ", ".join(f"{v:.4f}" for v in r.intensity_w1))  # fmt: skip
    if r.memorisation is not None:
        m = r.memorisation
        lines += ["", f"Memorisation: near-copy share {m['near_copy_share']:.3f} (pixel RMSE < {m['threshold_rmse']} "
                  f"on {m['pixel_side']}x{m['pixel_side']} grey to the nearest training image); median nearest "
                  f"RMSE {m['median_nn_rmse']:.4f}, min {m['min_nn_rmse']:.4f}; median nearest feature distance "
                  f"{m['median_nn_feature_distance']:.4g} ({m['feature_space']})."]  # fmt: skip
    if r.run is not None:
        keys = ("model", "parameters", "sampler", "steps", "seconds_per_sample", "peak_memory_mb", "device")
        lines += ["", "Sampling: " + ", ".join(f"{k} {_fmt(r.run.get(k))}" for k in keys if k in r.run) + "."]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: GenerationReport) -> None:
    from dataclasses import asdict

    from ldsr.io import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "generation.json") as tmp:
        tmp.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    with atomic_path(out / "generation.md") as tmp:
        tmp.write_text(report_markdown(report), encoding="utf-8")
