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
import ctypes
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@functools.cache
def _libc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None (another C library or platform)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc malloc_trim; a no-op elsewhere).

    The tiled passes allocate and free feature maps of many sizes below glibc's mmap threshold (which grows to
    32 MB as large blocks are freed); the heap keeps what they leave fragmented: a tiled exact encode of a 400^2 LR
    image's base (mri-x4) ended at 879 MB RSS with ~440 MB live, 441 MB after a trim. A fixed 1 MB mmap threshold
    kept the peak at 538 MB but ran 3.6x slower (a fresh zeroed mapping per map), hence trims between passes.
    """
    trim = _libc_trim()
    if trim is not None:
        trim(0)


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
            g = gn.num_groups
            if collect.get("index") == k:
                _add_core_moments(collect, collect["core"], x, g)
                raise _Halt
            if k not in stats:
                return F.group_norm(x, g, gn.weight, gn.bias, gn.eps)
            mean, var = stats[k]  # (N, G) over the whole image
            return _group_norm_with(x, gn, mean.to(x.dtype), var.to(x.dtype))

        return forward

    with _patched_forwards(norms, forward_for):
        yield


def _group_norm_with(x: torch.Tensor, gn: nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """GroupNorm `gn` of x (N, C, ...) with given statistics mean, var (N, G) instead of x's own."""
    out = (x.reshape(x.shape[0], gn.num_groups, -1) - mean[..., None]) * torch.rsqrt(var[..., None] + gn.eps)
    out = out.reshape_as(x)
    if gn.affine:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        out = out * gn.weight.view(shape) + gn.bias.view(shape)
    return out


@contextlib.contextmanager
def _patched_forwards(
    norms: Sequence[nn.GroupNorm], forward_for: Callable[[int, nn.GroupNorm], Callable[[torch.Tensor], torch.Tensor]]
) -> Iterator[None]:
    """Within the block GroupNorm k runs forward_for(k, gn) (an instance attribute, removed on exit)."""
    for k, gn in enumerate(norms):
        gn.forward = forward_for(k, gn)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        for gn in norms:
            del gn.forward


def _add_core_moments(acc: dict, core: tuple, x: torch.Tensor, g: int) -> None:
    """Add to acc["sum"], acc["sumsq"] (N, G) and acc["count"] the moments of x (N, C, H, W) or (N, C, H W) over
    the window's core; core = ((y0, y1), (x0, x1), (wh, ww)): core rows / cols and window size, in latents."""
    (y0, y1), (x0, x1), (wh, ww) = core
    n = x.shape[0]
    s = round((x[0, 0].numel() / (wh * ww)) ** 0.5)  # this layer's resolution relative to the latent
    x4 = x.reshape(n, x.shape[1], wh * s, ww * s)
    c = x4[:, :, y0 * s : y1 * s, x0 * s : x1 * s].double().reshape(n, g, -1)  # (N, G, C/G * area)
    acc["sum"] = acc.get("sum", 0) + c.sum(-1)  # (N, G)
    acc["sumsq"] = acc.get("sumsq", 0) + (c * c).sum(-1)
    acc["count"] = acc.get("count", 0) + c.shape[-1]


def _mean_var(acc: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, var), each (N, G), from `_add_core_moments` sums."""
    mean = acc["sum"] / acc["count"]
    return mean, (acc["sumsq"] / acc["count"] - mean * mean).clamp_min(0.0)


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
    `halo` positions of context (default tile // 2) and the image's exact GroupNorm statistics for `norms` (one
    pass per GroupNorm, module doc).

    A latent no larger than one tile is decoded whole (exactly `decode(z)`).
    """
    if z.ndim != 4:
        raise ValueError(f"expected (N, c_z, h, w) latents, got shape {tuple(z.shape)}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    return _apply_tiled(decode, z, f_in=1, f_out=factor, tile=tile, halo=tile // 2 if halo is None else halo,
                        norms=norms)  # fmt: skip


