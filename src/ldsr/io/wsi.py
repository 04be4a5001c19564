"""Whole-slide images (tifffile): read a region of one pyramid level, write a tiled pyramidal BigTIFF.

Reading (`Slide`): an Aperio SVS or any tiled / striped (pyramidal) TIFF. Level 0 is the full resolution;
the levels are tifffile's pyramid of the first series (SVS: the baseline pages; generic TIFF: reduced pages or
SubIFDs). `Slide.read_region` decodes only the tiles (or strips) that the region touches, so a region of a
100k x 100k slide costs what the region costs. The physical pixel size comes from the file:

- SVS: `MPP = <um per pixel>` in the ImageDescription (level 0; a level's size is MPP x its down-sample);
- other TIFF: XResolution / YResolution with ResolutionUnit inch (25 400 um) or centimetre (10 000 um),
  um per pixel = unit / resolution; no unit (or no tags): unknown (None).

Writing (`write_pyramid`): a BigTIFF with level 0 and its 2x down-samples (2x2 box mean, edge pixels repeated
for odd sides) until the largest side falls below `min_side` (1024), every level tiled (256 x 256), deflate
(lossless, default) or JPEG compressed, NewSubfileType 1 (reduced) on every level after the first, and
XResolution / YResolution in pixels per centimetre with the level's pixel size (level k: 2^k times level 0's).

Two standard layouts (`layout`):
- "pages" (default): the levels are successive top-level IFDs. OpenSlide's generic-tiff reader builds its
  levels from the tiled top-level directories, and QuPath opens such files through OpenSlide, so both see
  the whole pyramid; tifffile, libvips and Bio-Formats read it too.
- "subifds": level 0 is the only top-level IFD and the reduced levels are its SubIFDs (the OME-TIFF / QuPath
  export convention read by Bio-Formats); OpenSlide then sees level 0 only.

The writer streams: it consumes row bands of level 0 (any height, full width) and feeds tifffile one tile at a
time; each reduced level is spooled to an anonymous temporary file beside the output (a quarter of the previous
level) and streamed from there, so memory holds a band of rows, never a whole level.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, get_args

import numpy as np
import tifffile

from ldsr.io.files import ImageError, _check_readable, _one_line, atomic_path

Compression = Literal["deflate", "jpeg"]
COMPRESSIONS: tuple[str, ...] = get_args(Compression)
Layout = Literal["pages", "subifds"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
TILE = 256  # output tile side (pixels)
MIN_LEVEL_SIDE = 1024  # reduced levels are added until the largest side of the last one is below this
JPEG_QUALITY = 90
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff")
# um per ResolutionUnit: 1 none, 2 inch, 3 centimetre (4 mm and 5 um are tifffile extensions)
_UM_PER_UNIT = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}
_MPP_RE = re.compile(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)")


@dataclass(frozen=True)
class SlideLevel:
    """One pyramid level: its size in pixels, its down-sample factors (x, y) against level 0 and its pixel size
    (x, y) in um (None when unknown)."""

    width: int
    height: int
    downsample: tuple[float, float]
    mpp: tuple[float, float] | None


@dataclass(frozen=True)
class SlideInfo:
    """A slide's pyramid; `mpp` is level 0's pixel size (x, y) in micrometres, None when the file has none."""

    path: str
    vendor: Literal["svs", "tiff"]
    levels: tuple[SlideLevel, ...]
    channels: int
    dtype: str  # "uint8" or "uint16"
    mpp: tuple[float, float] | None

    def level_mpp(self, level: int) -> tuple[float, float] | None:
        """Pixel size (x, y) in um at `level` (`SlideLevel.mpp`)."""
        return self.levels[level].mpp


def _resolution_mpp(page: tifffile.TiffPage) -> tuple[float, float] | None:
    """um per pixel (x, y) from XResolution / YResolution and ResolutionUnit; None without a physical unit."""
    tags = page.tags
    unit_tag = tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default: inch
    if unit not in _UM_PER_UNIT or "XResolution" not in tags or "YResolution" not in tags:
        return None
    out = []
    for name in ("XResolution", "YResolution"):
        num, den = tags[name].value
        res = num / den if den else 0.0
        if not (res > 0 and math.isfinite(res)):
            return None
        out.append(_UM_PER_UNIT[unit] / res)
    if out == [_UM_PER_UNIT[unit], _UM_PER_UNIT[unit]]:  # 1 pixel per unit: the writer's "no resolution" value
        return None
    return (out[0], out[1])


def _svs_mpp(description: str) -> tuple[float, float] | None:
    match = _MPP_RE.search(description)
    if match is None:
        return None
    try:
        mpp = float(match.group(1))
    except ValueError:
        return None
    return (mpp, mpp) if mpp > 0 and math.isfinite(mpp) else None


class Slide:
    """An open SVS / pyramidal TIFF: `info` and `read_region`. Use as a context manager (or call `close`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        _check_readable(self.path)
        try:
            self._tf = tifffile.TiffFile(self.path)
        except tifffile.TiffFileError as e:
            raise ImageError(self.path, f"not a TIFF / SVS file (could not decode: {_one_line(e, self.path)})") from e
        except (ValueError, OSError, EOFError, IndexError, zlib.error) as e:
            raise ImageError(self.path, f"truncated or corrupt TIFF data ({_one_line(e, self.path)})") from e
        try:
            self._pages, self.info = self._scan()
        except (ValueError, OSError, EOFError, IndexError, KeyError, zlib.error, tifffile.TiffFileError) as e:
            self._tf.close()
            if isinstance(e, ImageError):
                raise
            raise ImageError(self.path, f"truncated or corrupt TIFF data ({_one_line(e, self.path)})") from e
        except BaseException:
            self._tf.close()
            raise

    def _scan(self) -> tuple[list[tifffile.TiffPage], SlideInfo]:
        if not self._tf.series:
            raise ImageError(self.path, "not a slide (the TIFF holds no image)")
        series = self._tf.series[0]
        pages: list[tifffile.TiffPage] = []
        for lvl in series.levels:
            page = lvl.keyframe
            if len(lvl.pages) != 1 or page.imagedepth != 1:
                raise ImageError(self.path, f"unsupported slide layout (a level of shape {lvl.shape}, axes {lvl.axes})")
            pages.append(page)
        first = pages[0]
        spp = int(first.samplesperpixel)
        if spp not in (1, 3, 4) or first.dtype not in (np.uint8, np.uint16):
            raise ImageError(
                self.path, f"unsupported slide pixels ({spp} samples of {first.dtype}; need grey or RGB uint8/16)"
            )
        w0, h0 = int(first.imagewidth), int(first.imagelength)
        vendor: Literal["svs", "tiff"] = "svs" if self._tf.is_svs else "tiff"
        mpp = _svs_mpp(first.description) if vendor == "svs" else _resolution_mpp(first)
        levels = []
        for p in pages:
            down = (w0 / p.imagewidth, h0 / p.imagelength)
            # A level's own resolution tags where a TIFF has them (a 2x reduction of an odd side keeps pitch 2,
            # not the size ratio); SVS levels (and TIFF levels without tags): level 0's size x the size ratio.
            own = _resolution_mpp(p) if vendor == "tiff" else None
            lmpp = own if own is not None else (None if mpp is None else (mpp[0] * down[0], mpp[1] * down[1]))
            levels.append(SlideLevel(int(p.imagewidth), int(p.imagelength), down, lmpp))
        channels = 1 if spp == 1 else 3  # an alpha sample is dropped
        return pages, SlideInfo(str(self.path), vendor, tuple(levels), channels, str(np.dtype(first.dtype)), mpp)

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._tf.close()

    def check_region(self, x: int, y: int, w: int, h: int, level: int = 0) -> None:
        """ValueError (one line) unless level exists and (x, y, w, h) lies inside it with w, h >= 1."""
        n = len(self.info.levels)
        if not 0 <= level < n:
            raise ValueError(f"{self.path}: level {level} does not exist (the slide has levels 0..{n - 1})")
        lv = self.info.levels[level]
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > lv.width or y + h > lv.height:
            raise ValueError(
                f"{self.path}: region x={x}, y={y}, w={w}, h={h} is not inside level {level} "
                f"({lv.width} x {lv.height} pixels)"
            )

    def read_region(self, x: int, y: int, w: int, h: int, level: int = 0) -> np.ndarray:
        """Pixels [y, y+h) x [x, x+w) of `level` as stored: (h, w, C) uint8 / uint16, C = `info.channels`.

        Only the tiles / strips that intersect the region are read and decoded.
        """
        self.check_region(x, y, w, h, level)
        page = self._pages[level]
        spp = int(page.samplesperpixel)
        if page.planarconfig != 1 and spp > 1:  # separate planes: decode the page, crop (rare for slides)
            arr = np.asarray(page.asarray())
            arr = np.moveaxis(arr, 0, -1) if arr.shape[0] == spp else arr
            return self._channels(arr[y : y + h, x : x + w])
        if page.is_tiled:
            seg_h, seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            seg_h, seg_w = int(page.rowsperstrip or page.imagelength), int(page.imagewidth)
        cols = -(-int(page.imagewidth) // seg_w)
        out = np.zeros((h, w, spp), dtype=page.dtype)
        fh = self._tf.filehandle
        for r in range(y // seg_h, (y + h - 1) // seg_h + 1):
            for c in range(x // seg_w, (x + w - 1) // seg_w + 1):
                index = r * cols + c
                offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
                data = None
                if count > 0:
                    fh.seek(offset)
                    data = fh.read(count)
                try:
                    seg, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
                except (ValueError, NotImplementedError, RuntimeError, tifffile.TiffFileError) as e:
                    raise ImageError(self.path, f"cannot decode tile {index} of level {level} ({_one_line(e)})") from e
                if seg is None:  # an empty tile: left as zeros
                    continue
                seg = np.asarray(seg).reshape(-1, seg_w, spp)  # (rows, seg_w, spp)
                y0, x0 = r * seg_h, c * seg_w
                ys, ye = max(y, y0), min(y + h, y0 + seg.shape[0])
                xs, xe = max(x, x0), min(x + w, x0 + seg_w)
                out[ys - y : ye - y, xs - x : xe - x] = seg[ys - y0 : ye - y0, xs - x0 : xe - x0]
        return self._channels(out)

    def _channels(self, arr: np.ndarray) -> np.ndarray:
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        return np.ascontiguousarray(arr[:, :, : self.info.channels])


def to_unit(arr: np.ndarray) -> np.ndarray:
    """Stored uint8 / uint16 samples k -> float32 k / (2^b - 1) (the rule of `ldsr.io`)."""
    return (arr.astype(np.float32) / np.float32(np.iinfo(arr.dtype).max)).astype(np.float32)


def level_sizes(height: int, width: int, min_side: int = MIN_LEVEL_SIDE) -> list[tuple[int, int]]:
    """(height, width) of level 0 and of each 2x reduction, ceil(n / 2), until the largest side < min_side."""
    if min_side < 1:
        raise ValueError(f"min_side must be >= 1, got {min_side}")
    sizes = [(height, width)]
    while max(sizes[-1]) >= min_side and max(sizes[-1]) > 1:
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def _reduce2(band: np.ndarray) -> np.ndarray:
    """2x2 box mean of an (even or last) row band (h, w, C) of integers: ceil(h/2) x ceil(w/2), rounded half up;
    an odd last row / column is repeated (the mean of a pixel with itself)."""
    a = band.astype(np.uint32)
    if a.shape[0] % 2:
        a = np.concatenate([a, a[-1:]], axis=0)
    if a.shape[1] % 2:
        a = np.concatenate([a, a[:, -1:]], axis=1)
    s = a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]  # (h/2, w/2, C)
    return ((s + 2) // 4).astype(band.dtype)


def _rebanded(bands: Iterable[np.ndarray], rows: int) -> Iterator[np.ndarray]:
    """The same pixels in bands of exactly `rows` rows (the last may be shorter)."""
    pending: list[np.ndarray] = []
    have = 0
    for band in bands:
        pending.append(band)
        have += band.shape[0]
        while have >= rows:
            joined = np.concatenate(pending, axis=0) if len(pending) > 1 else pending[0]
            yield joined[:rows]
            rest = joined[rows:]
            pending, have = ([rest], rest.shape[0]) if rest.shape[0] else ([], 0)
    if have:
        yield np.concatenate(pending, axis=0)


def _spooled(f: IO[bytes], shape: tuple[int, int, int], dtype: np.dtype, rows: int) -> Iterator[np.ndarray]:
    """Read back a level written row by row into `f`, in bands of `rows` rows."""
    f.seek(0)
    h, w, c = shape
    for y in range(0, h, rows):
        n = min(rows, h - y)
        buf = f.read(n * w * c * dtype.itemsize)
        yield np.frombuffer(buf, dtype=dtype).reshape(n, w, c)


def _tiles(bands: Iterable[np.ndarray], shape: tuple[int, int, int], tile: int, spool: IO[bytes] | None,
           ) -> Iterator[np.ndarray]:  # fmt: skip
    """Tiles of one level in row-major order from its row bands; each band's 2x reduction goes to `spool`."""
    h = 0
    for band in _rebanded(bands, tile):  # (tile, W, C) bands; tile is even, so reductions pair rows exactly
        if band.shape[1:] != shape[1:]:
            raise ValueError(f"row band of shape {band.shape} does not match the level's {shape}")
        h += band.shape[0]
        if spool is not None:
            spool.write(np.ascontiguousarray(_reduce2(band)).tobytes())
        for x in range(0, shape[1], tile):
            t = band[:, x : x + tile]
            yield np.ascontiguousarray(t if shape[2] > 1 else t[:, :, 0])  # grey tiles are 2D for tifffile
    if h != shape[0]:
        raise ValueError(f"got {h} rows for a level of {shape[0]} rows")


def write_pyramid(
    path: str | os.PathLike[str],
    bands: Iterable[np.ndarray],
    shape: tuple[int, int, int],
    dtype: str | np.dtype,
    *,
    mpp: tuple[float, float] | None,
    compression: Compression = "deflate",
    layout: Layout = "pages",
    min_side: int = MIN_LEVEL_SIDE,
    tile: int = TILE,
    description: str = "",
) -> list[tuple[int, int]]:
    """Write level 0 from row `bands` ((rows, W, C) arrays of `dtype`, top to bottom) and its reductions.

    `shape` = (H, W, C) of level 0, C in {1, 3}; `mpp` = level 0's pixel size (x, y) in um (None: no resolution
    tags). Written atomically; returns the (height, width) of every level. See the module docstring.
    """
    dt = np.dtype(dtype)
    if dt not in (np.uint8, np.uint16) or shape[2] not in (1, 3):
        raise ValueError(f"a slide pyramid holds grey or RGB uint8 / uint16 pixels, got {shape[2]} x {dt}")
    if compression not in COMPRESSIONS or layout not in LAYOUTS:
        raise ValueError(f"compression must be one of {COMPRESSIONS} and layout one of {LAYOUTS}")
    if compression == "jpeg" and dt != np.uint8:
        raise ValueError("JPEG compression needs 8-bit pixels; use deflate for 16-bit slides")
    if tile < 16 or tile % 16:
        raise ValueError(f"TIFF tiles must be a multiple of 16 pixels, got {tile}")
    sizes = level_sizes(shape[0], shape[1], min_side)
    out = Path(path)
    with atomic_path(out) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        source: Iterable[np.ndarray] = bands
        spool_in: IO[bytes] | None = None
        try:
            for k, (h, w) in enumerate(sizes):
                last = k == len(sizes) - 1
                spool_out = None if last else tempfile.TemporaryFile(dir=out.parent)
                kw = _page_options(k, mpp, compression, shape[2], tile, description, layout, len(sizes))
                dims = (h, w, shape[2]) if shape[2] > 1 else (h, w)  # (h, w, 1) would read as h pages of w x 1
                tw.write(_tiles(source, (h, w, shape[2]), tile, spool_out), shape=dims, dtype=dt, **kw)
                if spool_in is not None:
                    spool_in.close()
                spool_in = spool_out
                if spool_out is not None:
                    spool_out.flush()
                    source = _spooled(spool_out, (*sizes[k + 1], shape[2]), dt, tile)
        finally:
            if spool_in is not None:
                spool_in.close()
    return sizes


def _page_options(level: int, mpp: tuple[float, float] | None, compression: Compression, channels: int, tile: int,
                  description: str, layout: Layout, n_levels: int) -> dict:  # fmt: skip
    kw: dict = dict(
        tile=(tile, tile),
        photometric="rgb" if channels == 3 else "minisblack",
        compression="zlib" if compression == "deflate" else "jpeg",
        metadata=None,
    )
    if compression == "jpeg":
        kw["compressionargs"] = {"level": JPEG_QUALITY}
    if mpp is not None:
        f = 2.0**level
        kw["resolution"] = (1e4 / (mpp[0] * f), 1e4 / (mpp[1] * f))  # pixels per centimetre
        kw["resolutionunit"] = "CENTIMETER"
    if level == 0:
        if description:
            kw["description"] = description
        if layout == "subifds" and n_levels > 1:
            kw["subifds"] = n_levels - 1
    else:
        kw["subfiletype"] = 1  # FILETYPE_REDUCEDIMAGE
    return kw
