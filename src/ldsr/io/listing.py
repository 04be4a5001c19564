"""Suffix handling and folder listing: which files are images, and in which format."""

from __future__ import annotations

import os
from pathlib import Path

from ldsr.io.files import ImageError
from ldsr.io.meta import _DICOM_MAGIC_OFFSET, _SUPPORTED_TEXT, SUFFIXES, ImageFormat


def suffix_of(path: Path) -> str:
    """The lower-case suffix that selects the format; '.nii.gz' counts as one, '' when there is none."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


_suffix_of = suffix_of  # the former private name, kept for compatibility


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(_DICOM_MAGIC_OFFSET)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _detect_format(path: Path) -> ImageFormat:
    """Format from the suffix (suffixless files: DICOM if they carry the magic); ImageError otherwise."""
    suffix = suffix_of(path)
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if suffix == "" and _has_dicom_magic(path):
        return "dicom"
    shown = suffix or "(no suffix, no DICOM preamble)"
    raise ImageError(path, f"unsupported format {shown} (supported: {_SUPPORTED_TEXT})")


def list_images(folder: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
    """Supported image files under `folder`, sorted; a file path gives `[path]`.

    Selection is by suffix (case-insensitive: .png .jpg .jpeg .tif .tiff .dcm .nii .nii.gz); files without
    a suffix are included when they carry the DICOM magic 'DICM' at byte 128. Hidden files and folders
    (name starting with '.', e.g. half-written atomic temporaries) are skipped.
    """
    root = Path(folder)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ImageError(root, "no such file or folder")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in filenames:
            p = Path(dirpath) / name
            if name.startswith(".") or not p.is_file():
                continue
            suffix = suffix_of(p)
            if suffix in SUFFIXES or (suffix == "" and _has_dicom_magic(p)):
                found.append(p)
    return sorted(found)
