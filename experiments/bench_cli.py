"""What a user waits for: `ldsr` start-up and per-image time of `ldsr upscale` with a shipped model.

Usage: python experiments/bench_cli.py [--sizes 128 512 2048] [--model mri-x4] [--images 3] [--repeats 3]

Measured, each in a fresh process (no shell) so that every import and model load is counted:
- start-up: `ldsr --help` and `python -c "import torch"` (median of --repeats runs);
- per output size (HR side; LR = side / 4, crops of the held-out fixture fixtures/mri/figshare_0_1840.jpg reduced
  x4 with MATLAB bicubic): one `ldsr upscale -i LR.png -o OUT.png -m MODEL` from start to exit (start-up, model
  load and the image), and a folder job of --images LR images, whose per-image seconds are read from the log
  line each image gets ("upscale [k/n, ...] ... (model, S s)": the inference time, sampling and decoding, of
  that image; the first image of a job is reported apart, as it pays one-off costs). Sizes above 512 run one image only.
Prints a Markdown table with the machine and the date.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "fixtures" / "mri" / "figshare_0_1840.jpg"
LDSR = [sys.executable, "-m", "ldsr"]
PER_IMAGE = re.compile(r"\(([^,()]+), ([0-9.]+) s\)$")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child: user + system, its output)."""
    t0, c0 = time.perf_counter(), _cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    dt, cpu = time.perf_counter() - t0, _cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return dt, cpu, proc.stdout + proc.stderr


def _lr_images(folder: Path, hr: int, n: int) -> list[Path]:
    """n different LR images of side hr / 4 from the fixture (different crops; the 512 image itself for hr 2048)."""
    from ldsr.data.resize import imresize
    from ldsr.io import read_image, write_image

    img, _ = read_image(SOURCE)  # (512, 512, 1)
    side = hr // 4
    out = []
    for k in range(n):
        if hr >= img.shape[0] * 4:  # LR larger than the 512 source crop: the source itself, enlarged if needed
            lr = img if hr == img.shape[0] * 4 else imresize(img, side / img.shape[0]).clip(0, 1)
        else:
            off = (k * 37) % (img.shape[0] - hr + 1)
            lr = imresize(img[off : off + hr, off : off + hr], 0.25).clip(0, 1)
        out.append(write_image(folder / f"lr{hr}_{k}.png", lr[:side, :side]))
    return out


def _startup(repeats: int) -> list[tuple[str, float, float]]:
    rows = []
    for label, cmd in (
        ("`ldsr --help`", [*LDSR, "--help"]),
        ('`python -c "import torch"`', [sys.executable, "-c", "import torch"]),
    ):
        runs = [_run(cmd) for _ in range(repeats)]
        rows.append((label, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)))
    return rows


def _per_size(hr: int, model: str, images: int, tmp: Path) -> dict[str, float | int]:
    folder = tmp / f"in{hr}"
    files = _lr_images(folder, hr, images if hr <= 512 else 1)
    one, cpu, _ = _run([*LDSR, "upscale", "-i", str(files[0]), "-o", str(tmp / f"one{hr}.png"), "-m", model, "-q"])
    row: dict[str, float | int] = {"hr": hr, "one_image_wall": one, "one_image_cpu": cpu, "n": len(files)}
    if len(files) > 1:
        total, _, log = _run([*LDSR, "upscale", "-i", str(folder), "-o", str(tmp / f"out{hr}"), "-m", model])
        secs = [float(m.group(2)) for line in log.splitlines() if (m := PER_IMAGE.search(line))]
        if len(secs) != len(files):
            raise SystemExit(f"expected {len(files)} per-image log lines, got {len(secs)}:\n{log}")
        row.update(folder_wall=total, first=secs[0], rest=statistics.median(secs[1:]))
    return row


def _table(startup: list[tuple[str, float, float]], rows: list[dict[str, float | int]], model: str) -> str:
    import torch

    lines = [
        f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); {date.today().isoformat()}; "
        f"load average at start {os.getloadavg()[0]:.1f}.",
        "",
        "| start-up | wall s (median) | CPU s (median) |",
        "|---|---|---|",
        *[f"| {label} | {sec:.2f} | {cpu:.2f} |" for label, sec, cpu in startup],
        "",
        f"| `ldsr upscale -m {model}` | output | one image, start to exit: wall s | its CPU s "
        "| folder job: first image, inference wall s | folder job: each further image, inference wall s (median) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lr = int(r["hr"]) // 4
        first = f"{r['first']:.2f}" if "first" in r else "-"
        rest = f"{r['rest']:.2f} (of {int(r['n']) - 1})" if "rest" in r else "-"
        lines.append(
            f"| LR {lr}² | {r['hr']}² | {r['one_image_wall']:.2f} | {r['one_image_cpu']:.2f} | {first} | {rest} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 2048], help="HR output sides")
    parser.add_argument("--model", default="mri-x4", help="a shipped x4 model")
    parser.add_argument("--images", type=int, default=3, help="images in each folder job (sizes <= 512)")
    parser.add_argument("--repeats", type=int, default=3, help="start-up runs (median)")
    args = parser.parse_args()
    startup = _startup(args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for hr in args.sizes:
            print(f"HR {hr} ...", file=sys.stderr, flush=True)
            rows.append(_per_size(hr, args.model, args.images, Path(tmp)))
    print(_table(startup, rows, args.model))


if __name__ == "__main__":
    main()
