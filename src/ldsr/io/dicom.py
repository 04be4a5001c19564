"""DICOM (pydicom): frames to [0, 1] through an exactly invertible window, and derived-image writing."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from ldsr.io.files import ImageError, _one_line
from ldsr.io.meta import DicomSource, Frame, ImageMeta, _float_to_unit
from ldsr.io.provenance import describe, provenance_text

# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------


def _functional_group_item(ds: Dataset, sequence: str, frame: int | None) -> Dataset | None:
    """First item of `sequence` in the per-frame (this frame) or shared functional groups, if any."""
    groups = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        per_frame = ds.PerFrameFunctionalGroupsSequence
        if 0 <= frame < len(per_frame):
            groups.append(per_frame[frame])
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    for group in groups:
        if sequence in group and group[sequence].value:
            return group[sequence][0]
    return None


def _dicom_spacing(ds: Dataset, frame: int | None) -> tuple[float, float] | None:
    """PixelSpacing (row, column) in mm: top level, else the (per-frame or shared) pixel measures."""
    source: Dataset | None = ds
    if "PixelSpacing" not in ds:
        source = _functional_group_item(ds, "PixelMeasuresSequence", frame)
    if source is None or "PixelSpacing" not in source:
        return None
    values = source.PixelSpacing
    try:
        return (float(values[0]), float(values[1]))
    except (TypeError, ValueError, IndexError):
        return None


def _dicom_rescale(ds: Dataset, path: Path) -> tuple[float, float]:
    """(slope, intercept): top level, else the shared Pixel Value Transformation; identity when absent."""
    source: Dataset | None = (
        ds if "RescaleSlope" in ds else _functional_group_item(ds, "PixelValueTransformationSequence", None)
    )
    slope = source.get("RescaleSlope") if source is not None else None
    intercept = source.get("RescaleIntercept") if source is not None else None
    s = 1.0 if slope in (None, "") else float(slope)
    b = 0.0 if intercept in (None, "") else float(intercept)
    if not (math.isfinite(s) and math.isfinite(b)):
        raise ImageError(path, "contains NaN or inf values (RescaleSlope / RescaleIntercept)")
    if s == 0.0:
        raise ImageError(path, "RescaleSlope is 0")
    return s, b


def _load_dicom(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError as e:
        raise ImageError(path, "not a DICOM file (no 'DICM' preamble or file meta header)") from e
    except Exception as e:  # pydicom raises many types (EOFError, struct.error, ...) for broken files
        raise ImageError(path, f"truncated or corrupt DICOM data ({_one_line(e, path)})") from e


def _dicom_stack(ds: Dataset, path: Path) -> np.ndarray:
    """All stored samples as (F, H, W, C), without any rescale (pydicom's `pixel_array` gives raw values)."""
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageError(path, "DICOM file has no pixel data")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as e:  # decoder errors are not one type
        raise ImageError(path, f"truncated or corrupt DICOM pixel data ({_one_line(e, path)})") from e
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if n_frames == 1:
        arr = arr[None]
    if samples == 1:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise ImageError(path, f"unsupported DICOM pixel layout (shape {arr.shape})")
    return arr


def _read_dicom(path: Path) -> list[Frame]:
    ds = _load_dicom(path)
    stack = _dicom_stack(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB") and not photometric.startswith("YBR"):
        raise ImageError(path, f"unsupported DICOM photometric interpretation {photometric}")
    notes: list[str] = []
    extra: Sequence[str]
    if photometric.startswith("YBR"):
        notes.append(f"{photometric} converted to RGB by pydicom")
    if stack.dtype.kind == "f":
        x, value_range, extra = _float_to_unit(stack, path)
        notes += extra
        bits = 8 * stack.dtype.itemsize
        info = DicomSource(stack.dtype.name, bits, bits, 0, (0, 0), 1.0, 0.0, photometric)
        bit_depth = 32
    else:
        x, value_range, info, extra = _dicom_integer_to_unit(ds, stack, photometric, path)
        notes += extra
        bit_depth = 8 if info.bits_allocated <= 8 else 16
    n = x.shape[0]
    frames: list[Frame] = []
    for k in range(n):
        meta = ImageMeta(
            path=str(path),
            format="dicom",
            bit_depth=bit_depth,
            value_range=value_range,
            spacing=_dicom_spacing(ds, k if n > 1 else None),
            channels=int(x.shape[-1]),
            frame=k if n > 1 else None,
            n_frames=n,
            notes=tuple(notes),
            dicom=info,
        )
        frames.append((x[k], meta))
    return frames


def _dicom_integer_to_unit(
    ds: Dataset, stack: np.ndarray, photometric: str, path: Path
) -> tuple[np.ndarray, tuple[float, float], DicomSource, list[str]]:
    """Stored integers -> [0, 1] through a per-file window (exactly invertible).

    x = (s - s_lo) / (s_hi - s_lo). Monochrome: (s_lo, s_hi) = (min, max) of the stored values of the whole
    file (all frames together, so frames share one mapping); a constant file gets a window of width 1.
    Colour (RGB / YBR): the representable range of BitsStored, as for PNG / TIFF. Since the physical value
    is s * slope + intercept, the window is the (min, max) of the rescaled values too (for slope > 0).
    MONOCHROME1 (high = dark) is inverted, x -> 1 - x, so that bright is 1 in every output.
    """
    notes: list[str] = []
    bits_allocated = int(ds.get("BitsAllocated", 8 * stack.dtype.itemsize))
    bits_stored = int(ds.get("BitsStored", bits_allocated))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if not 1 <= bits_stored <= 16:
        raise ImageError(path, f"unsupported DICOM BitsStored {bits_stored} (at most 16)")
    half = 2 ** (bits_stored - 1)
    r_lo, r_hi = (-half, half - 1) if signed else (0, 2 * half - 1)  # representable stored values
    s = stack.astype(np.int64)
    if s.min() < r_lo or s.max() > r_hi:
        s = np.clip(s, r_lo, r_hi)
        notes.append(f"stored values outside the {bits_stored}-bit range were clipped")
    slope, intercept = _dicom_rescale(ds, path)
    if photometric.startswith("MONOCHROME"):
        s_lo, s_hi = int(s.min()), int(s.max())
        if s_hi == s_lo:  # constant image: width 1, kept inside the representable range (x is all 0 or 1)
            s_hi, s_lo = (s_hi + 1, s_lo) if s_hi < r_hi else (s_hi, s_lo - 1)
        notes.append(f"stored values {s_lo}..{s_hi} (the file's own range) scaled to [0, 1]")
    else:
        s_lo, s_hi = r_lo, r_hi
    # float64 quotient rounded once to float32; rint(x * (s_hi - s_lo)) recovers s - s_lo (width < 2^24).
    unit = (s - s_lo).astype(np.float64) / float(s_hi - s_lo)
    phys = (s_lo * slope + intercept, s_hi * slope + intercept)
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
        phys = (phys[1], phys[0])
        notes.append("MONOCHROME1 inverted so that bright is 1")
    stored_dtype = ("int" if signed else "uint") + ("8" if bits_allocated <= 8 else "16")
    info = DicomSource(
        stored_dtype, bits_allocated, bits_stored, int(signed), (s_lo, s_hi), slope, intercept, photometric
    )
    return unit.astype(np.float32), (float(phys[0]), float(phys[1])), info, notes


# ---------------------------------------------------------------------------------------------------------
# Writing (a derived DICOM of one frame, or of every frame of a multi-frame source)
# ---------------------------------------------------------------------------------------------------------


def _scaled_ds(value: Any, scale: float) -> str:
    return format_number_as_ds(float(value) / scale)


def _update_spacing(ds: Dataset, scale: float) -> None:
    """Divide every PixelSpacing (top level and functional groups) by the SR factor."""
    holders: list[Dataset] = [ds]
    for seq_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(seq_name, []):
            holders.extend(group.get("PixelMeasuresSequence", []))
    for holder in holders:
        if "PixelSpacing" in holder and holder.PixelSpacing:
            holder.PixelSpacing = [_scaled_ds(v, scale) for v in holder.PixelSpacing]


# Geometry of an in-plane upscale by s (the half-pixel rule of `ldsr.io.volume` and `ldsr.data.resize.imresize`).
# ImagePositionPatient (IPP) is the patient-space centre (mm) of the first transmitted (top-left) pixel; with
# ImageOrientationPatient (IOP) = (r, c), r the unit direction of increasing column index (along a row) and c that
# of increasing row index (down a column), and PixelSpacing = (dr, dc) (row spacing, column spacing), pixel
# (row i, column j) is centred at
#
#     P(i, j) = IPP + j * dc * r + i * dr * c.
#
# Output pixel m along an axis upscaled by s covers input coordinates [m / s - 1/2, (m + 1) / s - 1/2], so its
# centre is input coordinate (m + 1/2) / s - 1/2; output pixel 0 sits at input (1/s - 1) / 2 = -(s - 1) / (2 s)
# along both axes:
#
#     new IPP = P((1/s - 1) / 2, (1/s - 1) / 2) = IPP + (1/s - 1) / 2 * (dc * r + dr * c)      (old spacings)
#
# which keeps the outer corner of the image (input and output pixel coordinate (-1/2, -1/2)) in place, as
# `ldsr.io.volume.upscaled_affine` keeps the NIfTI volume's outer faces.


def _floats(value: Any, n: int) -> np.ndarray | None:
    """`value` (a DICOM multi-valued DS) as n finite floats, or None when it is not that."""
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and bool(np.all(np.isfinite(arr))) else None


def _first_item(holder: Dataset | None, sequence: str) -> Dataset | None:
    """First item of `sequence` in `holder` (a dataset or a functional group), if any."""
    if holder is None or sequence not in holder or not holder[sequence].value:
        return None
    item: Dataset = holder[sequence].value[0]
    return item


def _first_value(holders: Sequence[Dataset | None], keyword: str, n: int) -> np.ndarray | None:
    """`keyword` as n floats from the first of `holders` with a non-empty one; None when none has it or that
    one is not n finite numbers (then nothing is guessed from a less specific holder)."""
    for holder in holders:
        if holder is not None and keyword in holder and holder[keyword].value:
            return _floats(holder[keyword].value, n)
    return None


def _first_pixel_shift(orientation: np.ndarray, spacing: np.ndarray, scale: float) -> np.ndarray:
    """Patient-space move (mm) of the first pixel's centre for an upscale by `scale`: (1/s - 1) / 2 * (dc r + dr c),
    with r = orientation[:3] (along a row, column spacing dc = spacing[1]) and c = orientation[3:] (down a column,
    row spacing dr = spacing[0]), the old spacings; see the geometry note above."""
    along_row, down_column = orientation[:3], orientation[3:]
    return (1.0 / scale - 1.0) / 2.0 * (spacing[1] * along_row + spacing[0] * down_column)


def _shift_position(
    holder: Dataset, orientations: Sequence[Dataset | None], spacings: Sequence[Dataset | None], scale: float
) -> None:
    """Move `holder`'s ImagePositionPatient by `_first_pixel_shift`, with the ImageOrientationPatient and
    PixelSpacing of the first of `orientations` / `spacings` that has one; unchanged when any is missing."""
    position = _first_value([holder], "ImagePositionPatient", 3)
    orientation = _first_value(orientations, "ImageOrientationPatient", 6)
    spacing = _first_value(spacings, "PixelSpacing", 2)
    if position is None or orientation is None or spacing is None:
        return
    moved = position + _first_pixel_shift(orientation, spacing, scale)
    holder.ImagePositionPatient = [format_number_as_ds(float(v)) for v in moved]


def _update_positions(ds: Dataset, scale: float) -> None:
    """Move every ImagePositionPatient (top level; PlanePositionSequence of the shared and of each per-frame
    functional group) to the centre of the upscaled image's first pixel. Orientation and spacing: the most
    specific holder's (this frame's group, then the shared group, then the top level). Call it before the
    PixelSpacing is divided (`_update_spacing`): the shift uses the old spacing."""
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    shared_orient = _first_item(shared, "PlaneOrientationSequence")
    shared_measures = _first_item(shared, "PixelMeasuresSequence")
    _shift_position(ds, [ds, shared_orient], [ds, shared_measures], scale)
    groups = [(shared, [shared_orient, ds], [shared_measures, ds])]
    for group in ds.get("PerFrameFunctionalGroupsSequence", []):
        orient = _first_item(group, "PlaneOrientationSequence")
        measures = _first_item(group, "PixelMeasuresSequence")
        groups.append((group, [orient, shared_orient, ds], [measures, shared_measures, ds]))
    for group, orientations, spacings in groups:
        for position in (group or Dataset()).get("PlanePositionSequence", []):
            _shift_position(position, orientations, spacings, scale)


def _update_geometry(ds: Dataset, scale: float) -> None:
    """The plane geometry of an image upscaled by `scale`: first-pixel positions moved, then spacings divided."""
    _update_positions(ds, scale)
    _update_spacing(ds, scale)


def _to_stored(x: np.ndarray, info: DicomSource) -> np.ndarray:
    """Inverse of `_dicom_integer_to_unit`: stored = s_lo + rint(x' * (s_hi - s_lo)), x' = x or 1 - x."""
    s_lo, s_hi = info.stored_range
    unit = 1.0 - x if info.photometric == "MONOCHROME1" else x
    s = np.rint(unit * float(s_hi - s_lo)).astype(np.int64) + s_lo
    return s.astype(np.dtype(info.stored_dtype))


def _source_dataset(meta: ImageMeta, channels: int, out: Path) -> tuple[Dataset, DicomSource, int]:
    """(the source re-read, its stored-value rule, samples per pixel) for a derived image of `channels` channels;
    ValueError / ImageError when the source cannot be written back as DICOM."""
    info = meta.dicom
    if info is None:
        raise ValueError(f"{out}: DICOM output needs a DICOM source's metadata, got {meta.format} metadata")
    if info.stored_dtype.startswith("float"):
        raise ValueError(f"{out}: DICOM output of float pixel data (from {meta.path}) is not supported")
    samples = 3 if info.photometric == "RGB" or info.photometric.startswith("YBR") else 1
    if channels != samples:
        raise ValueError(f"{out}: the DICOM source has {samples} channel(s), the image {channels}")
    src = Path(meta.path)
    try:
        ds = pydicom.dcmread(src)
    except Exception as e:
        raise ImageError(out, f"cannot re-read the DICOM source {src} ({_one_line(e)})") from e
    return ds, info, samples


def _set_pixels(ds: Dataset, stored: np.ndarray, info: DicomSource, samples: int) -> None:
    """Replace the pixels by `stored` (F, H, W, C) stored values: Rows / Columns, NumberOfFrames (when the source
    has it, or F > 1), the pixel module's attributes, uncompressed PixelData (frames in order, pixel-interleaved)."""
    stale = ("FloatPixelData", "DoubleFloatPixelData", "SmallestImagePixelValue", "LargestImagePixelValue")
    for keyword in stale:
        if keyword in ds:
            del ds[keyword]
    if "NumberOfFrames" in ds or stored.shape[0] > 1:
        ds.NumberOfFrames = int(stored.shape[0])
    ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[2])
    ds.SamplesPerPixel = samples
    if samples == 3:
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    elif "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    ds.BitsAllocated = info.bits_allocated
    ds.BitsStored = info.bits_stored
    ds.HighBit = info.bits_stored - 1
    ds.PixelRepresentation = info.pixel_representation
    ds.PixelData = np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OB" if info.bits_allocated <= 8 else "OW"
    ds["PixelData"].is_undefined_length = False  # the source may have been encapsulated (compressed)


def _derived_dataset(
    meta: ImageMeta, image: np.ndarray, scale: float, out: Path, record: Mapping[str, Any] | None = None
) -> Dataset:
    """The source dataset with its pixels replaced by `image` (one frame), marked as a derived image (with the
    ldsr provenance `record`, if given)."""
    ds, info, samples = _source_dataset(meta, image.shape[2], out)
    frame = meta.frame
    # Single-frame result: keep only this frame's per-frame functional group.
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame is not None and frame < len(per_frame):
        ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence([per_frame[frame]])
    _set_pixels(ds, _to_stored(image, info)[None], info, samples)
    _update_geometry(ds, scale)
    _mark_derived(ds, meta, scale, record)
    return ds


def _derived_stack_dataset(
    meta: ImageMeta, images: Sequence[np.ndarray], scale: float, out: Path, record: Mapping[str, Any] | None = None
) -> Dataset:
    """The multi-frame source with every frame replaced by `images` (all frames, in order, one (H, W, C) size):
    NumberOfFrames and the per-frame functional groups kept, Rows / Columns and every PixelSpacing updated, one
    derived image (one SOP instance) marked with the provenance `record`, if given."""
    shapes = {np.shape(im) for im in images}
    if len(shapes) != 1:
        raise ValueError(f"{out}: the frames of one DICOM file must share one size, got {sorted(shapes)}")
    if len(images) != meta.n_frames:
        raise ValueError(f"{out}: {len(images)} frames given, the DICOM source {meta.path} has {meta.n_frames}")
    ds, info, samples = _source_dataset(meta, int(images[0].shape[2]), out)
    if int(ds.get("NumberOfFrames", 1) or 1) != len(images):
        raise ValueError(f"{out}: the DICOM source {meta.path} no longer has {len(images)} frames")
    _set_pixels(ds, _to_stored(np.stack(images), info), info, samples)
    _update_geometry(ds, scale)
    _mark_derived(ds, replace(meta, frame=None), scale, record)
    return ds


def _mark_derived(ds: Dataset, meta: ImageMeta, scale: float, record: Mapping[str, Any] | None = None) -> None:
    """New SOP / series identity, ImageType DERIVED, a derivation note, uncompressed little endian.

    With a provenance `record`, DerivationDescription (ST, at most 1024 characters) also gets its summary
    ("... posterior sample ..." for a sharp-mode draw) and ImageComments (LT) the summary and the JSON record
    (`ldsr.io.provenance`), replacing the source's comments, which described the source image.

    The series UID is a hash of (source series, 'ldsr-sr', scale), so every frame / slice of one source
    series upscaled by one factor lands in one derived series; each file gets a new random SOP UID.
    """
    instance_uid = generate_uid()
    ds.SOPInstanceUID = instance_uid
    source_series = str(ds.get("SeriesInstanceUID", "") or "")
    # f"{scale:g}": 2 and 2.0 name the same series.
    ds.SeriesInstanceUID = (
        generate_uid(entropy_srcs=[source_series, "ldsr-sr", f"{scale:g}"]) if source_series else generate_uid()
    )
    ds.file_meta.MediaStorageSOPInstanceUID = instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    old_type = list(ds.get("ImageType", []) or [])
    ds.ImageType = ["DERIVED", old_type[1] if len(old_type) > 1 else "SECONDARY", *old_type[2:]]
    where = f" frame {meta.frame} of {meta.n_frames}" if meta.frame is not None else ""
    derivation = f"ldsr super-resolution x{scale:g} of{where or ' the'} source image"
    if record is not None:
        derivation = f"{derivation}: {describe(record)}"[:1024]
        ds.ImageComments = provenance_text(record)
    ds.DerivationDescription = derivation
    if meta.frame is not None and "InstanceNumber" in ds:
        ds.InstanceNumber = meta.frame + 1
