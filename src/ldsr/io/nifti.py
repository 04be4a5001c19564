"""NIfTI (nibabel): a volume reoriented to RAS+ and read as 2D slices along one axis (whole volumes are read and
written by `ldsr.io.volume`)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, io_orientation
from nibabel.spatialimages import SpatialImage

from ldsr.io.files import ImageError, _one_line
from ldsr.io.meta import Frame, ImageMeta


def _load_nifti(path: Path) -> SpatialImage:
    """The image with its header read (voxels not yet); `ImageError` for a file nibabel cannot read as a volume."""
    try:
        img = nib.load(str(path))
    except ImageFileError as e:
        raise ImageError(path, "not a NIfTI file (unrecognised header)") from e
    except Exception as e:  # struct, zlib, EOF errors of a damaged header
        raise ImageError(path, f"truncated or corrupt NIfTI data ({_one_line(e, path)})") from e
    if not isinstance(img, SpatialImage):  # nib.load also returns non-volume images (e.g. GIFTI surfaces)
        raise ImageError(path, f"not a NIfTI volume (nibabel read it as {type(img).__name__})")
    return img


def _nifti_volume(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The volume reoriented to RAS+ voxel axes and its voxel sizes in mm along them.

    Axis 0 runs left -> Right, axis 1 posterior -> Anterior, axis 2 inferior -> Superior.
    """
    img = _load_nifti(path)
    try:
        arr = np.asarray(img.dataobj)
    except Exception as e:
        raise ImageError(path, f"truncated or corrupt NIfTI data ({_one_line(e, path)})") from e
    if arr.dtype.fields is not None:
        raise ImageError(path, f"unsupported NIfTI data type {img.get_data_dtype()}")
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ImageError(path, f"unsupported {arr.ndim}D NIfTI (shape {arr.shape}); only 2D or 3D volumes")
    zooms = [float(z) for z in img.header.get_zooms()[:3]] + [1.0] * 3
    # ornt[i] = (output axis, flip) of input axis i, read from the affine's closest axis permutation.
    ornt = io_orientation(img.affine)
    vol = apply_orientation(arr, ornt)
    out_zooms = [1.0, 1.0, 1.0]
    for i in range(3):
        out_zooms[int(ornt[i, 0])] = zooms[i]
    return np.asarray(vol), (out_zooms[0], out_zooms[1], out_zooms[2])


def _read_nifti(path: Path, axis: int) -> list[Frame]:
    """Every 2D slice along RAS axis `axis`, each shown with its second in-plane axis pointing up.

    A slice `vol.take(k, axis)` has the two remaining RAS axes (a, b); the image is its transpose with the
    rows flipped: rows run along b from high to low (superior / anterior at the top), columns along a from
    low to high. Axial slices (axis 2) thus have anterior at the top and the patient's left on the image
    left (neurological view), matching the shipped Colin27 PNG slices.
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 (RAS voxel axes), got {axis}")
    vol, zooms = _nifti_volume(path)
    if vol.dtype.kind not in "iuf" and vol.dtype != np.bool_:
        raise ImageError(path, f"unsupported NIfTI data type {vol.dtype}")
    if not np.all(np.isfinite(vol)):
        raise ImageError(path, "contains NaN or inf values")
    integer = vol.dtype.kind in "iub"
    bits = 8 * vol.dtype.itemsize if integer and vol.dtype.itemsize <= 2 else 32
    # One window for the whole volume, x = (v - lo) / (hi - lo), so that every slice shares the mapping;
    # a constant volume gets a window of width 1 (all zeros).
    lo, hi = float(vol.min()), float(vol.max())
    if hi == lo:
        hi = lo + 1.0
    unit = ((vol.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
    value_range = (lo, hi)
    notes = [f"{vol.dtype} values scaled by the volume range [{lo:.6g}, {hi:.6g}] to [0, 1]"]
    a, b = [i for i in range(3) if i != axis]
    n = vol.shape[axis]
    slices = np.moveaxis(unit, axis, 0)  # (n, A, B) view: slices[k] is unit.take(k, axis)
    frames: list[Frame] = []
    for k in range(n):
        img = np.ascontiguousarray(slices[k].T[::-1])[:, :, None]
        meta = ImageMeta(
            path=str(path),
            format="nifti",
            bit_depth=bits,
            value_range=value_range,
            spacing=(zooms[b], zooms[a]),
            channels=1,
            frame=k,
            n_frames=n,
            notes=tuple(notes) + (f"slice {k} along RAS axis {axis}",),
        )
        frames.append((img, meta))
    return frames
