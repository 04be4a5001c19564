"""Provenance: every ldsr output says in its own metadata how it was made, and whether it is a posterior sample.

A sharp-mode output is one draw from the model's posterior: its detail may be invented. For medical users that is
the main risk, so the file itself carries the record (not only a log line), readable without ldsr:

- PNG: tEXt chunks right after IHDR (8- and 16-bit, grey and colour): keyword ``ldsr`` the JSON record,
  ``Description`` the one-line summary;
- JPEG: a COM segment;
- TIFF: the ImageDescription tag;
- DICOM: DerivationDescription gets the one-line summary, ImageComments the summary and the record;
- NIfTI: ``descrip`` (80 characters) the short summary, a comment extension (code 6) the summary and record.

The record is a JSON object (`provenance_record`): ``software`` "ldsr", ``ldsr_version``, ``model``, ``scale``,
``mode`` ("faithful", "sharp", or null for deterministic methods such as bicubic), ``is_sample``, ``draws``,
``steps``, ``sampler``, ``seed``, ``content`` ("image" or "spread", the per-pixel std over the draws) and
``spread`` (the file name of the spread map beside the image, or null). In TIFF, JPEG, DICOM and NIfTI the text
is the human summary, a newline, then ``ldsr-provenance: `` and the JSON (`provenance_text`). `read_provenance`
reads it back from any of these files.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from ldsr.io.files import atomic_path

PNG_KEYWORD = "ldsr"  # tEXt keyword of the record in PNG files
TEXT_MARK = "ldsr-provenance: "  # the JSON record follows this mark in the other formats' text fields
NIFTI_COMMENT_CODE = 6  # NIFTI_ECODE_COMMENT
Content = Literal["image", "spread"]
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_END = 8 + 4 + 4 + 13 + 4  # signature, then IHDR's length, type, 13 data bytes and CRC


def provenance_record(
    *,
    model: str,
    scale: int,
    mode: str | None,
    is_sample: bool,
    draws: int,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int | None = None,
    content: Content = "image",
    spread: str | None = None,
) -> dict[str, Any]:
    """The record of one output (see the module docstring); `mode` None for deterministic methods."""
    from ldsr import __version__

    if content not in ("image", "spread"):
        raise ValueError(f"content must be 'image' or 'spread', got {content!r}")
    if mode not in (None, "faithful", "sharp"):
        raise ValueError(f"mode must be 'faithful', 'sharp' or None, got {mode!r}")
    return {
        "software": "ldsr",
        "ldsr_version": __version__,
        "model": model,
        "scale": int(scale),
        "mode": mode,
        "is_sample": bool(is_sample),
        "draws": int(draws),
        "steps": None if steps is None else int(steps),
        "sampler": sampler,
        "seed": None if seed is None else int(seed),
        "content": content,
        "spread": spread,
    }


def _ascii(text: str) -> str:
    """TIFF descriptions, PNG tEXt and DICOM short text want plain ASCII: other characters as escapes."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def describe(record: Mapping[str, Any]) -> str:
    """A one-line human summary of a record, e.g. 'ldsr 0.1.0 posterior sample (sharp mode) of mri-x4 x4: ...'."""
    how = f"{record.get('model')} x{record.get('scale')}"
    details = [f"{record.get('draws')} draws"]
    if record.get("steps") is not None:
        details.append(f"{record['steps']} steps")
    if record.get("seed") is not None:
        details.append(f"seed {record['seed']}")
    run = f"{how}, {', '.join(details)}"
    head = f"ldsr {record.get('ldsr_version')}"
    spread = f"; spread over the draws in {record['spread']}" if record.get("spread") else ""
    if record.get("content") == "spread":
        text = f"{head} spread map: 2 x per-pixel std over the draws ({record.get('mode')} mode, {run})"
    elif record.get("is_sample"):
        text = f"{head} posterior sample ({record.get('mode')} mode, {run}): detail may be invented{spread}"
    elif record.get("mode") is None:
        text = f"{head} deterministic super-resolution ({how})"
    else:
        text = f"{head} posterior mean estimate ({record.get('mode')} mode, {run}){spread}"
    return _ascii(text)


def provenance_text(record: Mapping[str, Any]) -> str:
    """The text stored in TIFF / JPEG / DICOM / NIfTI: the summary, a newline, the mark and the JSON (ASCII)."""
    return f"{describe(record)}\n{TEXT_MARK}{json.dumps(dict(record), sort_keys=True)}"


