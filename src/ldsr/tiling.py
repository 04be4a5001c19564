"""Tiled decoding: a latent decoded in overlapping tiles, blended with linear ramps (memory ~ one tile).

The decoder's activations at full resolution (64-128 channels at H x W, plus a mid-block attention over the whole
latent grid) set the peak memory of latent SR, not the UNet that runs on the f^2-times smaller latent. Decoding
tiles of `tile` x `tile` latent positions bounds that peak by the tile's size whatever the image size. Tiles
overlap by `overlap` latent positions; in the overlap, each tile's output is weighted by a ramp that falls
linearly towards its inner edge, so the blend is a convex combination and seams fade out. A decoder whose
receptive field fits within the overlap (no attention) gives the whole-latent result up to the ramp's weights on
the few border pixels. A real decoder's GroupNorm layers and attention mid-block, however, see only their tile's
statistics (as in latent-diffusion's and diffusers' tiled decoding): on brain MRI slices with the tiny
autoencoders this cost 5-9 dB of reconstruction PSNR (docs/BENCHMARKS.md), so tiling is for images whose whole
decode does not fit in memory, not a default.
"""

from __future__ import annotations

from typing import Callable

import torch


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side `tile` covering [0, n) with at least `overlap` shared positions."""
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if n <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, n - tile, stride))
    starts.append(n - tile)  # the last tile ends at the border (its overlap with the previous one may be larger)
    return starts


def _ramp(length: int, ramp: int, rise: bool, fall: bool, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(length,) weights: 1 inside, rising over the first `ramp` positions and falling over the last, in (0, 1]."""
    w = torch.ones(length, dtype=dtype, device=device)
    r = min(ramp, length)
    if r > 0:
        up = (torch.arange(r, dtype=dtype, device=device) + 0.5) / r  # (r,) in (0, 1), never 0: sums stay > 0
        if rise:
            w[:r] = torch.minimum(w[:r], up)
        if fall:
            w[length - r :] = torch.minimum(w[length - r :], up.flip(0))
    return w


def decode_tiled(
    decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *, factor: int, tile: int, overlap: int | None = None
) -> torch.Tensor:
    """Decode z (N, c_z, h, w) -> (N, C, h*f, w*f) tile by tile; `overlap` defaults to tile // 4.

    A latent no larger than one tile is decoded whole (the result is then exactly `decode(z)`).
    """
    if z.ndim != 4:
        raise ValueError(f"expected (N, c_z, h, w) latents, got shape {tuple(z.shape)}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    overlap = tile // 4 if overlap is None else overlap
    h, w = z.shape[-2:]
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    if len(rows) == 1 and len(cols) == 1:
        return decode(z)
    out: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    ramp = overlap * factor  # the blend region in output pixels
    for i, y in enumerate(rows):
        for j, x in enumerate(cols):
            zt = z[:, :, y : y + tile, x : x + tile]  # (N, c_z, th, tw), th = min(tile, h)
            xt = decode(zt)  # (N, C, th*f, tw*f)
            if out is None:
                out = torch.zeros(z.shape[0], xt.shape[1], h * factor, w * factor, dtype=xt.dtype, device=xt.device)
                weight = torch.zeros(1, 1, h * factor, w * factor, dtype=xt.dtype, device=xt.device)
            th, tw = xt.shape[-2:]
            wy = _ramp(th, ramp, rise=i > 0, fall=i < len(rows) - 1, dtype=xt.dtype, device=xt.device)
            wx = _ramp(tw, ramp, rise=j > 0, fall=j < len(cols) - 1, dtype=xt.dtype, device=xt.device)
            wt = wy[:, None] * wx[None, :]  # (th*f, tw*f), separable ramp
            Y, X = y * factor, x * factor
            out[:, :, Y : Y + th, X : X + tw] += xt * wt
            weight[:, :, Y : Y + th, X : X + tw] += wt  # type: ignore[index]
    assert out is not None and weight is not None
    return out / weight
