"""Time and peak RSS of the shipped model's default upscale per output size, one fresh process per size.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/tiling/upscale_bench.py --sizes 1024 2048 \
        [--cli 4096=runs/bench_mem/t1024.txt,runs/bench_mem/t1024.out] --out docs/results/upscale_bench/summary.json
        [--rows-from runs/bench/summary.json]   # add --cli rows to the --sizes rows of an earlier run

Each size runs `python -m ldsr.evaluation.speed upscale mri-x4 SIZE` (random LR, the model's defaults; seconds of
the upscale call, peak RSS of the process). `--cli SIZE=TIME_V,LOG` adds a size measured with `/usr/bin/time -v
ldsr upscale -i lr.png -o out.png -m mri-x4` instead (peak RSS from time -v, seconds from the per-image log line).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from datetime import date
from pathlib import Path


def bench(model: str, size: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "ldsr.evaluation.speed", "upscale", model, str(size)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    row = json.loads(out.strip().splitlines()[-1])
    row["source"] = f"python -m ldsr.evaluation.speed upscale {model} {size}"
    return row


def from_cli(model: str, size: int, time_v: Path, log: Path) -> dict:
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_v.read_text())
    sec = re.search(r"\(([^,()]+), ([0-9.]+) s\)", log.read_text() + time_v.read_text())
    assert rss is not None and sec is not None, "no time -v output or per-image log line"
    s = float(sec.group(2))
    return {"model": model, "output": size, "seconds": s, "seconds_per_mp": s / (size * size / 1e6),
            "peak_rss_mb": int(rss.group(1)) / 1024, "source": f"/usr/bin/time -v ldsr upscale -m {model} "
            f"(LR {size // 4}^2 PNG -> {size}^2 PNG)"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mri-x4")
    ap.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048, 4096])
    ap.add_argument("--cli", action="append", default=[])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--load", default="nothing else running", help="what else ran on the machine (for the table)")
    ap.add_argument("--rows-from", type=Path, help="take the --sizes rows from this earlier summary, not new runs")
    a = ap.parse_args()
    if a.rows_from:
        old = json.loads(a.rows_from.read_text())
        rows = [r for r in old["rows"] if r["output"] in a.sizes and r["source"].startswith("python -m")]
    else:
        rows = [bench(a.model, s) for s in a.sizes]
    for spec in a.cli:
        size, files = spec.split("=")
        tv, log = files.split(",")
        rows.append(from_cli(a.model, int(size), Path(tv), Path(log)))
    rows.sort(key=lambda r: r["output"])
    summary = {"model": a.model, "rows": rows, "date": date.today().isoformat(),
               "machine": f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), "
               f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {a.load}",
               "command": " ".join(["experiments/tiling/upscale_bench.py", *sys.argv[1:]])}  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
