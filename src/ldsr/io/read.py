"""The public reading API: `read_frames`, `read_image`, `count_frames` and `check_size`."""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import tifffile
from nibabel.orientations import io_orientation
from pydicom.errors import InvalidDicomError

from ldsr.io.dicom import _read_dicom
from ldsr.io.files import ImageError, _check_readable, _one_line
from ldsr.io.listing import _detect_format
from ldsr.io.meta import Frame
from ldsr.io.nifti import _load_nifti, _read_nifti
from ldsr.io.pillow import _read_pil
from ldsr.io.tiff import _read_tiff


def _middle(n: int) -> int:
    return n // 2


def _pick(frames: list[Frame], frame: int | None, path: Path) -> Frame:
    """One frame of a list; the middle one (recorded in the notes) when `frame` is None."""
    n = len(frames)
    if frame is None:
        if n == 1:
            return frames[0]
        k = _middle(n)
        img, meta = frames[k]
        return img, replace(meta, notes=meta.notes + (f"no frame given: took the middle frame {k} of {n}",))
    if not -n <= frame < n:
        raise ImageError(path, f"frame {frame} out of range (the file has {n} frame{'s' if n != 1 else ''})")
    return frames[frame % n]


def read_frames(path: str | os.PathLike[str], *, axis: int = 2) -> list[Frame]:
    """Every frame of a file as `(image, meta)`: (H, W, C) float32 in [0, 1], C in {1, 3}.

    Multi-frame DICOM gives its frames, NIfTI its 2D slices along RAS voxel axis `axis` (0 sagittal,
    1 coronal, 2 axial), a multi-page TIFF its pages; a plain 2D image gives one item (frame None).
    Any problem with the file raises `ImageError` ("<path>: <reason>").
    """
    p = Path(path)
    _check_readable(p)
    fmt = _detect_format(p)
    if fmt in ("png", "jpeg"):
        return _read_pil(p, fmt)
    if fmt == "tiff":
        return _read_tiff(p)
    if fmt == "dicom":
        return _read_dicom(p)
    return _read_nifti(p, axis)


def read_image(path: str | os.PathLike[str], *, frame: int | None = None, axis: int = 2) -> Frame:
    """One image as `(image, meta)`: (H, W, C) float32 in [0, 1], C in {1, 3}.

    For a multi-frame file `frame` picks the frame / slice (negative counts from the end); without it the
    middle frame (index n // 2) is taken and a note records it. See `read_frames` for `axis`.
    """
    p = Path(path)
    return _pick(read_frames(p, axis=axis), frame, p)


def count_frames(path: str | os.PathLike[str], *, axis: int = 2) -> int:
    """How many items `read_frames(path, axis=axis)` gives, from the header alone (no pixel decoding).

    DICOM: NumberOfFrames (1 when absent); NIfTI: the volume's size along RAS voxel axis `axis`;
    TIFF: the pages / planes of the first series; PNG / JPEG: 1. Problems raise `ImageError`.
    """
    p = Path(path)
    _check_readable(p)
    fmt = _detect_format(p)
    if fmt == "dicom":
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except InvalidDicomError as e:
            raise ImageError(p, "not a DICOM file (no 'DICM' preamble or file meta header)") from e
        except Exception as e:  # pydicom raises many types for broken headers
            raise ImageError(p, f"truncated or corrupt DICOM data ({_one_line(e, p)})") from e
        try:
            n = int(ds.get("NumberOfFrames", 1) or 1)
        except (TypeError, ValueError) as e:
            raise ImageError(p, f"invalid NumberOfFrames {ds.get('NumberOfFrames')!r}") from e
        if n < 1:
            raise ImageError(p, f"invalid NumberOfFrames {n}")
        return n
    if fmt == "nifti":
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (RAS voxel axes), got {axis}")
        img = _load_nifti(p)
        try:
            shape = list(img.header.get_data_shape())
            ornt = io_orientation(img.affine)
        except Exception as e:  # a header nibabel loaded but cannot interpret
            raise ImageError(p, f"truncated or corrupt NIfTI data ({_one_line(e, p)})") from e
        # Same shape rules as `_nifti_volume`: trailing singleton axes dropped, 2D is one slice thick.
        while len(shape) > 3 and shape[-1] == 1:
            shape.pop()
        if len(shape) == 2:
            shape.append(1)
        if len(shape) != 3:
            raise ImageError(p, f"unsupported {len(shape)}D NIfTI (shape {tuple(shape)}); only 2D or 3D volumes")
        # ornt[i, 0] is the RAS axis that voxel axis i becomes.
        return int(shape[[int(o) for o in ornt[:, 0]].index(axis)])
    if fmt == "tiff":
        try:
            with tifffile.TiffFile(p) as tf:
                series = tf.series[0]
                dims, axes = tuple(series.shape), series.axes
        except tifffile.TiffFileError as e:
            raise ImageError(p, f"not a TIFF file (could not decode: {_one_line(e, p)})") from e
        except (ValueError, OSError, EOFError, IndexError, zlib.error) as e:
            raise ImageError(p, f"truncated or corrupt TIFF data ({_one_line(e, p)})") from e
        # Every axis before Y X except samples (S) is flattened into frames, as `_tiff_to_hwc_frames` does.
        return int(math.prod(n for n, a in zip(dims, axes) if a not in "YXS"))
    return 1


def check_size(image: np.ndarray, path: str | os.PathLike[str], *, min_side: int) -> None:
    """Raise `ImageError` when the image's height or width (HxW) is below `min_side` pixels."""
    h, w = int(image.shape[0]), int(image.shape[1])
    if min(h, w) < min_side:
        raise ImageError(path, f"is {h}x{w} pixels, smaller than the minimum {min_side}")
