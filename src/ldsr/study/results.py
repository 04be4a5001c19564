"""`ldsr study results`: the thesis's Table 5.2 from a study's ratings.

Per method: UP (share of ratings 3 or 4) and the mean score, each with a 95 % crossed bootstrap interval over
raters and images; the score distribution; optionally PSNR / SSIM of `ldsr evaluate` on the same images.
The main analysis uses each rater's first rating of every trial; the repeated showings only measure each
rater's consistency. Inter-rater agreement: Krippendorff's alpha (ordinal) over trials rated by 2+ raters.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ldsr.io import atomic_path
from ldsr.study.design import DB_FILE, Study, load_study
from ldsr.study.stats import consistency, crossed_bootstrap, krippendorff_alpha
from ldsr.study.store import Rating, read_ratings

JOINED = ("psnr_y", "ssim_y")


@dataclass
class MethodResult:
    method: str
    n_ratings: int
    n_raters: int
    n_images: int
    up: tuple[float, float, float]  # estimate, 95 % low, high
    mean: tuple[float, float, float]
    counts: dict[int, int]  # score -> ratings
    metrics: dict[str, float]  # evaluate's means over the study's images


@dataclass
class StudyResults:
    methods: list[MethodResult]
    alpha_ordinal: float
    raters: list[dict[str, Any]]  # per rater: label, ratings, consistency
    overall_consistency: dict[str, float]
    n_ratings: int
    n_boot: int
    long_rows: list[dict[str, Any]] = field(default_factory=list)  # every rating, unblinded


def _split(study: Study, ratings: list[Rating]) -> tuple[dict[tuple[int, str], int], list[dict[str, Any]],
                                                         dict[int, tuple[list[int], list[int]]]]:  # fmt: skip
    """First scores per (slot, trial), the long table, and per slot the (first, repeat) score pairs."""
    first: dict[tuple[int, str], int] = {}
    pairs: dict[int, tuple[list[int], list[int]]] = {}
    rows = []
    for r in ratings:
        trial = study.trials.get(r.trial)
        if trial is None:
            raise ValueError(f"{study.root / DB_FILE}: a rating names trial {r.trial!r}, unknown to study.json")
        key = (r.slot, r.trial)
        repeat = key in first
        if repeat:
            a, b = pairs.setdefault(r.slot, ([], []))
            a.append(first[key])
            b.append(r.score)
        else:
            first[key] = r.score
        name = study.images[trial.image]["name"]
        rows.append({"rater": r.label, "slot": r.slot, "position": r.position, "image": name,
                     "method": trial.method, "score": r.score, "repeat": int(repeat), "ms": r.ms})  # fmt: skip
    return first, rows, pairs


def analyse(study: Study, ratings: list[Rating], *, n_boot: int = 2000) -> StudyResults:
    """Table 5.2 numbers of a study from its ratings."""
    first, rows, pairs = _split(study, ratings)
    slots = sorted({slot for slot, _ in first})
    labels = {r.slot: r.label for r in ratings}
    slot_index = {s: i for i, s in enumerate(slots)}
    methods = []
    for m_index, method in enumerate(study.methods):
        trials = [t for t in study.trials.values() if t.method == method]
        scores = np.full((len(slots), len(study.images)), np.nan)  # (raters, images)
        for t in trials:
            for slot in slots:
                if (slot, t.id) in first:
                    scores[slot_index[slot], t.image] = first[slot, t.id]
        valid = np.isfinite(scores)
        seed = study.seed * 1000 + m_index
        metrics = {k: float(np.mean([t.metrics[k] for t in trials])) for k in JOINED
                   if trials and all(k in t.metrics for t in trials)}  # fmt: skip
        methods.append(MethodResult(
            method=method, n_ratings=int(valid.sum()), n_raters=int(valid.any(axis=1).sum()),
            n_images=int(valid.any(axis=0).sum()),
            up=crossed_bootstrap(scores, "up", n_boot=n_boot, seed=seed),
            mean=crossed_bootstrap(scores, "mean", n_boot=n_boot, seed=seed),
            counts={s: int((scores == s).sum()) for s in (1, 2, 3, 4)}, metrics=metrics))  # fmt: skip
    # agreement: coders = raters, units = trials     (R, T)
    trial_ids = list(study.trials)
    matrix = np.array([[first.get((slot, t), np.nan) for t in trial_ids] for slot in slots], dtype=np.float64)
    alpha = krippendorff_alpha(matrix, "ordinal") if len(slots) >= 2 else float("nan")
    raters = []
    for slot in slots:
        a, b = pairs.get(slot, ([], []))
        n = sum(1 for r in ratings if r.slot == slot)
        raters.append({"rater": labels[slot], "ratings": n, **consistency(a, b)})
    all_a = [x for a, _ in pairs.values() for x in a]
    all_b = [x for _, b in pairs.values() for x in b]
    return StudyResults(methods=methods, alpha_ordinal=alpha, raters=raters,
                        overall_consistency=consistency(all_a, all_b), n_ratings=len(ratings), n_boot=n_boot,
                        long_rows=rows)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# output


def _pct(t: tuple[float, float, float]) -> str:
    est, low, high = t
    if math.isnan(est):
        return "-"
    return f"{100 * est:.0f} %" + ("" if math.isnan(low) else f" [{100 * low:.0f}, {100 * high:.0f}]")


def _num(t: tuple[float, float, float]) -> str:
    est, low, high = t
    if math.isnan(est):
        return "-"
    return f"{est:.2f}" + ("" if math.isnan(low) else f" [{low:.2f}, {high:.2f}]")


def _fmt(x: float, digits: int) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def markdown(study: Study, res: StudyResults, *, join: bool = True) -> str:
    """The results as Markdown: Table 5.2, agreement, and per-rater consistency."""
    show = join and any(m.metrics for m in res.methods)
    head = ["method", "ratings", "raters", "images", "UP [95 % CI]", "mean score [95 % CI]", "1 / 2 / 3 / 4"]
    head += ["PSNR-Y (dB)", "SSIM-Y"] if show else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in res.methods:
        cells = [m.method, str(m.n_ratings), str(m.n_raters), str(m.n_images), _pct(m.up), _num(m.mean),
                 " / ".join(str(m.counts[s]) for s in (1, 2, 3, 4))]  # fmt: skip
        if show:
            cells += [_fmt(m.metrics.get("psnr_y", math.nan), 2), _fmt(m.metrics.get("ssim_y", math.nan), 4)]
        lines.append("| " + " | ".join(cells) + " |")
    oc = res.overall_consistency
    parts = [
        f"# Reader study {study.study_id}",
        "",
        f"{res.n_ratings} ratings by {len(res.raters)} raters of {len(study.images)} images x "
        f"{len(study.methods)} methods (blind, randomised order per rater, {study.doc.get('repeats', 0)} repeated "
        "trials per rater). Scale: 4 Excellent (good texture and clarity, high contrast), 3 Good, 2 Fair, "
        "1 Poor (completely blurred); UP = share of ratings 3 or 4. Each rater's first rating of a trial counts; "
        f"intervals: 95 % percentile bootstrap resampling raters and images independently ({res.n_boot} draws)."
        + (" PSNR / SSIM: `ldsr evaluate` on the same images (Y channel)." if show else ""),
        "",
        *lines,
        "",
        f"Inter-rater agreement: Krippendorff's alpha (ordinal) = {_fmt(res.alpha_ordinal, 3)} "
        "(1 perfect agreement, 0 chance level; needs 2+ raters on a trial).",
        "",
        f"Rater consistency on repeated trials: {oc['pairs']} pairs, exact agreement {_fmt(100 * oc['exact'], 0)} %, "
        f"within one point {_fmt(100 * oc['within_one'], 0)} %, mean |difference| {_fmt(oc['mean_abs_diff'], 2)}.",
        "",
        "| rater | ratings | repeat pairs | exact | within one | mean abs diff |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['rater']} | {r['ratings']} | {r['pairs']} | {_fmt(r['exact'], 2)} | {_fmt(r['within_one'], 2)} | "
            f"{_fmt(r['mean_abs_diff'], 2)} |"
            for r in res.raters
        ),  # fmt: skip
    ]
    return "\n".join(parts) + "\n"


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_results(study: Study, res: StudyResults, out_dir: Path, *, join: bool = True) -> list[Path]:
    """results.md, results.csv (per method), raters.csv, ratings.csv (every rating, unblinded), results.png."""
    out = Path(out_dir)
    paths = [out / n for n in ("results.md", "results.csv", "raters.csv", "ratings.csv", "results.png")]
    with atomic_path(paths[0]) as tmp:
        tmp.write_text(markdown(study, res, join=join), encoding="utf-8")
    keys = list(JOINED) if join else []
    _write_csv(paths[1], ["method", "ratings", "raters", "images", "up", "up_low", "up_high", "mean", "mean_low",
                          "mean_high", "n1", "n2", "n3", "n4", *keys, "alpha_ordinal"],  # fmt: skip
               [[m.method, m.n_ratings, m.n_raters, m.n_images, *m.up, *m.mean, *(m.counts[s] for s in (1, 2, 3, 4)),
                 *(m.metrics.get(k, "") for k in keys), res.alpha_ordinal] for m in res.methods])  # fmt: skip
    _write_csv(paths[2], ["rater", "ratings", "pairs", "exact", "within_one", "mean_abs_diff"],
               [[r["rater"], r["ratings"], r["pairs"], r["exact"], r["within_one"], r["mean_abs_diff"]]
                for r in res.raters])  # fmt: skip
    cols = ["rater", "slot", "position", "image", "method", "score", "repeat", "ms"]
    _write_csv(paths[3], cols, [[row[c] for c in cols] for row in res.long_rows])
    figure(paths[4], res)
    return paths


def figure(path: Path, res: StudyResults) -> None:
    """UP share and mean score per method with their 95 % intervals, and the score distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m.method for m in res.methods]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(4 + 2.2 * len(names), 3.6), constrained_layout=True)
    for ax, key, title, scale in ((axes[0], "up", "UP (ratings 3-4), %", 100.0), (axes[1], "mean", "mean score", 1.0)):
        est = np.array([getattr(m, key)[0] for m in res.methods]) * scale
        low = np.array([getattr(m, key)[1] for m in res.methods]) * scale
        high = np.array([getattr(m, key)[2] for m in res.methods]) * scale
        err = np.nan_to_num(np.stack([est - low, high - est]), nan=0.0)
        ax.bar(x, np.nan_to_num(est), yerr=err, capsize=4, color="#4c72b0")
        ax.set_ylim(0, 100 if key == "up" else 4)
        ax.set_title(title + " (95 % CI)")
    colours = ("#c44e52", "#dd8452", "#8fbf7f", "#2f7d32")
    bottom = np.zeros(len(names))
    for s, colour in zip((1, 2, 3, 4), colours):
        total = np.array([max(sum(m.counts.values()), 1) for m in res.methods])
        share = np.array([m.counts[s] for m in res.methods]) / total * 100
        axes[2].bar(x, share, bottom=bottom, color=colour, label=str(s))
        bottom += share
    axes[2].set_title("score distribution, %")
    axes[2].legend(title="score", fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    for ax in axes:
        ax.set_xticks(x, names, rotation=20, ha="right")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def study_results(study_dir: Path, out_dir: Path | None = None, *, n_boot: int = 2000,
                  join: bool = True) -> tuple[Study, StudyResults, list[Path]]:  # fmt: skip
    """Read a study folder and its ratings; write the results (default: <study>/results/)."""
    study = load_study(Path(study_dir))
    ratings = read_ratings(study.root / DB_FILE, study.study_id)
    res = analyse(study, ratings, n_boot=n_boot)
    return study, res, write_results(study, res, Path(out_dir) if out_dir else study.root / "results", join=join)
