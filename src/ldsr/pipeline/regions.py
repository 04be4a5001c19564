"""Large inputs in bounded memory: a whole-slide region into a pyramidal BigTIFF, a NIfTI volume slice by slice.

`upscale_region` reads the region of one slide level in LR chunks of `chunk` x `chunk` pixels, each with a
context margin of `overlap` LR pixels on every side, upscales every chunk with the upscaler (whose own tiled
sampling bounds the network's memory: `tile`, `tile_overlap`), and blends neighbouring chunks linearly across
a band of `overlap` LR pixels centred on their common edge (the outer half of each margin is cropped, where
the chunk's own border handling shows). Chunks run one row of chunks (a band) at a time; each finished band is
handed to the pyramid writer (`ldsr.io.wsi.write_pyramid`), so peak memory is one band of output,
about (chunk + overlap) * s rows x the region's width * s x C x 8 bytes (float32 sum and weight), plus the
upscaler's own working memory for one chunk; never the whole region.

Context: inside the region a chunk's margin holds the real neighbouring pixels; at the region's edge the
region is mirrored (symmetric, edge pixel repeated: the rule of `imresize` and of the upscaler's own border),
so the result is the upscale of the region as an image of its own. For bicubic the chunked result equals the
direct `imresize` of the region up to float rounding once `overlap` >= 4 (the cubic kernel reaches 2 LR pixels;
half of the margin is cropped).

Noise: chunk k is sampled with seed `seed + k` (row-major), so a run is reproducible and chunks do not repeat
one noise pattern.

`upscale_volume` upscales a NIfTI volume in-plane, slice by slice along a RAS axis, and writes a NIfTI volume
with the voxel size divided by the scale in-plane and the affine moved by the half-pixel rule
(`ldsr.io.volume`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ldsr.io.meta import quantize
from ldsr.io.volume import in_plane_axes, read_volume, slice_image, slice_values, upscaled_affine, write_volume
from ldsr.io.wsi import MIN_LEVEL_SIDE, Compression, Layout, Slide, to_unit, write_pyramid
from ldsr.pipeline.upscaler import Upscaler

CHUNK = 256  # LR pixels per chunk side (default)
OVERLAP = 16  # LR pixels of context around each chunk; half of it is the blend band
Region = tuple[int, int, int, int]  # x, y, w, h in pixels of the chosen level
ChunkProgress = Callable[[int, int], None]  # (chunks done, chunks in all)


@dataclass(frozen=True)
class RegionResult:
    """What `upscale_region` wrote: the pyramid's level sizes, level 0's pixel size and the chunks computed."""

    path: Path
    shape: tuple[int, int, int]  # (H, W, C) of level 0
    levels: list[tuple[int, int]]
    mpp: tuple[float, float] | None  # um per pixel (x, y) of level 0; None when the slide had none
    chunks: int
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class VolumeResult:
    """What `upscale_volume` wrote: the output shape (file voxel order), voxel sizes and the new affine."""

    path: Path
    shape: tuple[int, ...]
    zooms: tuple[float, ...]
    affine: np.ndarray
    slices: int
    warnings: tuple[str, ...]


def parse_region(text: str) -> Region:
    """'x,y,w,h' (integers, w and h >= 1) -> (x, y, w, h); ValueError with the reason otherwise."""
    parts = [p.strip() for p in text.split(",")]
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"region must be four integers x,y,w,h, got {text!r}") from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise ValueError(f"region needs x, y >= 0 and w, h >= 1, got {text!r}")
    return x, y, w, h


def splits(n: int, chunk: int) -> list[tuple[int, int]]:
    """[0, n) cut into ceil(n / chunk) nearly equal [start, end) pieces (sizes differ by at most 1)."""
    k = max(1, math.ceil(n / chunk))
    edges = [round(i * n / k) for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:]))


def blend_weights(lo: int, hi: int, core: tuple[int, int], half: int, n: int) -> np.ndarray:
    """Weights of output pixels [lo, hi) of a chunk whose core is [core[0], core[1]) on an axis of n pixels.

    Across a shared edge e the two chunks cross-fade linearly over [e - half, e + half): the chunk ending at e
    weighs (e + half - (p + 1/2)) / (2 half) at pixel p, the one starting there its complement, so the weights
    of every pixel sum to 1. At the outer edges of the axis (0 and n) the weight stays 1.
    """
    p = np.arange(lo, hi, dtype=np.float64) + 0.5  # pixel centres
    w = np.ones(hi - lo, dtype=np.float64)
    if half > 0 and core[0] > 0:
        w = np.minimum(w, np.clip((p - (core[0] - half)) / (2 * half), 0.0, 1.0))
    if half > 0 and core[1] < n:
        w = np.minimum(w, np.clip(((core[1] + half) - p) / (2 * half), 0.0, 1.0))
    return w.astype(np.float32)


def _read_band(slide: Slide, region: Region, level: int, r0: int, r1: int, m: int) -> np.ndarray:
    """Region rows [r0 - m, r1 + m) and columns [-m, w + m) in [0, 1]; outside the region mirrored (symmetric)."""
    x, y, w, h = region
    a, b = max(r0 - m, 0), min(r1 + m, h)
    lr = to_unit(slide.read_region(x, y + a, w, b - a, level))  # (b - a, w, C)
    pad = ((a - (r0 - m), (r1 + m) - b), (m, m), (0, 0))
    return np.pad(lr, pad, mode="symmetric")


def _sr_bands(up: Upscaler, slide: Slide, region: Region, level: int, chunk: int, overlap: int, seed: int,
              call: dict[str, Any], progress: ChunkProgress | None,
              warnings: list[str]) -> Iterator[np.ndarray]:  # fmt: skip
    """Level 0 of the output in row bands (rows, W*s, C) of stored integers, one band of chunks at a time."""
    _, _, w, h = region
    s, m = up.scale, overlap
    half = m * s // 2  # HR pixels on each side of a chunk edge over which neighbours cross-fade
    rows, cols = splits(h, chunk), splits(w, chunk)
    bits: Literal[8, 16] = 16 if slide.info.dtype == "uint16" else 8
    width, c = w * s, slide.info.channels
    carry: tuple[np.ndarray, np.ndarray] | None = None  # (sum, weight) of the rows the next band also covers
    k, total = 0, len(rows) * len(cols)
    for r0, r1 in rows:
        lr = _read_band(slide, region, level, r0, r1, m)  # (r1 - r0 + 2m, w + 2m, C)
        top, bot = max(r0 * s - half, 0), min(r1 * s + half, h * s)  # output rows this band touches
        acc = np.zeros((bot - top, width, c), np.float32)
        wsum = np.zeros((bot - top, width, 1), np.float32)
        wr = blend_weights(top, bot, (r0 * s, r1 * s), half, h * s)
        for c0, c1 in cols:
            res = up.upscale(lr[:, c0 : c1 + 2 * m], seed=seed + k, **call)  # (ext_h * s, ext_w * s, C)
            if res.warning and res.warning not in warnings:
                warnings.append(res.warning)
            left, right = max(c0 * s - half, 0), min(c1 * s + half, width)
            oy, ox = (r0 - m) * s, (c0 - m) * s  # output position of the chunk's first pixel
            sr = res.image[top - oy : bot - oy, left - ox : right - ox]
            wgt = wr[:, None] * blend_weights(left, right, (c0 * s, c1 * s), half, width)[None, :]
            acc[:, left:right] += sr * wgt[:, :, None]
            wsum[:, left:right, 0] += wgt
            k += 1
            if progress is not None:
                progress(k, total)
        if carry is not None:
            n = carry[0].shape[0]
            acc[:n] += carry[0]
            wsum[:n] += carry[1]
        end = (r1 * s - half - top) if r1 < h else bot - top  # rows no later band touches
        yield quantize(acc[:end] / wsum[:end], bits)
        carry = (acc[end:].copy(), wsum[end:].copy())


def upscale_region(
    upscaler: Upscaler,
    slide_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    region: Region | None = None,
    level: int = 0,
    *,
    chunk: int = CHUNK,
    overlap: int = OVERLAP,
    tile: int | None = None,
    tile_overlap: int | None = None,
    seed: int = 0,
    compression: Compression = "deflate",
    layout: Layout = "pages",
    min_level_side: int = MIN_LEVEL_SIDE,
    on_chunk: ChunkProgress | None = None,
    **options: Any,
) -> RegionResult:
    """Upscale `region` (x, y, w, h; None: the whole level) of slide `level` into a pyramidal BigTIFF.

    `chunk` / `overlap`: LR pixels of the chunks and their context (see the module docstring); `tile` /
    `tile_overlap`: the upscaler's denoiser tiles inside a chunk (None: automatic); `on_chunk(done, total)`
    after every chunk; `options`: the other keywords of `Upscaler.upscale` (mode, steps, samples, progress,
    ...). Level 0's pixel size is the level's divided by the scale. ValueError (one line) for a region outside
    the level, a channel mismatch or bad sizes.
    """
    if chunk < 8 or not 0 <= overlap <= chunk // 2:
        raise ValueError(f"need chunk >= 8 and 0 <= overlap <= chunk / 2 (LR pixels), got {chunk}, {overlap}")
    with Slide(slide_path) as slide:
        if not 0 <= level < len(slide.info.levels):
            slide.check_region(0, 0, 1, 1, level)  # raises: no such level
        lv = slide.info.levels[level]
        region = (0, 0, lv.width, lv.height) if region is None else region
        slide.check_region(*region, level=level)
        channels = slide.info.channels
        if upscaler.channels is not None and upscaler.channels != channels:
            raise ValueError(
                f"{slide_path}: the slide has {channels} channel(s) but {upscaler.name} takes {upscaler.channels}"
            )
        s = upscaler.scale
        shape = (region[3] * s, region[2] * s, channels)
        mpp = lv.mpp
        out_mpp = None if mpp is None else (mpp[0] / s, mpp[1] / s)
        call = dict(options, tile=tile, tile_overlap=tile_overlap)
        warnings: list[str] = []
        bands = _sr_bands(upscaler, slide, region, level, chunk, overlap, seed, call, on_chunk, warnings)
        where = f"level {level} region x={region[0]}, y={region[1]}, w={region[2]}, h={region[3]}"
        sizes = write_pyramid(out_path, bands, shape, slide.info.dtype, mpp=out_mpp, compression=compression,
                              layout=layout, min_side=min_level_side,
                              description=f"ldsr {upscaler.name} x{s} super-resolution of {Path(slide_path).name} "
                                          f"{where}")  # fmt: skip
        n_chunks = len(splits(region[3], chunk)) * len(splits(region[2], chunk))
    return RegionResult(Path(out_path), shape, sizes, out_mpp, n_chunks, tuple(warnings))


def upscale_volume(
    upscaler: Upscaler,
    volume_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    axis: int = 2,
    *,
    on_slice: ChunkProgress | None = None,
    **options: Any,
) -> VolumeResult:
    """Upscale a NIfTI volume in-plane, slice by slice along RAS axis `axis`, into a NIfTI volume.

    Each slice is upscaled as `read_frames(volume_path, axis=axis)` shows it (`options`: keywords of
    `Upscaler.upscale`; `on_slice(slices done, slices)`), mapped back to the volume's values (integer volumes
    keep their type) and its voxel order; the voxel size is divided by the scale in-plane and the affine
    follows the half-pixel rule of `ldsr.io.volume`. The output volume is held in memory in the source's
    value type (the input's size x scale^2).
    """
    a, b = in_plane_axes(axis)
    vol = read_volume(volume_path)
    if upscaler.channels not in (None, 1):
        raise ValueError(f"{volume_path}: a volume has 1 channel but {upscaler.name} takes {upscaler.channels}")
    s = upscaler.scale
    shape = list(vol.data.shape)
    shape[a] *= s
    shape[b] *= s
    dtype = vol.data.dtype if vol.data.dtype.kind in "iu" else np.dtype(np.float32)
    out = np.zeros(shape, dtype=dtype)  # RAS+ voxel order
    n = vol.data.shape[axis]
    warnings: list[str] = []
    for k in range(n):
        res = upscaler.upscale(slice_image(vol, k, axis), **options)  # (B*s, A*s, 1)
        if res.warning and res.warning not in warnings:
            warnings.append(res.warning)
        index: list[Any] = [slice(None)] * 3
        index[axis] = k
        out[tuple(index)] = slice_values(vol, res.image, dtype)  # (A*s, B*s)
        if on_slice is not None:
            on_slice(k + 1, n)
    written = write_volume(out_path, out, vol, upscaled_affine(vol.affine, s, (a, b)))
    return VolumeResult(Path(out_path), tuple(written.shape), tuple(float(z) for z in written.header.get_zooms()),
                        np.asarray(written.affine), n, tuple(warnings))  # fmt: skip
