"""PNG headers and the 16-bit PNG codec (Pillow keeps at most 8 bits per channel for colour PNG).

16-bit colour PNG is read and written with libpng through `imagecodecs`, which replaced a codec written here:
both decode each other's files to the same samples bit for bit, for every filter type (the files differ only in a
few zlib bytes); tRNS is reported, critical-chunk CRCs and the zlib Adler-32 are checked. tests/test_io.py checks
it against Pillow and against PNG files built by hand. 8-bit PNG stays with Pillow (`ldsr.io.pillow`), as does
16-bit grey without alpha, which Pillow reads at full depth.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
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
# 16-bit PNG codec: libpng through imagecodecs (Pillow keeps at most 8 bits per channel for colour PNG)
# ---------------------------------------------------------------------------------------------------------

_PNG_LEVEL = 6  # zlib level (libpng's default, Z_DEFAULT_COMPRESSION)


def _png_filter(filter_type: int | None) -> imagecodecs.PNG.FILTER:
    """PNG filter type 0..4 (None, Sub, Up, Average, Paeth) as libpng's filter flag; None lets libpng pick the
    filter per row (all five tried, the smallest sum of |filtered byte as int8| wins)."""
    flags = imagecodecs.PNG.FILTER
    if filter_type is None:
        return flags.ALL
    if filter_type not in range(5):
        raise ValueError(f"PNG filter type must be 0..4 or None (adaptive), got {filter_type}")
    return (flags.NONE, flags.SUB, flags.UP, flags.AVG, flags.PAETH)[filter_type]


def _encode_png16(image: np.ndarray, *, filter_type: int | None = None) -> bytes:
    """(H, W, C) uint16, C in {1, 3} -> a 16-bit grey (colour type 0) or RGB (type 2) PNG file's bytes (libpng,
    zlib level 6; `filter_type` 0..4 for every row, None adaptive per row)."""
    if image.dtype != np.uint16 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H, W, 1 or 3) uint16 image, got {image.dtype} {image.shape}")
    flag = _png_filter(filter_type)
    # libpng writes grey for (H, W), RGB for (H, W, 3); samples big endian in the file
    data = np.ascontiguousarray(image[:, :, 0] if image.shape[2] == 1 else image)
    return bytes(imagecodecs.png_encode(data, level=_PNG_LEVEL, filter=flag))


def _decode_png16(data: bytes, path: Path) -> tuple[np.ndarray, bool]:
    """A 16-bit, non-interlaced PNG's bytes -> ((H, W, S) uint16 with every sample, alpha included, and
    whether a tRNS chunk was present). libpng checks the critical chunks' CRCs and the zlib stream's Adler-32
    (a damaged ancillary chunk is skipped with a warning); problems raise `ImageError`."""

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
    try:
        arr = imagecodecs.png_decode(data)  # (H, W) or (H, W, S') native uint16
    except imagecodecs.PngError as e:
        raise corrupt(_one_line(e)) from e
    if arr.ndim == 2:
        arr = arr[:, :, None]
    samples = _PNG_SAMPLES[header.colour_type]
    if arr.dtype != np.uint16 or arr.shape[:2] != (h, w) or arr.shape[2] not in (samples, samples + 1):
        raise corrupt(f"decoded {arr.dtype} {arr.shape}, expected uint16 ({h}, {w}, {samples})")
    # libpng turns a tRNS chunk (grey / RGB only) into an extra alpha sample; the colour samples are unchanged
    has_trns = arr.shape[2] == samples + 1
    return arr[:, :, :samples], has_trns


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