def encode_tiled(
    encode: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    factor: int,
    tile: int,
    halo: int | None = None,
    norms: Sequence[nn.GroupNorm] = (),
) -> torch.Tensor:
    """Encode x (N, C, H, W) -> (N, c_z, H/f, W/f) like `decode_tiled`: cores of at most `tile` x `tile` latent
    positions (tile f x tile f pixels), each with `halo` latent positions (halo f pixels) of context, and the
    image's exact GroupNorm statistics for the encoder's `norms`; memory ~ one
    (tile + 2 halo)^2 latent tile's encode."""
    if x.ndim != 4 or factor < 1 or x.shape[-2] % factor or x.shape[-1] % factor:
        raise ValueError(f"expected (N, C, H, W) with H, W multiples of factor={factor}, got shape {tuple(x.shape)}")
    return _apply_tiled(encode, x, f_in=factor, f_out=1, tile=tile, halo=tile // 2 if halo is None else halo,
                        norms=norms)  # fmt: skip


Tiles = list[tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]]
Stats = dict[int, tuple[torch.Tensor, torch.Tensor]]


def _apply_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    f_in: int,
    f_out: int,
    tile: int,
    halo: int,
    norms: Sequence[nn.GroupNorm],
) -> torch.Tensor:
    """fn on x (N, C, h f_in, w f_in) -> (N, C', h f_out, w f_out), tiled on the (h, w) grid, with the image's
    exact GroupNorm statistics (module doc)."""
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    h, w = x.shape[-2] // f_in, x.shape[-1] // f_in  # grid positions (latents)
    if h <= tile and w <= tile:
        return fn(x)
    # per tile: core rows, core cols, and the window (core + halo, clipped) that is run, in grid positions
    tiles: Tiles = [
        ((y0, y1), (x0, x1), (max(0, y0 - halo), min(h, y1 + halo)), (max(0, x0 - halo), min(w, x1 + halo)))
        for y0, y1 in tile_cores(h, tile)
        for x0, x1 in tile_cores(w, tile)
    ]

    def window(wy0: int, wy1: int, wx0: int, wx1: int) -> torch.Tensor:
        return x[:, :, wy0 * f_in : wy1 * f_in, wx0 * f_in : wx1 * f_in]

    norms = list(norms)
    stats: Stats = {}
    if norms:
        stats = _exact_stats(fn, window, tiles, norms, window(0, min(tile, h), 0, min(tile, w)))
    out: torch.Tensor | None = None
    f = f_out
    with _image_group_norms(norms, stats, {}) if norms else contextlib.nullcontext():
        for (y0, y1), (x0, x1), (wy0, wy1), (wx0, wx1) in tiles:
            xt = fn(window(wy0, wy1, wx0, wx1))  # (N, C', (wy1 - wy0) f, (wx1 - wx0) f)
            if out is None:
                out = torch.zeros(x.shape[0], xt.shape[1], h * f, w * f, dtype=xt.dtype, device=xt.device)
            out[:, :, y0 * f : y1 * f, x0 * f : x1 * f] = xt[
                :, :, (y0 - wy0) * f : (y1 - wy0) * f, (x0 - wx0) * f : (x1 - wx0) * f
            ]
    assert out is not None
    release_free_memory()
    return out


def _core(t: tuple) -> tuple:
    """A tile's core within its window and the window size: ((y0, y1), (x0, x1), (wh, ww)), in latents."""
    (y0, y1), (x0, x1), (wy0, wy1), (wx0, wx1) = t
    return (y0 - wy0, y1 - wy0), (x0 - wx0, x1 - wx0), (wy1 - wy0, wx1 - wx0)


