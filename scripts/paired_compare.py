"""Per-image paired comparison of two methods of one `ldsr evaluate` run: is a small margin more than noise?

    .venv/bin/python scripts/paired_compare.py REPORT_DIR/results.csv METHOD_A METHOD_B [--group REGEX]

For each metric (PSNR / SSIM, Y and RGB) the per-image difference d_i = A_i - B_i over the images both methods
have: its mean (the difference of the table's means), the standard error of that mean, std(d) / sqrt(n), and on
how many images A is higher. A mean difference within about two standard errors is not a measured difference
between the methods on this split. `--group` adds the same lines for the images whose name matches each of
comma-separated regular expressions (e.g. `cmu1sr_,image_` for the histology test tiles' two sources).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from pathlib import Path

METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")


def read_results(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """results.csv (comment lines start with #) -> {method: {image: {metric: value}}}."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        out.setdefault(r["method"], {})[r["image"]] = {m: float(r[m]) for m in METRICS}
    return out


def paired(
    a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], metric: str, names: list[str] | None = None
) -> tuple[float, float, int, int]:
    """(mean of A - B, its standard error, images where A > B, n) over the images both have (or `names`)."""
    names = sorted(set(a) & set(b)) if names is None else names
    d = [a[i][metric] - b[i][metric] for i in names]
    n = len(d)
    if n < 2:
        raise ValueError(f"need at least 2 shared images for a standard error, got {n}")
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    return mean, sd / math.sqrt(n), sum(x > 0 for x in d), n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--group", default="", help="comma-separated regular expressions on the image name")
    args = p.parse_args()
    res = read_results(args.results)
    for m in (args.a, args.b):
        if m not in res:
            raise SystemExit(f"{args.results}: no method {m!r} (has: {', '.join(res)})")
    a, b = res[args.a], res[args.b]
    shared = sorted(set(a) & set(b))
    groups = [("all", shared)] + [(g, [i for i in shared if re.search(g, i)]) for g in args.group.split(",") if g]
    print(f"| images | metric | {args.a} - {args.b} | std. error | {args.a} higher |")
    print("|---|---|---:|---:|---:|")
    for label, names in groups:
        for metric in METRICS:
            mean, se, wins, n = paired(a, b, metric, names)
            digits = 3 if metric.startswith("psnr") else 4
            print(f"| {label} ({n}) | {metric} | {mean:+.{digits}f} | {se:.{digits}f} | {wins}/{n} |")


if __name__ == "__main__":
    main()
