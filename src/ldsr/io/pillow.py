"""PNG / JPEG through Pillow (16-bit colour PNG goes through `ldsr.io.png16`)."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ldsr.io.files import ImageError, _one_line
from ldsr.io.meta import _PIL_NAMES, Frame, ImageFormat, ImageMeta, _unsigned_to_unit
from ldsr.io.png16 import _encode_png16, _png_header, _read_png16
from ldsr.io.provenance import png_with_record, provenance_text


def _pil_to_array(im: Image.Image, path: Path) -> tuple[np.ndarray, int, list[str]]:
    """A decoded Pillow image -> (H, W, C) integer array, its bit depth and conversion notes."""
    notes: list[str] = []
    mode = im.mode
    if mode == "1":
        im, mode = im.convert("L"), "L"
        notes.append("1-bit image expanded to 8-bit")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
        notes.append("palette expanded to RGB")
    if mode in ("LA", "La", "RGBA", "RGBa"):
        im = im.convert("L" if mode.startswith("L") else "RGB")
        notes.append("alpha channel dropped")
        mode = im.mode
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
        notes.append(f"converted from {mode} to RGB")
        mode = "RGB"
    if mode in ("L", "RGB"):
        arr = np.asarray(im, dtype=np.uint8)
        header = _png_header(path)
        if mode == "RGB" and header is not None and header.bit_depth == 16:
            notes.append("16-bit colour PNG reduced to 8 bits per channel by Pillow")
        return (arr[:, :, None] if arr.ndim == 2 else arr), 8, notes
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageError(path, f"unsupported {mode} samples outside 0..65535")
        return arr.astype(np.uint16)[:, :, None], 16, notes
    raise ImageError(path, f"unsupported image mode {mode}")


def _read_pil(path: Path, fmt: ImageFormat) -> list[Frame]:
    header = _png_header(path)
    if header is not None and header.bit_depth == 16 and header.colour_type in (2, 4, 6) and not header.interlace:
        return _read_png16(path, fmt)  # Pillow would keep only 8 bits per channel
    name = _PIL_NAMES[fmt]
    try:
        im = Image.open(path, formats=("PNG", "JPEG"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(path, f"not a {name} file (could not decode: {_one_line(e, path)})") from e
    except Image.DecompressionBombError as e:
        raise ImageError(path, f"image too large ({_one_line(e, path)})") from e
    with im:
        actual: ImageFormat = "jpeg" if im.format == "JPEG" else "png"
        try:
            im.load()  # forces full decoding; truncated data raise because LOAD_TRUNCATED_IMAGES is False
        except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as e:
            kind = _PIL_NAMES[actual]
            raise ImageError(path, f"truncated or corrupt {kind} data ({_one_line(e, path)})") from e
        arr, bits, notes = _pil_to_array(im, path)
    if actual != fmt:
        notes.append(f"content is {_PIL_NAMES[actual]} although the suffix says {name}")
    x = _unsigned_to_unit(arr, bits)
    meta = ImageMeta(
        path=str(path),
        format=actual,
        bit_depth=bits,
        value_range=(0.0, float(2**bits - 1)),
        spacing=None,
        channels=x.shape[2],
        notes=tuple(notes),
    )
    return [(x, meta)]


def _write_pil(tmp: Path, q: np.ndarray, fmt: ImageFormat, record: Mapping[str, Any] | None = None) -> None:
    """(H, W, C) uint8 / uint16 samples -> PNG or JPEG at `tmp`; `record` (ldsr provenance) goes into a PNG tEXt
    chunk or the JPEG COM segment."""
    if q.shape[2] == 3 and q.dtype == np.uint16:  # Pillow stores 8 bits per colour channel
        data = _encode_png16(q)
    else:
        im = Image.fromarray(q[:, :, 0] if q.shape[2] == 1 else q)
        buf = BytesIO()
        if fmt == "jpeg":
            comment = {} if record is None else {"comment": provenance_text(record).encode("ascii")}
            im.save(buf, format="JPEG", quality=95, subsampling=0, **comment)
        else:
            im.save(buf, format="PNG")
        data = buf.getvalue()
    if record is not None and fmt == "png":
        data = png_with_record(data, record)
    tmp.write_bytes(data)
