"""Writing generated images (no source file) as DICOM or NIfTI, marked as synthetic.

A sample of `ldsr generate` has no acquisition behind it: there is no source dataset to derive from (as
`write_image` does for an upscaled DICOM) and no scanner geometry. These writers make a minimal, valid file
that a viewer opens and that nobody can mistake for a patient's image:

- DICOM: a Secondary Capture Image (SOP class 1.2.840.10008.5.1.4.1.1.7), MONOCHROME2 or RGB, 8 or 16 bits,
  ImageType DERIVED\\SECONDARY, ConversionType SYN (synthetic image), PatientName / PatientID "SYNTHETIC",
  the description in SeriesDescription, DerivationDescription and ImageComments; every sample of one run shares
  the StudyInstanceUID and SeriesInstanceUID given by the caller; no PixelSpacing (no physical size).
- NIfTI: a 2D image in a one-slice volume with the identity affine (1 mm voxels, RAS), uint8 / uint16, the
  description in the header's `descrip` (80 bytes). Rows are laid out so that `read_image` of the file gives
  the array back (the axial display convention of `ldsr.io.nifti`).
"""

from __future__ import annotations

import datetime as _dt
import gzip
import os
from pathlib import Path
from typing import Literal

import numpy as np

from ldsr.io.files import atomic_path
from ldsr.io.meta import quantize

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _unit_hwc(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image, dtype=np.float32)
    x = x[:, :, None] if x.ndim == 2 else x
    if x.ndim != 3 or x.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {np.shape(image)}")
    return x


def write_synthetic_dicom(
    path: str | os.PathLike[str], image: np.ndarray, *, bits: Literal[8, 16], description: str,
    study_uid: str, series_uid: str, instance: int,
) -> Path:  # fmt: skip
    """Write a generated (H, W[, C]) image in [0, 1] as a Secondary Capture DICOM (see the module), atomically."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    x = _unit_hwc(image)
    stored = quantize(x, bits)  # (H, W, C) uint8 / uint16
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SECONDARY_CAPTURE)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    now = _dt.datetime.now(_dt.timezone.utc)
    ds.SOPClassUID, ds.SOPInstanceUID = UID(SECONDARY_CAPTURE), meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality, ds.ConversionType = "OT", "SYN"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientName, ds.PatientID = "SYNTHETIC", "SYNTHETIC"
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SeriesNumber, ds.InstanceNumber = 1, instance
    ds.SeriesDescription = description[:64]
    ds.DerivationDescription = description[:1024]
    ds.ImageComments = description[:10240]
    ds.BurnedInAnnotation = "NO"
    ds.Rows, ds.Columns = int(x.shape[0]), int(x.shape[1])
    ds.SamplesPerPixel = int(x.shape[2])
    ds.PhotometricInterpretation = "MONOCHROME2" if x.shape[2] == 1 else "RGB"
    if x.shape[2] == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(stored if x.shape[2] == 3 else stored[:, :, 0]).tobytes()
    out = Path(path)
    with atomic_path(out) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    return out


def write_synthetic_nifti(path: str | os.PathLike[str], image: np.ndarray, *, bits: Literal[8, 16],
                          description: str) -> Path:  # fmt: skip
    """Write a generated grey (H, W[, 1]) image in [0, 1] as a one-slice NIfTI (see the module), atomically."""
    import nibabel as nib

    x = _unit_hwc(image)
    if x.shape[2] != 1:
        raise ValueError(f"{path}: NIfTI samples are grey (1 channel), got {x.shape[2]} channels")
    stored = quantize(x[:, :, 0], bits)  # (H, W)
    # ldsr.io.nifti shows voxel (a, b) of an axial slice at row H - 1 - b, column a: invert that layout.
    vol = np.ascontiguousarray(np.flipud(stored).T)[:, :, None]  # (W, H, 1) RAS voxels
    img = nib.Nifti1Image(vol, np.eye(4))
    img.header["descrip"] = description.encode("ascii", "replace")[:79]
    img.header.set_xyzt_units("mm")
    data = img.to_bytes()  # a single-file .nii image
    out = Path(path)
    with atomic_path(out) as tmp:
        tmp.write_bytes(gzip.compress(data, mtime=0) if out.name.endswith(".gz") else data)
    return out
