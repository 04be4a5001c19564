"""Where the time and memory of a default `upscale` go: stage by stage on one LR image (experiments only).

OMP_NUM_THREADS=1 .venv/bin/python experiments/tiling/profile_upscale.py runs/bench_mem/lr256.png [tile_stats]
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time

import numpy as np
import torch

import ldsr.models.sr as sr_mod
import ldsr.pipeline.upscaler as up_mod
from ldsr.io import read_image
from ldsr.pipeline import load


def rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_PAGE = os.sysconf("SC_PAGE_SIZE")
_stage_peak = [0.0]  # the current RSS's maximum since the last stage began (MB), sampled every 50 ms


def _now_rss() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def _watch() -> None:
    while True:
        _stage_peak[0] = max(_stage_peak[0], _now_rss())
        time.sleep(0.05)


def timed(name: str, fn):  # noqa: ANN001, ANN201
    def wrapper(*a, **k):  # noqa: ANN002, ANN003, ANN202
        t0, start = time.perf_counter(), _now_rss()
        _stage_peak[0] = start
        out = fn(*a, **k)
        print(f"{name:14s} {time.perf_counter() - t0:7.1f} s  RSS at start {start:6.0f} MB, stage max "
              f"{max(_stage_peak[0], _now_rss()):6.0f} MB, after {_now_rss():6.0f} MB, peak RSS {rss():7.0f} MB",
              flush=True)  # fmt: skip
        return out

    return wrapper


def main() -> None:
    torch.set_num_threads(1)
    threading.Thread(target=_watch, daemon=True).start()
    lr = read_image(sys.argv[1])[0].astype(np.float32)
    stats = int(sys.argv[2]) if len(sys.argv) > 2 else None
    up = load("mri-x4")
    print(f"loaded: peak RSS {rss():.0f} MB; LR {lr.shape}")
    m = up.model
    m._base = timed("encode base", m._base)
    sr_mod.sample = timed("sampling", sr_mod.sample)
    m.to_image = timed("decode", m.to_image)
    up._finish = timed("finish", up._finish)
    for name in ("back_project", "zero_background", "lr_consistency"):
        setattr(up_mod, name, timed(f"  {name}", getattr(up_mod, name)))
    t0 = time.perf_counter()
    res = up.upscale(lr, tile_stats=stats)
    sec = time.perf_counter() - t0
    mp = res.image.shape[0] * res.image.shape[1] / 1e6
    print(f"total {sec:.1f} s, {sec / mp:.1f} s/MP, tile {res.tile}, peak RSS {rss():.0f} MB")


if __name__ == "__main__":
    main()
