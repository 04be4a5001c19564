"""Image input/output: PNG, JPEG, TIFF, DICOM and NIfTI to (H, W, C) float32 arrays in [0, 1], and back.

Reading maps every format to [0, 1] with a recorded, exactly invertible rule (see `ImageMeta`):
PNG / JPEG / TIFF unsigned integers k -> k / (2^b - 1); monochrome DICOM and NIfTI through the file's own
(min, max) window, all frames / slices together (DICOM after RescaleSlope / Intercept, MONOCHROME1
inverted; colour DICOM through the range of BitsStored); float data kept when inside [0, 1], else scaled
by their own (min, max). Multi-frame files (DICOM frames, NIfTI slices, TIFF pages) give one item per frame.

Formats (the input suffixes; `write_image` writes one 2D image as PNG, JPEG, TIFF or DICOM, `OUTPUT_SUFFIXES`,
`write_dicom_frames` every frame of a multi-frame DICOM as one multi-frame DICOM;
NIfTI volumes are written whole by `volume.write_volume`, and whole-slide regions as pyramidal BigTIFF by
`wsi.write_pyramid`):

- PNG  .png        8/16-bit grey and colour (`pillow`; 16-bit colour through libpng (imagecodecs) in `png16`)
- JPEG .jpg .jpeg  8-bit (`pillow`)
- TIFF .tif .tiff  8/16-bit and float, multi-page (`tiff`)
- DICOM .dcm or no suffix with the 'DICM' magic; multi-frame; written as a derived image (`dicom`)
- NIfTI .nii .nii.gz  2D slices along a RAS axis (`nifti`); whole volumes read and written (`volume`)

Every ldsr output records how it was made in its own metadata, and whether it is a posterior sample (a
sharp-mode draw, whose detail may be invented): `write_image(..., provenance=record)` for images,
`provenance.mark_volume` for NIfTI volumes, `read_provenance(path)` to read the record back (`provenance`).

Modules: `files` (ImageError, atomic_path), `meta` (ImageMeta, DicomSource, suffix tables), `listing`
(suffix_of, list_images), `read` (read_frames, read_image, count_frames, check_size), `write`
(write_image, write_dicom_frames), `provenance` (provenance_record, read_provenance, mark_volume); `volume`
(NIfTI volumes), `wsi` (whole-slide images) and `synthetic` (generated samples as DICOM / NIfTI) are imported
from their modules. The public names are re-exported
here.
"""

from __future__ import annotations

from ldsr.io.files import ImageError, atomic_path
from ldsr.io.listing import list_images, suffix_of
from ldsr.io.meta import OUTPUT_SUFFIXES, SUFFIXES, DicomSource, Frame, ImageFormat, ImageMeta
from ldsr.io.provenance import provenance_record, read_provenance
from ldsr.io.read import check_size, count_frames, read_frames, read_image
from ldsr.io.write import write_dicom_frames, write_image

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
    "provenance_record",
    "read_frames",
    "read_image",
    "read_provenance",
    "suffix_of",
    "write_dicom_frames",
    "write_image",
]
