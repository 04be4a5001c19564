"""PNG headers and ldsr's own 16-bit PNG codec (Pillow keeps at most 8 bits per channel for colour PNG)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ldsr.io.files import ImageError, _one_line
from ldsr.io.meta import _PIL_NAMES, Frame, ImageFormat, ImageMeta, _unsigned_to_unit

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Colour type -> samples per pixel: grey, RGB, grey + alpha, RGBA (palette, type 3, is left to Pillow).
_PNG_SAMPLES = {0: 1, 2: 3, 4: 2, 6: 4}


@dataclass(frozen=True)
class _PngHeader:
    width: int
    height: int
    bit_depth: int
    colour_type: int
    compression: int
    filter_method: int
    interlace: int


def _parse_ihdr(data: bytes) -> _PngHeader | None:
    """The IHDR chunk of PNG bytes (signature 8 + length 4 + b'IHDR' 4 + 13 data bytes), None if absent."""
    if len(data) < 29 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    return _PngHeader(*struct.unpack(">IIBBBBB", data[16:29]))


def _png_header(path: Path) -> _PngHeader | None:
    try:
        with open(path, "rb") as f:
            return _parse_ihdr(f.read(29))
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------------------
# 16-bit PNG codec (Pillow keeps at most 8 bits per channel for colour PNG)
# ---------------------------------------------------------------------------------------------------------

_IDAT_CHUNK = 1 << 23  # IDAT payload per chunk (any size < 2^31 is valid; several chunks are usual)
_FILTER_BLOCK = 256  # rows filtered at once when encoding (bounds the (5, rows, stride) candidates)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """length (4 bytes, big endian) + type + data + CRC-32 over type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """PNG Paeth predictor of left a, up b, up-left c (signed ints): the one closest to p = a + b - c.

    |p - a| = |b - c|, |p - b| = |a - c|, |p - c| = |a + b - 2c|; ties prefer a, then b.
    """
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filter_scanlines(raw: np.ndarray, bpp: int, filter_type: int | None) -> np.ndarray:
    """(H, stride) uint8 scanlines -> (H, 1 + stride) uint8: the filter type byte, then the filtered row.

    Filters are byte-wise with the left neighbour a = raw[y, i - bpp] (bpp = bytes per pixel), up
    b = raw[y - 1, i], up-left c = raw[y - 1, i - bpp] (0 outside the image): None f = r, Sub r - a,
    Up r - b, Average r - floor((a + b) / 2), Paeth r - paeth(a, b, c), all mod 256. `filter_type` None
    picks per row the filter with the smallest sum of |f| read as signed bytes (libpng's heuristic).
    """
    h, stride = raw.shape
    r = raw.astype(np.int16)
    out = np.empty((h, 1 + stride), np.uint8)
    for y0 in range(0, h, _FILTER_BLOCK):
        y1 = min(h, y0 + _FILTER_BLOCK)
        cur = r[y0:y1]
        up = np.zeros_like(cur)
        up[1:] = cur[:-1]
        if y0 > 0:
            up[0] = r[y0 - 1]
        left = np.zeros_like(cur)
        left[:, bpp:] = cur[:, :-bpp]
        upleft = np.zeros_like(cur)
        upleft[:, bpp:] = up[:, :-bpp]
        cands = np.stack([cur, cur - left, cur - up, cur - ((left + up) >> 1), cur - _paeth(left, up, upleft)])
        cands &= 0xFF  # (5, rows, stride) in 0..255
        rows = np.arange(y1 - y0)
        if filter_type is None:
            signed = np.where(cands >= 128, 256 - cands, cands)  # |byte as int8|
            choice = signed.sum(axis=2, dtype=np.int64).argmin(axis=0)
        else:
            choice = np.full(y1 - y0, filter_type)
        out[y0:y1, 0] = choice
        out[y0:y1, 1:] = cands[choice, rows]
    return out


def _encode_png16(image: np.ndarray, *, filter_type: int | None = None) -> bytes:
    """(H, W, C) uint16, C in {1, 3} -> a 16-bit grey (colour type 0) or RGB (type 2) PNG file's bytes.

    Samples are big endian; one zlib stream of the filtered scanlines split over IDAT chunks.
    """
    if image.dtype != np.uint16 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H, W, 1 or 3) uint16 image, got {image.dtype} {image.shape}")
    if filter_type is not None and filter_type not in range(5):
        raise ValueError(f"PNG filter type must be 0..4 or None (adaptive), got {filter_type}")
    h, w, c = image.shape
    # (H, W, C) -> big-endian bytes per scanline: (H, W * C * 2) uint8.
    raw = np.ascontiguousarray(image, dtype=">u2").view(np.uint8).reshape(h, w * c * 2)
    filtered = _filter_scanlines(raw, 2 * c, filter_type)
    stream = zlib.compress(filtered.tobytes(), 6)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0 if c == 1 else 2, 0, 0, 0)
    parts = [_PNG_SIGNATURE, _png_chunk(b"IHDR", ihdr)]
    for i in range(0, max(len(stream), 1), _IDAT_CHUNK):
        parts.append(_png_chunk(b"IDAT", stream[i : i + _IDAT_CHUNK]))
    parts.append(_png_chunk(b"IEND", b""))
    return b"".join(parts)


