"""NIfTI volumes as a whole (nibabel): read for slice-by-slice processing, write back with updated geometry.

`read_volume` gives the volume in RAS+ voxel order (as `read_frames` slices it) with its affine, its value
window and the transform back to the file's own voxel order; `slice_image` is slice k along a RAS axis in the
orientation `read_frames` shows it (so a slice upscaled here is the 2D upscale `ldsr upscale` gives for it);
`write_volume` puts the upscaled slices back into the file's voxel order with the affine of `upscaled_affine`.

Geometry of an in-plane upscale by s (the half-pixel rule). Output voxel m along an upscaled axis covers
input voxel coordinates [m / s - 1/2, (m + 1) / s - 1/2], so its centre sits at input coordinate
(m + 1/2) / s - 1/2 (the pixel grid of `ldsr.data.resize.imresize`). Hence, with A the input affine
(voxel index -> world mm) and e_j its column for voxel axis j:

    new column j = e_j / s                                 (voxel size divided by s in-plane)
    new origin   = old origin + sum_j (1/s - 1) / 2 * e_j  (over the upscaled axes j)

and the through-plane column stays. The outer faces of the volume stay where they were: input voxel -1/2 and
output voxel -1/2 are the same world point, and so are input n - 1/2 and output n s - 1/2.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from ldsr.io.files import ImageError, _check_readable, _one_line, atomic_path
from ldsr.io.meta import to_grid
from ldsr.io.nifti import _load_nifti

VOLUME_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Volume:
    """A NIfTI volume in RAS+ voxel order (axis 0 left -> Right, 1 posterior -> Anterior, 2 inferior -> Superior).

    `data`: (X, Y, Z) values in the file's units (scl_slope / scl_inter applied); `affine`: voxel -> world of
    `data`; `window`: (lo, hi) mapped to [0, 1] (the volume's min and max, width 1 when constant), the rule of
    `read_frames`; `to_file`: the orientation transform from RAS+ order back to the file's voxel order.
    """

    path: Path
    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    window: tuple[float, float]
    to_file: np.ndarray


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """The whole volume (2D files are one slice thick); `ImageError` for anything `read_frames` refuses."""
    p = Path(path)
    _check_readable(p)
    img = _load_nifti(p)
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image subclasses it; Analyze / MINC are not NIfTI
        raise ImageError(p, f"not a NIfTI-1/2 volume (nibabel read it as {type(img).__name__})")
    try:
        arr = np.asarray(img.dataobj)
    except Exception as e:
        raise ImageError(p, f"truncated or corrupt NIfTI data ({_one_line(e, p)})") from e
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.dtype.kind not in "iuf":
        raise ImageError(p, f"unsupported NIfTI volume (shape {arr.shape}, type {arr.dtype}); only 2D / 3D numbers")
    if not np.all(np.isfinite(arr)):
        raise ImageError(p, "contains NaN or inf values")
    ornt = io_orientation(img.affine)  # file voxel axis i -> RAS axis ornt[i, 0], flipped when ornt[i, 1] < 0
    shaped = nib.Nifti1Image(arr, img.affine, header=img.header)
    ras = shaped.as_reoriented(ornt)
    lo, hi = float(arr.min()), float(arr.max())
    if hi == lo:
        hi = lo + 1.0
    back = ornt_transform(axcodes2ornt(("R", "A", "S")), ornt)
    return Volume(p, np.asarray(ras.dataobj), np.asarray(ras.affine), img.header, (lo, hi), back)


def in_plane_axes(axis: int) -> tuple[int, int]:
    """The two RAS axes (a, b) of a slice along `axis`."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 (RAS voxel axes), got {axis}")
    a, b = (i for i in range(3) if i != axis)
    return a, b


def slice_image(vol: Volume, k: int, axis: int) -> np.ndarray:
    """Slice k along RAS axis `axis` as `read_frames` shows it: (B, A, 1) float32 in [0, 1], rows along b from
    high to low, columns along a (the window of the whole volume)."""
    in_plane_axes(axis)
    lo, hi = vol.window
    sl = np.take(vol.data, k, axis=axis).astype(np.float64)  # (A, B)
    unit = ((sl - lo) / (hi - lo)).astype(np.float32)
    return np.ascontiguousarray(unit.T[::-1])[:, :, None]


def slice_values(vol: Volume, image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of `slice_image` for an (upscaled) image (B', A', 1) in [0, 1]: (A', B') values of `dtype`.

    Integer volumes: lo + the whole number nearest x (hi - lo) (`ldsr.io.meta.to_grid`, clipped), so a value
    read as (v - lo) / (hi - lo) comes back exactly; float volumes: lo + x (hi - lo) in float32.
    """
    lo, hi = vol.window
    x = image[:, :, 0][::-1].T  # (A', B')
    if np.dtype(dtype).kind in "iu":
        return (lo + to_grid(x, hi - lo)).astype(dtype)
    return (lo + np.clip(x, 0.0, 1.0).astype(np.float64) * (hi - lo)).astype(np.float32)


def upscaled_affine(affine: np.ndarray, scale: float, axes: tuple[int, ...]) -> np.ndarray:
    """The affine of a volume upscaled by `scale` along voxel `axes` (the half-pixel rule of the docstring)."""
    new = np.array(affine, dtype=np.float64)
    for j in axes:
        new[:3, 3] += (1.0 / scale - 1.0) / 2.0 * affine[:3, j]
        new[:3, j] = affine[:3, j] / scale
    return new


def write_volume(path: str | os.PathLike[str], data: np.ndarray, vol: Volume, affine: np.ndarray) -> nib.Nifti1Image:
    """Write `data` (RAS+ voxel order, with `affine`) as NIfTI in the source file's voxel order, atomically;
    returns the image as written (file voxel order, its affine and header).

    The source header is kept (units, description, intent, qform / sform codes); the data type becomes the
    array's, the scaling is reset, the affine goes into the qform and sform the source used, and pixdim
    follows the affine.
    """
    out = Path(path)
    name = out.name.lower()
    if not name.endswith(VOLUME_SUFFIXES):
        raise ValueError(f"{out}: a NIfTI volume needs a .nii or .nii.gz name")
    header = vol.header.copy()
    header.set_data_dtype(data.dtype)
    img = nib.Nifti1Image(data, affine, header=header).as_reoriented(vol.to_file)
    img.header.set_slope_inter(1.0, 0.0)
    sform, qform = int(vol.header["sform_code"]), int(vol.header["qform_code"])
    img.set_sform(img.affine, code=sform or (0 if qform else 2))  # 2: aligned (nibabel's default)
    img.set_qform(img.affine, code=qform or 2)  # also sets pixdim (the voxel sizes) from the affine
    if not qform and sform:
        img.header["qform_code"] = 0  # the source had no qform: keep it so
    with atomic_path(out) as tmp:
        blob = img.to_bytes()
        if name.endswith(".gz"):
            with gzip.open(tmp, "wb", compresslevel=6) as f:
                f.write(blob)
        else:
            tmp.write_bytes(blob)
    return img
