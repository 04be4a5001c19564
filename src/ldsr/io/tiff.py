"""TIFF (tifffile): multi-page / multi-plane reading and 8 / 16 / 32-bit float writing."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ldsr.io.files import ImageError, _one_line
from ldsr.io.meta import Frame, ImageMeta, _float_to_unit, _unsigned_to_unit, quantize
from ldsr.io.provenance import provenance_text


def _tiff_to_hwc_frames(arr: np.ndarray, axes: str, path: Path) -> tuple[np.ndarray, list[str]]:
    """tifffile series -> (F, H, W, C): samples last, every axis before Y X flattened into frames."""
    notes: list[str] = []
    if "S" in axes:
        arr = np.moveaxis(arr, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    else:
        arr = arr[..., None]
        axes = axes + "S"
    if not axes.endswith("YXS"):
        raise ImageError(path, f"unsupported TIFF layout (axes {axes}, shape {arr.shape})")
    arr = arr.reshape((-1,) + arr.shape[-3:])
    c = arr.shape[-1]
    if c in (2, 4):
        arr = arr[..., : c - 1]
        notes.append("alpha channel dropped")
    elif c not in (1, 3):
        raise ImageError(path, f"unsupported TIFF with {c} samples per pixel (supported: 1, 3, +alpha)")
    return arr, notes


def _read_tiff(path: Path) -> list[Frame]:
    try:
        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            axes = series.axes
            arr = series.asarray()
    except tifffile.TiffFileError as e:
        raise ImageError(path, f"not a TIFF file (could not decode: {_one_line(e, path)})") from e
    except (ValueError, OSError, EOFError, IndexError, zlib.error) as e:
        raise ImageError(path, f"truncated or corrupt TIFF data ({_one_line(e, path)})") from e
    stack, notes = _tiff_to_hwc_frames(np.asarray(arr), axes, path)
    extra: tuple[str, ...]
    if stack.dtype == np.uint8 or stack.dtype == np.uint16:
        bits = 8 * stack.dtype.itemsize
        x, value_range, extra = _unsigned_to_unit(stack, bits), (0.0, float(2**bits - 1)), ()
    elif stack.dtype.kind == "f":
        bits = 32
        x, value_range, extra = _float_to_unit(stack, path)
    else:
        raise ImageError(path, f"unsupported TIFF sample type {stack.dtype} (supported: uint8, uint16, float16/32/64)")
    base = ImageMeta(
        path=str(path),
        format="tiff",
        bit_depth=bits,
        value_range=value_range,
        spacing=None,
        channels=int(x.shape[-1]),
        n_frames=int(x.shape[0]),
        notes=tuple(notes) + extra,
    )
    if x.shape[0] == 1:
        return [(x[0], base)]
    return [(x[k], replace(base, frame=k)) for k in range(x.shape[0])]


def _write_tiff(
    tmp: Path, x: np.ndarray, bits: int, meta: ImageMeta | None, record: Mapping[str, Any] | None = None
) -> None:
    """[0, 1] (H, W, C) -> an 8 / 16-bit or float32 TIFF; `record` (ldsr provenance) is the ImageDescription
    (instead of tifffile's shape JSON, which a single 2D page does not need)."""
    if bits == 32:
        data = x
        if meta is not None and meta.bit_depth == 32:
            lo, hi = meta.value_range
            data = x * (hi - lo) + lo  # back to the float source's own range
        data = data.astype(np.float32)
    else:
        data = quantize(x, 16 if bits == 16 else 8)  # bits is 8 or 16 here
    rgb = data.shape[2] == 3
    photometric = "rgb" if rgb else "minisblack"
    if record is None:
        tifffile.imwrite(tmp, data if rgb else data[:, :, 0], photometric=photometric)
    else:
        text = provenance_text(record)
        tifffile.imwrite(tmp, data if rgb else data[:, :, 0], photometric=photometric, description=text, metadata=None)