def _unfilter_scanlines(filt: np.ndarray, types: np.ndarray, bpp: int) -> np.ndarray:
    """Inverse of `_filter_scanlines`: (H, stride) filtered bytes and (H,) filter types -> raw bytes.

    Rows of types None / Sub / Up only are undone row by row (Sub: a running sum per byte lane, mod 256).
    Average and Paeth depend on the reconstructed left pixel, so they are undone along anti-diagonals
    x + y = d instead: pixel (y, x) needs only (y, x-1), (y-1, x) and (y-1, x-1), all on earlier diagonals,
    which takes H + W - 1 vector steps rather than H * W scalar ones.
    """
    h, stride = filt.shape
    if int(types.max(initial=0)) <= 2:
        out = np.empty((h, stride), np.uint8)
        prior = np.zeros(stride, np.uint8)
        for row in range(h):
            t = int(types[row])
            if t == 0:
                out[row] = filt[row]
            elif t == 1:  # uint8 arithmetic wraps, i.e. is mod 256
                out[row] = np.cumsum(filt[row].reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
            else:
                out[row] = filt[row] + prior
            prior = out[row]
        return out
    w = stride // bpp
    f = filt.reshape(h, w, bpp).astype(np.int16)
    rec = np.zeros((h + 1, w + 1, bpp), np.int16)  # one zero row above and one zero column to the left
    t_all = types.astype(np.int16)
    for d in range(h + w - 1):
        y = np.arange(max(0, d - w + 1), min(h - 1, d) + 1)
        x = d - y
        a, b, c = rec[y + 1, x], rec[y, x + 1], rec[y, x]
        tt = t_all[y][:, None]  # (n, 1) filter type per pixel on the diagonal
        pred = np.select([tt == 1, tt == 2, tt == 3, tt == 4], [a, b, (a + b) >> 1, _paeth(a, b, c)], 0)
        rec[y + 1, x + 1] = (f[y, x] + pred) & 0xFF
    return rec[1:, 1:].astype(np.uint8).reshape(h, stride)


def _decode_png16(data: bytes, path: Path) -> tuple[np.ndarray, bool]:
    """A 16-bit, non-interlaced PNG's bytes -> ((H, W, S) uint16 with every sample, alpha included, and
    whether a tRNS chunk was present). Chunk CRCs are checked; problems raise `ImageError`."""

    def corrupt(reason: str) -> ImageError:
        return ImageError(path, f"truncated or corrupt PNG data ({reason})")

    header = _parse_ihdr(data)
    if header is None:
        raise corrupt("no IHDR chunk")
    if header.bit_depth != 16 or header.colour_type not in _PNG_SAMPLES or header.interlace != 0:
        raise corrupt("not a non-interlaced 16-bit grey or RGB PNG")
    if header.compression != 0 or header.filter_method != 0:
        raise corrupt(f"unknown compression {header.compression} or filter method {header.filter_method}")
    h, w = header.height, header.width
    if h == 0 or w == 0:
        raise corrupt(f"image size {w}x{h}")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and h * w > 2 * limit:
        raise ImageError(path, f"image too large ({h * w} pixels exceeds the limit of {2 * limit})")
    idat: list[bytes] = []
    has_trns, seen_end, pos = False, False, 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise corrupt(f"chunk {kind!r} cut short")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body) & 0xFFFFFFFF:
            raise corrupt(f"CRC mismatch in chunk {kind!r}")
        if kind == b"IDAT":
            idat.append(body)
        elif kind == b"tRNS":
            has_trns = True
        elif kind == b"IEND":
            seen_end = True
            break
        pos += 12 + length
    if not idat or not seen_end:
        raise corrupt("no IDAT chunk" if not idat else "no IEND chunk")
    samples = _PNG_SAMPLES[header.colour_type]
    bpp = 2 * samples
    stride = w * bpp
    expected = h * (1 + stride)
    try:
        raw = zlib.decompressobj().decompress(b"".join(idat), expected)  # at most `expected` bytes
    except zlib.error as e:
        raise corrupt(_one_line(e)) from e
    if len(raw) < expected:
        raise corrupt(f"{len(raw)} of {expected} image bytes")
    rows = np.frombuffer(raw, np.uint8).reshape(h, 1 + stride)
    types = rows[:, 0]
    if int(types.max()) > 4:
        raise corrupt(f"unknown scanline filter type {int(types.max())}")
    unfiltered = _unfilter_scanlines(rows[:, 1:], types, bpp)
    # Big-endian byte pairs -> native uint16, (H, W, S).
    return unfiltered.view(">u2").reshape(h, w, samples).astype(np.uint16), has_trns


def _read_png16(path: Path, fmt: ImageFormat) -> list[Frame]:
    """16-bit colour (or grey + alpha) PNG at full depth, where Pillow would reduce it to 8 bits."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(path, f"cannot read file ({_one_line(e, path)})") from e
    arr, has_trns = _decode_png16(data, path)
    notes: list[str] = []
    if arr.shape[2] in (2, 4):
        arr = arr[:, :, :-1]
        notes.append("alpha channel dropped")
    if has_trns:
        notes.append("transparency (tRNS) ignored")
    if fmt != "png":
        notes.append(f"content is PNG although the suffix says {_PIL_NAMES[fmt]}")
    x = _unsigned_to_unit(arr, 16)
    meta = ImageMeta(
        path=str(path),
        format="png",
        bit_depth=16,
        value_range=(0.0, 65535.0),
        spacing=None,
        channels=x.shape[2],
        notes=tuple(notes),
    )
    return [(x, meta)]