def _exact_stats(
    fn: Callable[[torch.Tensor], torch.Tensor],
    window: Callable[..., torch.Tensor],
    tiles: Tiles,
    norms: list[nn.GroupNorm],
    first: torch.Tensor,
) -> Stats:
    """The image's exact statistics of every GroupNorm, one pass over the tiles per GroupNorm in call order (each
    halted at it, the earlier ones normalising with theirs): about L / 2 extra runs of `fn` for L GroupNorms."""
    index = {id(m): k for k, m in enumerate(norms)}
    order: list[int] = []
    hooks = [m.register_forward_pre_hook(lambda m, _: order.append(index[id(m)])) for m in norms]
    try:
        fn(first)  # records the call order
    finally:
        for hk in hooks:
            hk.remove()
    stats: Stats = {}
    for k in dict.fromkeys(order):  # unique, in call order
        collect: dict = {"index": k}
        with _image_group_norms(norms, stats, collect):
            for t in tiles:
                collect["core"] = _core(t)
                try:
                    fn(window(*t[2], *t[3]))
                except _Halt:
                    pass
        stats[k] = _mean_var(collect)
        release_free_memory()
    return stats


# ---------------------------------------------------------------------------------------------------------------
# Tiled denoising: the network of every sampler step on overlapping tiles, predictions blended with smooth weights
# ---------------------------------------------------------------------------------------------------------------
Net = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Starts of windows of `tile` positions covering [0, n) with at least `overlap` shared between neighbours.

    The first window starts at 0 and the last ends at n; the k windows in between are spread evenly
    (k = ceil((n - overlap) / (tile - overlap))), so every neighbour pair shares >= `overlap` positions.
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if n <= tile:
        return [0]
    k = -(-(n - overlap) // (tile - overlap))  # windows needed
    return [round(i * (n - tile) / (k - 1)) for i in range(k)]


def blend_ramp(size: int, lo: int, hi: int, *, device: torch.device | None = None) -> torch.Tensor:
    """(size,) weights: a raised-cosine ramp 0 -> 1 over the first `lo` and 1 -> 0 over the last `hi` positions.

    The ramp never reaches 0 (sample i of `lo` has weight sin^2(pi (i + 1/2) / (2 lo))), so every position has a
    positive weight; a side with 0 (the image border) keeps weight 1 up to the edge.
    """
    w = torch.ones(size, dtype=torch.float32, device=device)
    for n, flip in ((lo, False), (hi, True)):
        if n > 0:
            r = torch.sin(torch.pi * (torch.arange(n, device=device) + 0.5) / (2 * n)) ** 2  # (n,) rising
            if flip:
                w[size - n :] = torch.minimum(w[size - n :], r.flip(0))
            else:
                w[:n] = torch.minimum(w[:n], r)
    return w


def _ramps(starts: list[int], size: int) -> list[tuple[int, int]]:
    """(rising, falling) ramp lengths of each window: the positions it shares with its previous / next window."""
    out = []
    for k, s in enumerate(starts):
        lo = starts[k - 1] + size - s if k > 0 else 0
        hi = s + size - starts[k + 1] if k + 1 < len(starts) else 0
        out.append((max(lo, 0), max(hi, 0)))
    return out


def window_weights(
    h: int, w: int, tile: int, overlap: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> tuple[dict[tuple[int, int], torch.Tensor], torch.Tensor]:
    """The windows of an (h, w) grid: {(top, left): (th, tw) blend weights} and their sum (1, 1, h, w).

    Windows are min(tile, h) x min(tile, w); weights are separable raised-cosine ramps over the overlaps
    (`blend_ramp`), which sum to 1 wherever exactly two windows overlap along an axis.
    """
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, min(overlap, th - 1)), tile_starts(w, tw, min(overlap, tw - 1))
    wys = [blend_ramp(th, lo, hi, device=device) for lo, hi in _ramps(ys, th)]  # (th,) each
    wxs = [blend_ramp(tw, lo, hi, device=device) for lo, hi in _ramps(xs, tw)]  # (tw,) each
    masks = {(y, x0): (wy[:, None] * wx[None, :]).to(dtype) for y, wy in zip(ys, wys) for x0, wx in zip(xs, wxs)}
    weight = torch.zeros(1, 1, h, w, dtype=dtype, device=device)
    for (y, x0), m in masks.items():
        weight[0, 0, y : y + th, x0 : x0 + tw] += m
    return masks, weight


def tiled_net(
    net: Net,
    *,
    tile: int,
    overlap: int,
    batch: int = 8,
    on_call: Callable[[int], None] | None = None,
    norms: Sequence[nn.GroupNorm] = (),
    stats_passes: int = 0,
) -> Net:
    """`net` (B, C_in, H, W), (B,) -> (B, C_out, H, W) evaluated on overlapping `tile` x `tile` windows.

    Every (item, window) pair goes through `net` in chunks of at most `batch`; each window's output is weighted by
    a separable raised-cosine ramp over the `overlap` it shares with its neighbours (weight 1 at the image border)
    and the weighted sum is divided by the summed weights. A sampler that calls the result at every step moves all
    tiles together through one chain: the blend is the model output of that step (no per-tile chains). A grid no
    larger than `tile` is one window (exactly `net`). `on_call(k)` is told after each chunk of k windows.

    Image-wide GroupNorm statistics: with `norms` (the network's GroupNorm modules) and `stats_passes` = P > 0,
    every call first runs P statistics passes over all windows; each measures, per item and group, the mean and
    variance of every GroupNorm's input over the whole image (window by window, each position weighted by its
    window's share of the blend so that it counts once), normalising with the previous pass's estimates; the
    final pass normalises with the last estimates. Cost: P + 1 network passes; memory: that of one chunk.
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if stats_passes < 0:
        raise ValueError(f"stats_passes must be >= 0, got {stats_passes}")
    norms = list(norms)

    def forward(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if (h <= tile and w <= tile) or not norms or not stats_passes:
            return _windows_pass(net, x, t, tile, overlap, batch, on_call, None)
        stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for _ in range(stats_passes):
            state = _NormState(stats=stats, acc={})
            with _window_group_norms(norms, state):
                _windows_pass(net, x, t, tile, overlap, batch, on_call, state, blend=False)
            stats = state.finish()
        final = _NormState(stats=stats)
        with _window_group_norms(norms, final):
            return _windows_pass(net, x, t, tile, overlap, batch, on_call, final)

    return forward


@dataclass
class _NormState:
    """GroupNorm statistics of a tiled network pass: `stats` k -> (mean, var), each (B, G) per item, to normalise
    with (absent: the window's own); `acc` k -> [sum, sum of squares, count], each (B, G) float64, to measure.

    Per chunk: `items` (k,) the item of each window, `share` (k, th, tw) each position's share of the blend."""

    stats: dict[int, tuple[torch.Tensor, torch.Tensor]]
    acc: dict[int, list[torch.Tensor]] | None = None
    items: torch.Tensor | None = None
    share: torch.Tensor | None = None
    batch_size: int = 0
    halt: int | None = None  # raise _Halt once this GroupNorm has been measured (exact per-layer passes)

    def finish(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """The measured (mean, var) per GroupNorm, each (B, G) float64, plus the given ones not measured."""
        out = dict(self.stats)
        for k, (s, sq, n) in (self.acc or {}).items():
            mean = s / n
            out[k] = (mean, (sq / n - mean * mean).clamp_min(0.0))
        return out


def _measure(state: _NormState, k: int, x: torch.Tensor, groups: int) -> None:
    """Add x's (k windows, C, h_l, w_l) or (k, C, h_l w_l) weighted moments per item and group into state.acc[k].

    Each window's weighted mean and variance about it are taken in x's dtype, then combined in float64 (sum of
    w x = W m, sum of w x^2 = W (v + m^2)), which avoids the cancellation of raw float32 sums of squares."""
    assert state.acc is not None and state.share is not None and state.items is not None
    n, c = x.shape[:2]
    th, tw = state.share.shape[-2:]
    r = round((th * tw / x[0, 0].numel()) ** 0.5)  # this layer's downsampling relative to the window grid
    share = F.avg_pool2d(state.share[:, None], r) if r > 1 else state.share[:, None]  # (k, 1, th/r, tw/r)
    wgt = share.reshape(n, 1, 1, -1).to(x.dtype)  # (k, 1, 1, area)
    xg = x.reshape(n, groups, c // groups, -1)  # (k, G, C/G, area)
    total = wgt.sum((2, 3)) * (c // groups)  # (k, 1): the window's weight per group
    mean = (xg * wgt).sum((2, 3)) / total  # (k, G)
    var = ((xg - mean[..., None, None]) ** 2 * wgt).sum((2, 3)) / total  # (k, G)
    big_w = total.double().expand(n, groups)
    m64 = mean.double()
    zeros = [torch.zeros(state.batch_size, groups, dtype=torch.float64, device=x.device) for _ in range(3)]
    acc = state.acc.setdefault(k, zeros)
    for a, v in zip(acc, (big_w * m64, big_w * (var.double() + m64 * m64), big_w)):
        a.index_add_(0, state.items, v)


@contextlib.contextmanager
def _window_group_norms(norms: Sequence[nn.GroupNorm], state: _NormState) -> Iterator[None]:
    """Within the block GroupNorm k normalises windows with the image statistics state.stats[k] when present (else
    with the window's own) and, when state.acc is set, first measures its input (`_measure`)."""

    def forward_for(k: int, gn: nn.GroupNorm) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(x: torch.Tensor) -> torch.Tensor:  # (k, C, h_l, w_l); in attention (k, C, h_l w_l)
            g = gn.num_groups
            if state.acc is not None:
                _measure(state, k, x, g)
                if state.halt == k:
                    raise _Halt
            if k not in state.stats:
                return F.group_norm(x, g, gn.weight, gn.bias, gn.eps)
            assert state.items is not None
            mean, var = (v[state.items].to(x.dtype) for v in state.stats[k])  # (k, G) each: the windows' images
            return _group_norm_with(x, gn, mean, var)

        return forward

    with _patched_forwards(norms, forward_for):
        yield


def _windows_pass(
    net: Net,
    x: torch.Tensor,
    t: torch.Tensor,
    tile: int,
    overlap: int,
    batch: int,
    on_call: Callable[[int], None] | None,
    state: _NormState | None,
    *,
    blend: bool = True,
) -> torch.Tensor:
    """One pass of `net` over the windows of x (B, C_in, H, W): the normalised blend (B, C_out, H, W), or x itself
    when not `blend` (a statistics pass; `state` gets each chunk's items and blend shares)."""
    b, _, h, w = x.shape
    masks, weight = window_weights(h, w, tile, overlap, device=x.device, dtype=x.dtype)
    th, tw = next(iter(masks.values())).shape
    windows = [(i, y, x0) for i in range(b) for (y, x0) in masks]  # (item, top, left)
    out: torch.Tensor | None = None
    for c0 in range(0, len(windows), batch):
        chunk = windows[c0 : c0 + batch]
        xin = torch.stack([x[i, :, y : y + th, x0 : x0 + tw] for i, y, x0 in chunk])  # (k, C_in, th, tw)
        items = torch.tensor([i for i, _, _ in chunk], device=x.device)
        if state is not None:
            state.items, state.batch_size = items, b
            state.share = torch.stack([masks[(y, x0)] / weight[0, 0, y : y + th, x0 : x0 + tw] for _, y, x0 in chunk])
        try:
            pred = net(xin, t[items])  # (k, C_out, th, tw)
        except _Halt:
            continue
        finally:
            if on_call is not None:
                on_call(len(chunk))
        if not blend:
            continue
        if out is None:
            out = torch.zeros(b, pred.shape[1], h, w, dtype=pred.dtype, device=pred.device)
        for (i, y, x0), p in zip(chunk, pred):
            out[i, :, y : y + th, x0 : x0 + tw] += p * masks[(y, x0)]
    if not blend:
        return x
    assert out is not None
    return out / weight  # (B, C_out, H, W): the normalised blend


def count_windows(h: int, w: int, tile: int, overlap: int) -> int:
    """How many windows `tiled_net` runs per item on an (h, w) grid."""
    th, tw = min(tile, h), min(tile, w)
    return len(tile_starts(h, th, min(overlap, th - 1))) * len(tile_starts(w, tw, min(overlap, tw - 1)))
