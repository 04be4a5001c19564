"""Image input/output: PNG, JPEG, TIFF, DICOM and NIfTI to (H, W, C) float32 arrays in [0, 1], and back.

Reading maps every format to [0, 1] with a recorded, exactly invertible rule (see `ImageMeta`):
PNG / JPEG / TIFF unsigned integers k -> k / (2^b - 1); monochrome DICOM and NIfTI through the file's own
(min, max) window, all frames / slices together (DICOM after RescaleSlope / Intercept, MONOCHROME1
inverted; colour DICOM through the range of BitsStored); float data kept when inside [0, 1], else scaled
by their own (min, max). Multi-frame files (DICOM frames, NIfTI slices, TIFF pages) give one item per frame.

Formats (input suffixes; NIfTI is input only):

- PNG  .png        8/16-bit grey and colour (`pillow`; 16-bit colour through the own codec in `png16`)
- JPEG .jpg .jpeg  8-bit (`pillow`)
- TIFF .tif .tiff  8/16-bit and float, multi-page (`tiff`)
- DICOM .dcm or no suffix with the 'DICM' magic; multi-frame; written as a derived image (`dicom`)
- NIfTI .nii .nii.gz  2D slices along a RAS axis (`nifti`)

Modules: `files` (ImageError, atomic_path), `meta` (ImageMeta, DicomSource, suffix tables), `listing`
(suffix_of, list_images), `read` (read_frames, read_image, count_frames, check_size), `write`
(write_image). Everything is re-exported here, private helpers included, so `from ldsr.io import X`
keeps working for every name the former single module had.
"""

from __future__ import annotations

from ldsr.io.dicom import (
    _derived_dataset,
    _dicom_integer_to_unit,
    _dicom_rescale,
    _dicom_spacing,
    _dicom_stack,
    _functional_group_item,
    _load_dicom,
    _mark_derived,
    _read_dicom,
    _scaled_ds,
    _to_stored,
    _update_spacing,
)
from ldsr.io.files import _UMASK_LOCK, ImageError, _check_readable, _current_umask, _one_line, atomic_path
from ldsr.io.listing import _detect_format, _has_dicom_magic, _suffix_of, list_images, suffix_of
from ldsr.io.meta import (
    _DICOM_MAGIC_OFFSET,
    _PIL_NAMES,
    _SUPPORTED_TEXT,
    OUTPUT_SUFFIXES,
    SUFFIXES,
    DicomSource,
    Frame,
    ImageFormat,
    ImageMeta,
    _float_to_unit,
    _quantise,
    _unsigned_to_unit,
)
from ldsr.io.nifti import _nifti_volume, _read_nifti
from ldsr.io.pillow import _pil_to_array, _read_pil, _write_pil
from ldsr.io.png16 import (
    _FILTER_BLOCK,
    _IDAT_CHUNK,
    _PNG_SAMPLES,
    _PNG_SIGNATURE,
    _decode_png16,
    _encode_png16,
    _filter_scanlines,
    _paeth,
    _parse_ihdr,
    _png_chunk,
    _png_header,
    _PngHeader,
    _read_png16,
    _unfilter_scanlines,
)
from ldsr.io.read import _middle, _pick, check_size, count_frames, read_frames, read_image
from ldsr.io.tiff import _read_tiff, _tiff_to_hwc_frames, _write_tiff
from ldsr.io.write import _as_unit_hwc, _resolve_bit_depth, write_image

__all__ = [
    "OUTPUT_SUFFIXES",
    "SUFFIXES",
    "DicomSource",
    "Frame",
    "ImageError",
    "ImageFormat",
    "ImageMeta",
    "atomic_path",
    "check_size",
    "count_frames",
    "list_images",
    "read_frames",
    "read_image",
    "suffix_of",
    "write_image",
]
