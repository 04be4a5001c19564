"""Formats and metadata: suffix tables, `ImageMeta` / `DicomSource`, and the sample <-> [0, 1] rules."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ldsr.io.files import ImageError

ImageFormat = Literal["png", "jpeg", "tiff", "dicom", "nifti"]

# Input suffixes, lower case. Files without a suffix are read as DICOM when they carry the 'DICM' magic at
# byte 128 (how DICOM exports from scanners are often named); every other suffix is refused.
SUFFIXES: dict[str, ImageFormat] = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".dcm": "dicom",
    ".nii": "nifti",
    ".nii.gz": "nifti",
}
# Output suffixes of `write_image` (one 2D image). NIfTI is not among them: volumes are written whole, by
# `ldsr.io.volume.write_volume` (.nii / .nii.gz, what `ldsr upscale` gives for a NIfTI input), not slice by slice.
OUTPUT_SUFFIXES: dict[str, ImageFormat] = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".dcm": "dicom",
}
_SUPPORTED_TEXT = ", ".join(SUFFIXES)
_DICOM_MAGIC_OFFSET = 128

_PIL_NAMES = {"png": "PNG", "jpeg": "JPEG"}


@dataclass(frozen=True)
class DicomSource:
    """How a DICOM source stores its pixels; what `write_image` needs to store new pixels the same way.

    Integer data map to [0, 1] through `stored_range`, the stored values at x = 0 and x = 1 (before the
    MONOCHROME1 inversion): x = (stored - stored_range[0]) / (stored_range[1] - stored_range[0]), and
    x -> 1 - x for MONOCHROME1. Monochrome files use their own (min, max) of all frames (width 1 when
    constant), colour files the representable range of BitsStored. The physical value is
    stored * slope + intercept, so this is the same affine map on physical values.
    """

    stored_dtype: str  # numpy dtype name of the stored samples: uint8, int8, uint16, int16 or float32/float64
    bits_allocated: int
    bits_stored: int
    pixel_representation: int  # 0 unsigned, 1 two's complement
    stored_range: tuple[int, int]  # stored values at x = 0 and x = 1 (lo < hi); (0, 0) for float pixel data
    slope: float  # RescaleSlope (1.0 when absent)
    intercept: float  # RescaleIntercept (0.0 when absent)
    photometric: str  # PhotometricInterpretation of the source


@dataclass(frozen=True)
class ImageMeta:
    """Where an image came from and how its samples were mapped to [0, 1].

    - `value_range`: the original values (at x = 0, at x = 1); for MONOCHROME1 DICOM the first is the larger.
    - `bit_depth`: 8 or 16 for integer samples, 32 for float samples.
    - `spacing`: (row, column) pixel spacing in mm, or None when the file has none.
    - `frame`: the frame / slice index for multi-frame files, else None; `n_frames` counts them.
    - `notes`: human-readable conversions that were applied (alpha dropped, palette expanded, ...).
    """

    path: str
    format: ImageFormat
    bit_depth: int
    value_range: tuple[float, float]
    spacing: tuple[float, float] | None
    channels: int
    frame: int | None = None
    n_frames: int = 1
    notes: tuple[str, ...] = ()
    dicom: DicomSource | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists in JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageMeta:
        """Inverse of `to_dict` (also after a JSON round trip)."""
        dicom = d.get("dicom")
        if d.get("format") not in ("png", "jpeg", "tiff", "dicom", "nifti"):
            raise ValueError(f"unknown image format {d.get('format')!r} in image metadata")
        return cls(
            path=str(d["path"]),
            format=d["format"],
            bit_depth=int(d["bit_depth"]),
            value_range=(float(d["value_range"][0]), float(d["value_range"][1])),
            spacing=None if d.get("spacing") is None else (float(d["spacing"][0]), float(d["spacing"][1])),
            channels=int(d["channels"]),
            frame=None if d.get("frame") is None else int(d["frame"]),
            n_frames=int(d.get("n_frames", 1)),
            notes=tuple(d.get("notes", ())),
            dicom=None
            if dicom is None
            else DicomSource(
                stored_dtype=str(dicom["stored_dtype"]),
                bits_allocated=int(dicom["bits_allocated"]),
                bits_stored=int(dicom["bits_stored"]),
                pixel_representation=int(dicom["pixel_representation"]),
                stored_range=(int(dicom["stored_range"][0]), int(dicom["stored_range"][1])),
                slope=float(dicom["slope"]),
                intercept=float(dicom["intercept"]),
                photometric=str(dicom["photometric"]),
            ),
        )


Frame = tuple[np.ndarray, ImageMeta]


# ---------------------------------------------------------------------------------------------------------
# Sample values <-> [0, 1]
# ---------------------------------------------------------------------------------------------------------


def _unsigned_to_unit(arr: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned integers in [0, 2^bits - 1] -> float32 k / (2^bits - 1).

    IEEE division is correctly rounded, so float32(k) / float32(N) == float32(k / N), and for N < 2^24
    rint(float64(x) * N) recovers k exactly (the error is below N * 2^-25 < 0.5).
    """
    n = float(2**bits - 1)
    return (arr.astype(np.float32) / np.float32(n)).astype(np.float32)


def _float_to_unit(arr: np.ndarray, path: Path) -> tuple[np.ndarray, tuple[float, float], tuple[str, ...]]:
    """Float samples -> [0, 1]: kept when already inside, else scaled by their own (min, max)."""
    a = arr.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ImageError(path, "contains NaN or inf values")
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0.0 and hi <= 1.0:
        return a.astype(np.float32), (0.0, 1.0), ()
    x = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return x.astype(np.float32), (lo, hi), (f"float values scaled from [{lo:.6g}, {hi:.6g}] to [0, 1]",)


def to_grid(x: np.ndarray, span: float) -> np.ndarray:
    """The one quantisation rule of ldsr: [0, 1] -> whole numbers 0..span (float64).

    x is clipped to [0, 1], then x * span is rounded half away from zero, floor(x * span + 0.5): the rule of
    MATLAB's im2uint8 / im2uint16, with which SR papers store the SR output before measuring it. Every writer
    and every metric grid goes through it (`quantize` for 8/16-bit files). A sample k read as k / span
    (float32) comes back as k exactly (its error is far below 0.5 / span). NaN or inf: ValueError.
    """
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("cannot quantise an image that contains NaN or infinite values")
    out = np.clip(arr, 0.0, 1.0)  # a new array: the steps below work in place (one float64 copy, 4096^2 outputs)
    out *= span
    out += 0.5
    return np.floor(out, out=out)


def quantize(x: np.ndarray, bit_depth: Literal[8, 16]) -> np.ndarray:
    """[0, 1] floats -> the samples of a `bit_depth`-bit file: uint8 (0..255) or uint16 (0..65535), by the
    rule of `to_grid` (clip, then round half away from zero)."""
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    return to_grid(x, float(2**bit_depth - 1)).astype(np.uint8 if bit_depth == 8 else np.uint16)
