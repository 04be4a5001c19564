"""The public writing API: `write_image` (PNG, JPEG, TIFF, derived DICOM) and `write_dicom_frames` (one
multi-frame derived DICOM), always atomic."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from ldsr.io.dicom import _derived_dataset, _derived_stack_dataset
from ldsr.io.files import atomic_path
from ldsr.io.listing import suffix_of
from ldsr.io.meta import OUTPUT_SUFFIXES, ImageFormat, ImageMeta, quantize
from ldsr.io.pillow import _write_pil
from ldsr.io.tiff import _write_tiff


def _as_unit_hwc(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) -> (H, W, C) float64 clipped to [0, 1]; uint8 / uint16 arrays are k / (2^b - 1)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"expected an (H, W, C) image with C in {{1, 3}}, got shape {arr.shape}")
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        return arr.astype(np.float64) / float(np.iinfo(arr.dtype).max)
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"unsupported image dtype {arr.dtype}")
    x = arr.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("image contains NaN or inf values")
    return np.clip(x, 0.0, 1.0, out=x)  # x is a new array: clipped in place


def _resolve_bit_depth(fmt: ImageFormat, explicit: int | None, meta: ImageMeta | None, image: np.ndarray) -> int:
    """Explicit argument, else the source's depth (float sources: float32 TIFF / 16-bit PNG), else the
    input array's (16 for uint16) or 8. JPEG is always 8-bit; an explicit 16 for JPEG is an error."""
    allowed = {"png": (8, 16), "jpeg": (8,), "tiff": (8, 16, 32)}[fmt]
    if explicit is not None:
        if explicit not in allowed:
            raise ValueError(f"bit_depth {explicit} is not possible for {fmt} output (allowed: {allowed})")
        return explicit
    if meta is not None:
        depth = meta.bit_depth
    else:
        depth = 16 if np.asarray(image).dtype == np.uint16 else 8
    if depth not in allowed:
        depth = max(d for d in allowed if d <= 16)
    return depth


def write_image(
    path: str | os.PathLike[str],
    image: np.ndarray,
    meta: ImageMeta | None = None,
    *,
    bit_depth: int | None = None,
    scale: float = 1.0,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write an (H, W, C) or (H, W) image in [0, 1] atomically; the format comes from the suffix.

    - .png (8/16-bit; 16-bit colour through ldsr's own encoder, as Pillow keeps 8 bits per colour channel),
      .jpg/.jpeg (8-bit, quality 95), .tif/.tiff (8/16-bit, or 32 = float32).
    - Bit depth: `bit_depth`, else `meta.bit_depth` (float sources give float32 TIFF in their original
      range, 16-bit PNG), else 16 for a uint16 array, else 8. Floats are clipped to [0, 1] and rounded
      half away from zero onto 0..2^b - 1 (`ldsr.io.meta.quantize`); uint8 / uint16 arrays are k / (2^b - 1).
    - .dcm needs the `meta` of a DICOM source: the source is read again, its pixels replaced by this single
      frame stored as the source stores them (slope/intercept, MONOCHROME1 and BitsStored undone exactly),
      PixelSpacing divided by `scale` (the SR factor), ImagePositionPatient moved to the centre of the new first
      pixel (-(s - 1) / (2 s) old pixels along the row and column directions; `ldsr.io.dicom`), a new SOP
      Instance UID, a Series UID derived from (source series, scale) so that all frames / slices of one series
      share it, ImageType DERIVED.
      `bit_depth` must be None or the source's depth there.
    - `provenance`: how the image was made (`ldsr.io.provenance.provenance_record`), stored in the file's own
      metadata: a PNG tEXt chunk, the JPEG COM segment, the TIFF ImageDescription, DICOM DerivationDescription
      and ImageComments; `ldsr.io.read_provenance` reads it back.
    Returns the written path. The source file named by `meta.path` is never overwritten.
    """
    out = Path(path)
    suffix = suffix_of(out)
    if suffix not in OUTPUT_SUFFIXES:
        supported = ", ".join(OUTPUT_SUFFIXES)
        shown = suffix or "(no suffix)"
        raise ValueError(f"{out}: unsupported output format {shown} (supported: {supported})")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    fmt = OUTPUT_SUFFIXES[suffix]
    if meta is not None and out.exists() and out.resolve() == Path(meta.path).resolve():
        raise ValueError(f"{out}: refusing to overwrite the source image")
    x = _as_unit_hwc(image)
    if fmt == "dicom":
        if meta is None or meta.dicom is None:
            raise ValueError(
                f"{out}: DICOM output needs the metadata of a DICOM source (from read_image of a .dcm file); "
                f"got {'no metadata' if meta is None else meta.format + ' metadata'}"
            )
        if bit_depth is not None and bit_depth != meta.bit_depth:
            raise ValueError(
                f"{out}: bit_depth {bit_depth} cannot be chosen for DICOM output; pixels are stored as the "
                f"source stores them ({meta.bit_depth}-bit)"
            )
        ds = _derived_dataset(meta, x, scale, out, provenance)
        with atomic_path(out) as tmp:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        return out
    bits = _resolve_bit_depth(fmt, bit_depth, meta, image)
    with atomic_path(out) as tmp:
        if fmt == "tiff":
            _write_tiff(tmp, x, bits, meta, provenance)
        else:
            _write_pil(tmp, quantize(x, 16 if bits == 16 else 8), fmt, provenance)  # png / jpeg: 8 or 16 bits
    return out


def write_dicom_frames(
    path: str | os.PathLike[str],
    images: Sequence[np.ndarray],
    meta: ImageMeta,
    *,
    scale: float = 1.0,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write every frame of a multi-frame DICOM source, upscaled, as ONE multi-frame derived DICOM, atomically.

    `images`: the source's frames in order ((H, W) or (H, W, C) in [0, 1], one size), `meta`: the `ImageMeta` of
    any of its frames (`read_frames`). Each frame is stored as `write_image` stores one (the source's BitsStored,
    slope / intercept, MONOCHROME1 and window undone exactly); NumberOfFrames and the per-frame functional groups
    are kept, Rows / Columns are the images', every PixelSpacing is divided by `scale` and every ImagePositionPatient
    (top level, plane positions of the functional groups) moved to the new first pixel's centre; one new SOP instance
    in the derived series of `write_image`, with the `provenance` record. The source is never overwritten.
    """
    out = Path(path)
    if suffix_of(out) != ".dcm":
        raise ValueError(f"{out}: a multi-frame DICOM is written to a .dcm file")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    if meta.dicom is None:
        raise ValueError(f"{out}: DICOM output needs the metadata of a DICOM source, got {meta.format} metadata")
    if out.exists() and out.resolve() == Path(meta.path).resolve():
        raise ValueError(f"{out}: refusing to overwrite the source image")
    if not images:
        raise ValueError(f"{out}: no frames to write")
    ds = _derived_stack_dataset(meta, [_as_unit_hwc(im) for im in images], scale, out, provenance)
    with atomic_path(out) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    return out
