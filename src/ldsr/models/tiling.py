"""Tiled decoding: a latent decoded core by core, each core with a halo of context (memory ~ one tile).

The decoder's activations at full resolution (64-128 channels at H x W) set the peak memory of latent SR, not the
UNet that runs on the f^2-times smaller latent. `decode_tiled` partitions the latent into cores of at most
`tile` x `tile` positions, decodes each core together with `halo` positions of context on every side, and keeps
the core's part of the output: the peak is that of one (tile + 2 halo)^2 decode whatever the image size, and
there are no seams to blend. Convolutions are then exact once the halo covers their receptive field.

GroupNorm is not local: a decoder's GroupNorm layers would normalise each tile with that tile's statistics (as in
latent-diffusion's and diffusers' tiled decoding), which on brain MRI slices, where a tile can be nearly all
background, cost 5-9 dB of reconstruction PSNR (docs/BENCHMARKS.md). Given the decoder's GroupNorm modules
(`norms`), `decode_tiled` first measures each one's statistics over the whole image, in call order:

    pass l (one per GroupNorm): decode every tile up to GroupNorm l, with the image statistics already known for
        the GroupNorms before it, and accumulate the sum and sum of squares of its input over the tile's core
        (the cores partition the image, so each position counts once), per (sample, group);
    final pass: decode every tile with all image statistics and keep the cores.

That costs about L / 2 extra tiled decodes for L GroupNorms (17 in the tiny decoder) and no extra memory. An
attention block (the `small` and `base` autoencoders have one in the decoder's mid-block) gets the image's
GroupNorm statistics too but still attends only to its tile's tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def tile_cores(n: int, tile: int) -> list[tuple[int, int]]:
    """[lo, hi) cores of at most `tile` positions, as equal as possible, partitioning [0, n)."""
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    k = -(-n // tile)  # ceil(n / tile) cores
    cuts = [round(i * n / k) for i in range(k + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


class _Halt(Exception):
    """Ends a statistics pass once the measured GroupNorm has seen its input."""


@contextlib.contextmanager
def _image_group_norms(
    norms: Sequence[nn.GroupNorm], stats: dict[int, tuple[torch.Tensor, torch.Tensor]], collect: dict
) -> Iterator[None]:
    """Within the block, GroupNorm k normalises with stats[k] = (mean, var), each (N, G), when present; the one
    named by collect["index"] adds its input's sums over collect["core"] and halts the decode."""

    def forward_for(k: int, gn: nn.GroupNorm) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W), H = s * window height; attention: (N, C, H W)
            n, g = x.shape[0], gn.num_groups
            if collect.get("index") == k:
                (y0, y1), (x0, x1), (wh, ww) = collect["core"]  # core rows / cols within the window, in latents
                s = round((x[0, 0].numel() / (wh * ww)) ** 0.5)  # this layer's resolution relative to the latent
                x4 = x.reshape(n, x.shape[1], wh * s, ww * s)
                core = x4[:, :, y0 * s : y1 * s, x0 * s : x1 * s].double().reshape(n, g, -1)  # (N, G, C/G * area)
                collect["sum"] = collect.get("sum", 0) + core.sum(-1)  # (N, G)
                collect["sumsq"] = collect.get("sumsq", 0) + (core * core).sum(-1)
                collect["count"] = collect.get("count", 0) + core.shape[-1]
                raise _Halt
            if k not in stats:
                return F.group_norm(x, g, gn.weight, gn.bias, gn.eps)
            mean, var = stats[k]  # (N, G) over the whole image
            xg = x.reshape(n, g, -1)
            out = ((xg - mean[..., None].to(x.dtype)) * torch.rsqrt(var[..., None].to(x.dtype) + gn.eps)).reshape_as(x)
            if gn.affine:
                shape = (1, -1) + (1,) * (x.ndim - 2)
                out = out * gn.weight.view(shape) + gn.bias.view(shape)
            return out

        return forward

    for k, gn in enumerate(norms):
        gn.forward = forward_for(k, gn)  # type: ignore[method-assign]  # an instance attribute, removed below
    try:
        yield
    finally:
        for gn in norms:
            del gn.forward


def decode_tiled(
    decode: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    *,
    factor: int,
    tile: int,
    halo: int | None = None,
    norms: Sequence[nn.GroupNorm] = (),
) -> torch.Tensor:
    """Decode z (N, c_z, h, w) -> (N, C, h*f, w*f) in cores of at most `tile` x `tile` latent positions, each with
    `halo` positions of context (default tile // 2) and the image's GroupNorm statistics for `norms`.

    A latent no larger than one tile is decoded whole (exactly `decode(z)`).
    """
    if z.ndim != 4:
        raise ValueError(f"expected (N, c_z, h, w) latents, got shape {tuple(z.shape)}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    halo = tile // 2 if halo is None else halo
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    h, w = z.shape[-2:]
    if h <= tile and w <= tile:
        return decode(z)
    # per tile: core rows, core cols, and the window (core + halo, clipped) that is decoded
    tiles = [
        ((y0, y1), (x0, x1), (max(0, y0 - halo), min(h, y1 + halo)), (max(0, x0 - halo), min(w, x1 + halo)))
        for y0, y1 in tile_cores(h, tile)
        for x0, x1 in tile_cores(w, tile)
    ]

    norms = list(norms)
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    if norms:
        index = {id(m): k for k, m in enumerate(norms)}
        order: list[int] = []
        hooks = [m.register_forward_pre_hook(lambda m, _: order.append(index[id(m)])) for m in norms]
        try:
            decode(z[:, :, : min(tile, h), : min(tile, w)])  # records the call order
        finally:
            for hk in hooks:
                hk.remove()
        for k in dict.fromkeys(order):  # unique, in call order
            collect: dict = {"index": k}
            with _image_group_norms(norms, stats, collect):
                for (y0, y1), (x0, x1), (wy0, wy1), (wx0, wx1) in tiles:
                    collect["core"] = ((y0 - wy0, y1 - wy0), (x0 - wx0, x1 - wx0), (wy1 - wy0, wx1 - wx0))
                    try:
                        decode(z[:, :, wy0:wy1, wx0:wx1])
                    except _Halt:
                        pass
            mean = collect["sum"] / collect["count"]
            stats[k] = (mean, (collect["sumsq"] / collect["count"] - mean * mean).clamp_min(0.0))

    out: torch.Tensor | None = None
    f = factor
    with _image_group_norms(norms, stats, {}) if norms else contextlib.nullcontext():
        for (y0, y1), (x0, x1), (wy0, wy1), (wx0, wx1) in tiles:
            xt = decode(z[:, :, wy0:wy1, wx0:wx1])  # (N, C, (wy1 - wy0) f, (wx1 - wx0) f)
            if out is None:
                out = torch.zeros(z.shape[0], xt.shape[1], h * f, w * f, dtype=xt.dtype, device=xt.device)
            out[:, :, y0 * f : y1 * f, x0 * f : x1 * f] = xt[
                :, :, (y0 - wy0) * f : (y1 - wy0) * f, (x0 - wx0) * f : (x1 - wx0) * f
            ]
    assert out is not None
    return out