def parse_provenance_text(text: str | bytes | None) -> dict[str, Any] | None:
    """The record inside a text written by `provenance_text` (or a bare JSON record); None when there is none."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    at = text.find(TEXT_MARK)
    body = text[at + len(TEXT_MARK) :] if at >= 0 else text
    try:
        record = json.loads(body.strip())
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and record.get("software") == "ldsr" else None


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_record(data: bytes, record: Mapping[str, Any]) -> bytes:
    """PNG file bytes with two tEXt chunks inserted right after IHDR: `PNG_KEYWORD` holding the JSON record and
    the standard keyword "Description" holding its one-line summary (what image viewers show)."""
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file (no IHDR chunk after the signature)")
    record_json = _ascii(json.dumps(dict(record), sort_keys=True)).encode("ascii")
    chunks = _png_chunk(b"tEXt", PNG_KEYWORD.encode("latin-1") + b"\0" + record_json)
    chunks += _png_chunk(b"tEXt", b"Description\0" + describe(record).encode("ascii"))
    return data[:_IHDR_END] + chunks + data[_IHDR_END:]


def _png_text(data: bytes) -> str | None:
    """The tEXt chunk with keyword `PNG_KEYWORD` of PNG bytes, else None (chunks walked until IEND)."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"tEXt" and body.split(b"\0", 1)[0] == PNG_KEYWORD.encode("latin-1") and b"\0" in body:
            return body.split(b"\0", 1)[1].decode("latin-1")
        if kind == b"IEND":
            break
        pos += 12 + length
    return None


def _jpeg_comment(path: Path) -> bytes | None:
    from PIL import Image

    with Image.open(path, formats=("JPEG",)) as im:
        comment = im.info.get("comment")
    return comment if isinstance(comment, bytes) else None


def _tiff_description(path: Path) -> str | None:
    import tifffile

    with tifffile.TiffFile(path) as tf:
        return str(tf.pages.first.description)


def _dicom_comments(path: Path) -> str | None:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.get("ImageComments", "") or "")


def _nifti_comment(path: Path) -> str | None:
    import nibabel as nib

    img = nib.load(path)
    for ext in getattr(img.header, "extensions", []):
        if ext.get_code() == NIFTI_COMMENT_CODE:
            text = ext.get_content()
            text = text.decode("latin-1") if isinstance(text, bytes) else str(text)
            if TEXT_MARK in text:
                return text
    return None


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ldsr record of an output file (PNG, JPEG, TIFF, DICOM, NIfTI), or None when it has none or cannot be
    read as one of these formats (this never raises for a foreign or damaged file)."""
    from ldsr.io.listing import suffix_of

    p = Path(path)
    suffix = suffix_of(p)
    try:
        if suffix == ".png":
            return parse_provenance_text(_png_text(p.read_bytes()))
        readers = {".jpg": _jpeg_comment, ".jpeg": _jpeg_comment, ".tif": _tiff_description,
                   ".tiff": _tiff_description, ".dcm": _dicom_comments, ".nii": _nifti_comment,
                   ".nii.gz": _nifti_comment}  # fmt: skip
        reader = readers.get(suffix, _dicom_comments if suffix == "" else None)
        return None if reader is None else parse_provenance_text(reader(p))
    except Exception:  # many libraries, many error types: a file without a readable record has none
        return None


def mark_volume(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Add the record to a NIfTI file written by ldsr (rewritten atomically): ``descrip`` gets the start of the
    summary (80 characters), a comment extension (code 6) the whole text. Earlier ldsr comments are replaced."""
    import nibabel as nib

    p = Path(path)
    img = nib.load(p)
    if not isinstance(img, nib.Nifti1Image):
        raise ValueError(f"{p}: not a NIfTI-1/2 file")
    header = img.header
    text = provenance_text(record)
    keep = [
        e for e in header.extensions if not (e.get_code() == NIFTI_COMMENT_CODE and TEXT_MARK in str(e.get_content()))
    ]
    header.extensions.clear()
    header.extensions.extend([*keep, nib.nifti1.Nifti1Extension(NIFTI_COMMENT_CODE, text.encode("ascii"))])
    header["descrip"] = text.split("\n", 1)[0][:79].encode("ascii")
    out = type(img)(img.dataobj, img.affine, header=header)
    blob = out.to_bytes()
    with atomic_path(p) as tmp:
        if p.name.lower().endswith(".gz"):
            with gzip.open(tmp, "wb", compresslevel=6) as f:
                f.write(blob)
        else:
            tmp.write_bytes(blob)
