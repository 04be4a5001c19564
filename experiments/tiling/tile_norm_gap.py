"""Tiled vs untiled PSNR gap of the shipped models on 512^2 held-out images, per GroupNorm-statistics scheme.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/tiling/tile_norm_gap.py [--quick] [--out gap.json]

Schemes (tile 128 / overlap 32 LR pixels unless named): `window` (each tile its own GroupNorm statistics),
`stats1` / `stats2` (1 / 2 statistics passes before the final one, ldsr.models.tiling.tiled_net), `exact` (one
pass per GroupNorm in call order, like decode_tiled), larger overlaps with per-window statistics, and tile 64.
Windows of network evaluations are counted through the progress callback. Images: the test fixture, held-out
figshare slices (runs/data/mri_test, docs/DATA_SPLITS.md) and 512^2 crops of the CMU-1 slide at y >= 2400 (the
held-out rows of cmu1.yaml) for histology-x4; LR = bicubic x4, one draw, no back-projection (as the test).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

import ldsr.models.sr as sr_mod
from ldsr.data.degrade import degrade, rng_for
from ldsr.io import read_image
from ldsr.io.wsi import Slide, to_unit
from ldsr.models import tiling
from ldsr.pipeline import load

ROOT = Path(__file__).resolve().parents[2]
SVS = ROOT.parent / "shared/data/histology/cmu1-small-region/cmu_small_region.svs"


def exact_tiled_net(net: tiling.Net, *, tile: int, overlap: int, batch: int = 8,
                    on_call: Callable[[int], None] | None = None, norms: Sequence[nn.GroupNorm] = (),
                    stats_passes: int = 0) -> tiling.Net:  # fmt: skip
    """Exact image statistics: one halted pass per GroupNorm in call order, then the final pass."""
    norms = list(norms)

    def forward(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] <= tile and x.shape[-1] <= tile:
            return net(x, t)
        order: list[int] = []
        index = {id(m): k for k, m in enumerate(norms)}
        hooks = [m.register_forward_pre_hook(lambda m, _: order.append(index[id(m)])) for m in norms]
        net(x[:1, :, :tile, :tile], t[:1])
        for hk in hooks:
            hk.remove()
        stats: dict = {}
        for k in dict.fromkeys(order):
            state = tiling._NormState(stats=stats, acc={}, halt=k)
            with tiling._window_group_norms(norms, state):
                tiling._windows_pass(net, x, t, tile, overlap, batch, on_call, state, blend=False)
            stats = {**stats, k: state.finish()[k]}
        final = tiling._NormState(stats=stats)
        with tiling._window_group_norms(norms, final):
            return tiling._windows_pass(net, x, t, tile, overlap, batch, on_call, final)

    return forward


def images(quick: bool) -> list[tuple[str, str, np.ndarray]]:
    """(model, name, HR (512, 512, C) in [0, 1])."""
    out = [("mri-x4", "fixture figshare_1_0708", read_image(ROOT / "fixtures/mri/figshare_1_0708.jpg")[0])]
    test = sorted((ROOT / "runs/data/mri_test").glob("*.jpg"))
    picks = [test[0], test[len(test) // 2], test[-1]] if test else []
    for p in picks[: 1 if quick else 3]:
        out.append(("mri-x4", p.stem, read_image(p)[0]))
    with Slide(SVS) as slide:
        for x in (200, 1300)[: 1 if quick else 2]:
            out.append(("histology-x4", f"cmu1 y2440 x{x}", to_unit(slide.read_region(x, 2440, 512, 512))))
    return out


DEFAULT_SCHEMES = "untiled,t128o32s0,t128o32s1,t128o32s2,t128o32exact,t128o64s0,t128o96s0,t128o64s2,t128o64exact"


def scheme(name: str) -> dict:
    """'untiled' or 't<tile>o<overlap>' + 's<stats passes>' or 'exact' (LR pixels) -> upscale options."""
    if name == "untiled":
        return {"tile": 0}
    m = re.fullmatch(r"t(\d+)o(\d+)(?:s(\d+)|(exact))", name)
    if m is None:
        raise ValueError(f"bad scheme {name!r}")
    out: dict = {"tile": int(m[1]), "tile_overlap": int(m[2])}
    if m[4]:
        out["exact"] = True
    else:
        out["tile_stats"] = int(m[3])
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a.astype(np.float64) - b) ** 2)))


def run(up, lr: np.ndarray, scheme: dict) -> tuple[np.ndarray, int, float]:  # noqa: ANN001
    """(SR image, windows evaluated, seconds) of one upscale under `scheme`."""
    kw = {k: v for k, v in scheme.items() if k != "exact"}
    calls = [0]
    orig = sr_mod.tiled_net
    if scheme.get("exact"):
        sr_mod.tiled_net = exact_tiled_net  # type: ignore[assignment]
    t0 = time.perf_counter()
    try:
        res = up.upscale(lr, samples=1, consistency=False, progress=lambda d, tot: calls.__setitem__(0, d), **kw)
    finally:
        sr_mod.tiled_net = orig
    return res.image, calls[0], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--schemes", default=DEFAULT_SCHEMES)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    models: dict = {}
    rows = []
    for model, name, hr in images(args.quick):
        up = models.setdefault(model, load(model))
        lr, _ = degrade(hr, 4, "bicubic", rng_for(0, name))
        ref, _, _ = run(up, lr, {"tile": 0})
        base = psnr(ref, hr)
        for s in args.schemes.split(","):
            sr, n, sec = run(up, lr, scheme(s))
            p, agree = psnr(sr, hr), psnr(sr, ref)  # against the HR; against the untiled output
            rows.append({"model": model, "image": name, "scheme": s, "psnr": p, "gap_db": p - base,
                         "vs_untiled_db": agree, "windows": n, "seconds": sec})  # fmt: skip
            print(f"{model:13s} {name:26s} {s:14s} {p:7.3f} dB  gap {p - base:+7.3f}  vs untiled {agree:6.2f} dB"
                  f"  windows {n:4d}  {sec:5.1f} s", flush=True)  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
