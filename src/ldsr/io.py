"""Image input/output: PNG, JPEG, TIFF, DICOM and NIfTI to (H, W, C) float32 arrays in [0, 1], and back.

Reading maps every format to [0, 1] with a recorded, exactly invertible rule (see `ImageMeta`):
PNG / JPEG / TIFF unsigned integers k -> k / (2^b - 1); monochrome DICOM and NIfTI through the file's own
(min, max) window, all frames / slices together (DICOM after RescaleSlope / Intercept, MONOCHROME1
inverted; colour DICOM through the range of BitsStored); float data kept when inside [0, 1], else scaled
by their own (min, max). Multi-frame files (DICOM frames, NIfTI slices, TIFF pages) give one item per frame.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import threading
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Literal

import nibabel as nib
import nibabel.orientations  # noqa: F401  (io_orientation / apply_orientation)
import numpy as np
import pydicom
import tifffile
from PIL import Image, UnidentifiedImageError
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds


class ImageError(ValueError):
    """A problem with one input or output file; the message is '<path>: <reason>'."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


_UMASK_LOCK = threading.Lock()


def _current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status).

    Elsewhere it is set to 0 and restored at once, under a lock so that two readers cannot interleave
    (another thread creating a file inside that instant would still see umask 0).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0)
        try:
            return mask
        finally:
            os.umask(mask)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, on failure delete it.

    The final file gets the permissions a plain `open(path, "w")` would give (0o666 minus the umask), not
    mkstemp's private 0o600.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file() and not tmp_path.is_symlink():
            os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------------------
# Formats and metadata
# ---------------------------------------------------------------------------------------------------------

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
# Output suffixes: NIfTI is input only.
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
    def from_dict(cls, d: dict[str, Any]) -> "ImageMeta":
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
# Small helpers
# ---------------------------------------------------------------------------------------------------------


def _one_line(err: BaseException, path: Path | None = None) -> str:
    """An exception's text on one line, without the file path (the ImageError prefix already has it)."""
    text = str(err) or type(err).__name__
    if path is not None:
        for p in (repr(str(path)), str(path)):
            text = text.replace(p, "")
    text = " ".join(text.replace("''", "").split())
    return text[:200] or type(err).__name__


def _suffix_of(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(_DICOM_MAGIC_OFFSET)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _detect_format(path: Path) -> ImageFormat:
    """Format from the suffix (suffixless files: DICOM if they carry the magic); ImageError otherwise."""
    suffix = _suffix_of(path)
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if suffix == "" and _has_dicom_magic(path):
        return "dicom"
    shown = suffix or "(no suffix, no DICOM preamble)"
    raise ImageError(path, f"unsupported format {shown} (supported: {_SUPPORTED_TEXT})")


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ImageError(path, "file not found")
    if path.is_dir():
        raise ImageError(path, "is a directory, not an image file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageError(path, f"cannot read file ({_one_line(e, path)})") from e
    if size == 0:
        raise ImageError(path, "empty file")


def _unsigned_to_unit(arr: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned integers in [0, 2^bits - 1] -> float32 k / (2^bits - 1).

    IEEE division is correctly rounded, so float32(k) / float32(N) == float32(k / N), and for N < 2^24
    rint(float64(x) * N) recovers k exactly (the error is below N * 2^-25 < 0.5).
    """
    n = float(2**bits - 1)
    return (arr.astype(np.float32) / np.float32(n)).astype(np.float32)


def _float_to_unit(
    arr: np.ndarray, path: Path
) -> tuple[np.ndarray, tuple[float, float], tuple[str, ...]]:
    """Float samples -> [0, 1]: kept when already inside, else scaled by their own (min, max)."""
    a = arr.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ImageError(path, "contains NaN or inf values")
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0.0 and hi <= 1.0:
        return a.astype(np.float32), (0.0, 1.0), ()
    x = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return x.astype(np.float32), (lo, hi), (f"float values scaled from [{lo:.6g}, {hi:.6g}] to [0, 1]",)


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


# ---------------------------------------------------------------------------------------------------------
# PNG / JPEG (Pillow)
# ---------------------------------------------------------------------------------------------------------

_PIL_NAMES = {"png": "PNG", "jpeg": "JPEG"}


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Colour type -> samples per pixel: grey, RGB, grey + alpha, RGBA (palette, type 3, is left to Pillow).
_PNG_SAMPLES = {0: 1, 2: 3, 4: 2, 6: 4}


@dataclass(frozen=True)
class _PngHeader:
    width: int
    height: int
    bit_depth: int
    colour_type: int
    compression: int
    filter_method: int
    interlace: int


def _parse_ihdr(data: bytes) -> _PngHeader | None:
    """The IHDR chunk of PNG bytes (signature 8 + length 4 + b'IHDR' 4 + 13 data bytes), None if absent."""
    if len(data) < 29 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    return _PngHeader(*struct.unpack(">IIBBBBB", data[16:29]))


def _png_header(path: Path) -> _PngHeader | None:
    try:
        with open(path, "rb") as f:
            return _parse_ihdr(f.read(29))
    except OSError:
        return None


def _pil_to_array(im: Image.Image, path: Path) -> tuple[np.ndarray, int, list[str]]:
    """A decoded Pillow image -> (H, W, C) integer array, its bit depth and conversion notes."""
    notes: list[str] = []
    mode = im.mode
    if mode == "1":
        im, mode = im.convert("L"), "L"
        notes.append("1-bit image expanded to 8-bit")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
        notes.append("palette expanded to RGB")
    if mode in ("LA", "La", "RGBA", "RGBa"):
        im = im.convert("L" if mode.startswith("L") else "RGB")
        notes.append("alpha channel dropped")
        mode = im.mode
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
        notes.append(f"converted from {mode} to RGB")
        mode = "RGB"
    if mode in ("L", "RGB"):
        arr = np.asarray(im, dtype=np.uint8)
        header = _png_header(path)
        if mode == "RGB" and header is not None and header.bit_depth == 16:
            notes.append("16-bit colour PNG reduced to 8 bits per channel by Pillow")
        return (arr[:, :, None] if arr.ndim == 2 else arr), 8, notes
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageError(path, f"unsupported {mode} samples outside 0..65535")
        return arr.astype(np.uint16)[:, :, None], 16, notes
    raise ImageError(path, f"unsupported image mode {mode}")


def _read_pil(path: Path, fmt: ImageFormat) -> list[Frame]:
    header = _png_header(path)
    if header is not None and header.bit_depth == 16 and header.colour_type in (2, 4, 6) and not header.interlace:
        return _read_png16(path, fmt)  # Pillow would keep only 8 bits per channel
    name = _PIL_NAMES[fmt]
    try:
        im = Image.open(path, formats=("PNG", "JPEG"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(path, f"not a {name} file (could not decode: {_one_line(e, path)})") from e
    except Image.DecompressionBombError as e:
        raise ImageError(path, f"image too large ({_one_line(e, path)})") from e
    with im:
        actual: ImageFormat = "jpeg" if im.format == "JPEG" else "png"
        try:
            im.load()  # forces full decoding; truncated data raise because LOAD_TRUNCATED_IMAGES is False
        except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as e:
            kind = _PIL_NAMES[actual]
            raise ImageError(path, f"truncated or corrupt {kind} data ({_one_line(e, path)})") from e
        arr, bits, notes = _pil_to_array(im, path)
    if actual != fmt:
        notes.append(f"content is {_PIL_NAMES[actual]} although the suffix says {name}")
    x = _unsigned_to_unit(arr, bits)
    meta = ImageMeta(
        path=str(path),
        format=actual,
        bit_depth=bits,
        value_range=(0.0, float(2**bits - 1)),
        spacing=None,
        channels=x.shape[2],
        notes=tuple(notes),
    )
    return [(x, meta)]


# ---------------------------------------------------------------------------------------------------------
# 16-bit PNG codec (Pillow keeps at most 8 bits per channel for colour PNG)
# ---------------------------------------------------------------------------------------------------------

_IDAT_CHUNK = 1 << 23  # IDAT payload per chunk (any size < 2^31 is valid; several chunks are usual)
_FILTER_BLOCK = 256  # rows filtered at once when encoding (bounds the (5, rows, stride) candidates)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """length (4 bytes, big endian) + type + data + CRC-32 over type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """PNG Paeth predictor of left a, up b, up-left c (signed ints): the one closest to p = a + b - c.

    |p - a| = |b - c|, |p - b| = |a - c|, |p - c| = |a + b - 2c|; ties prefer a, then b.
    """
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filter_scanlines(raw: np.ndarray, bpp: int, filter_type: int | None) -> np.ndarray:
    """(H, stride) uint8 scanlines -> (H, 1 + stride) uint8: the filter type byte, then the filtered row.

    Filters are byte-wise with the left neighbour a = raw[y, i - bpp] (bpp = bytes per pixel), up
    b = raw[y - 1, i], up-left c = raw[y - 1, i - bpp] (0 outside the image): None f = r, Sub r - a,
    Up r - b, Average r - floor((a + b) / 2), Paeth r - paeth(a, b, c), all mod 256. `filter_type` None
    picks per row the filter with the smallest sum of |f| read as signed bytes (libpng's heuristic).
    """
    h, stride = raw.shape
    r = raw.astype(np.int16)
    out = np.empty((h, 1 + stride), np.uint8)
    for y0 in range(0, h, _FILTER_BLOCK):
        y1 = min(h, y0 + _FILTER_BLOCK)
        cur = r[y0:y1]
        up = np.zeros_like(cur)
        up[1:] = cur[:-1]
        if y0 > 0:
            up[0] = r[y0 - 1]
        left = np.zeros_like(cur)
        left[:, bpp:] = cur[:, :-bpp]
        upleft = np.zeros_like(cur)
        upleft[:, bpp:] = up[:, :-bpp]
        cands = np.stack([cur, cur - left, cur - up, cur - ((left + up) >> 1), cur - _paeth(left, up, upleft)])
        cands &= 0xFF  # (5, rows, stride) in 0..255
        rows = np.arange(y1 - y0)
        if filter_type is None:
            signed = np.where(cands >= 128, 256 - cands, cands)  # |byte as int8|
            choice = signed.sum(axis=2, dtype=np.int64).argmin(axis=0)
        else:
            choice = np.full(y1 - y0, filter_type)
        out[y0:y1, 0] = choice
        out[y0:y1, 1:] = cands[choice, rows]
    return out


def _encode_png16(image: np.ndarray, *, filter_type: int | None = None) -> bytes:
    """(H, W, C) uint16, C in {1, 3} -> a 16-bit grey (colour type 0) or RGB (type 2) PNG file's bytes.

    Samples are big endian; one zlib stream of the filtered scanlines split over IDAT chunks.
    """
    if image.dtype != np.uint16 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H, W, 1 or 3) uint16 image, got {image.dtype} {image.shape}")
    if filter_type is not None and filter_type not in range(5):
        raise ValueError(f"PNG filter type must be 0..4 or None (adaptive), got {filter_type}")
    h, w, c = image.shape
    # (H, W, C) -> big-endian bytes per scanline: (H, W * C * 2) uint8.
    raw = np.ascontiguousarray(image, dtype=">u2").view(np.uint8).reshape(h, w * c * 2)
    filtered = _filter_scanlines(raw, 2 * c, filter_type)
    stream = zlib.compress(filtered.tobytes(), 6)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0 if c == 1 else 2, 0, 0, 0)
    parts = [_PNG_SIGNATURE, _png_chunk(b"IHDR", ihdr)]
    for i in range(0, max(len(stream), 1), _IDAT_CHUNK):
        parts.append(_png_chunk(b"IDAT", stream[i : i + _IDAT_CHUNK]))
    parts.append(_png_chunk(b"IEND", b""))
    return b"".join(parts)


def _unfilter_scanlines(filt: np.ndarray, types: np.ndarray, bpp: int) -> np.ndarray:
    """Inverse of `_filter_scanlines`: (H, stride) filtered bytes and (H,) filter types -> raw bytes.

    Rows of types None / Sub / Up only are undone row by row (Sub: a running sum per byte lane, mod 256).
    Average and Paeth depend on the reconstructed left pixel, so they are undone along anti-diagonals
    x + y = d instead: pixel (y, x) needs only (y, x-1), (y-1, x) and (y-1, x-1), all on earlier diagonals,
    which takes H + W - 1 vector steps rather than H * W scalar ones.
    """
    h, stride = filt.shape
    if int(types.max(initial=0)) <= 2:
        out = np.empty((h, stride), np.uint8)
        prior = np.zeros(stride, np.uint8)
        for y in range(h):
            t = int(types[y])
            if t == 0:
                out[y] = filt[y]
            elif t == 1:  # uint8 arithmetic wraps, i.e. is mod 256
                out[y] = np.cumsum(filt[y].reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
            else:
                out[y] = filt[y] + prior
            prior = out[y]
        return out
    w = stride // bpp
    f = filt.reshape(h, w, bpp).astype(np.int16)
    rec = np.zeros((h + 1, w + 1, bpp), np.int16)  # one zero row above and one zero column to the left
    t_all = types.astype(np.int16)
    for d in range(h + w - 1):
        y = np.arange(max(0, d - w + 1), min(h - 1, d) + 1)
        x = d - y
        a, b, c = rec[y + 1, x], rec[y, x + 1], rec[y, x]
        t = t_all[y][:, None]
        pred = np.select([t == 1, t == 2, t == 3, t == 4], [a, b, (a + b) >> 1, _paeth(a, b, c)], 0)
        rec[y + 1, x + 1] = (f[y, x] + pred) & 0xFF
    return rec[1:, 1:].astype(np.uint8).reshape(h, stride)


def _decode_png16(data: bytes, path: Path) -> tuple[np.ndarray, bool]:
    """A 16-bit, non-interlaced PNG's bytes -> ((H, W, S) uint16 with every sample, alpha included, and
    whether a tRNS chunk was present). Chunk CRCs are checked; problems raise `ImageError`."""

    def corrupt(reason: str) -> ImageError:
        return ImageError(path, f"truncated or corrupt PNG data ({reason})")

    header = _parse_ihdr(data)
    if header is None:
        raise corrupt("no IHDR chunk")
    if header.bit_depth != 16 or header.colour_type not in _PNG_SAMPLES or header.interlace != 0:
        raise corrupt("not a non-interlaced 16-bit grey or RGB PNG")
    if header.compression != 0 or header.filter_method != 0:
        raise corrupt(f"unknown compression {header.compression} or filter method {header.filter_method}")
    h, w = header.height, header.width
    if h == 0 or w == 0:
        raise corrupt(f"image size {w}x{h}")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and h * w > 2 * limit:
        raise ImageError(path, f"image too large ({h * w} pixels exceeds the limit of {2 * limit})")
    idat: list[bytes] = []
    has_trns, seen_end, pos = False, False, 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise corrupt(f"chunk {kind!r} cut short")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body) & 0xFFFFFFFF:
            raise corrupt(f"CRC mismatch in chunk {kind!r}")
        if kind == b"IDAT":
            idat.append(body)
        elif kind == b"tRNS":
            has_trns = True
        elif kind == b"IEND":
            seen_end = True
            break
        pos += 12 + length
    if not idat or not seen_end:
        raise corrupt("no IDAT chunk" if not idat else "no IEND chunk")
    samples = _PNG_SAMPLES[header.colour_type]
    bpp = 2 * samples
    stride = w * bpp
    expected = h * (1 + stride)
    try:
        raw = zlib.decompressobj().decompress(b"".join(idat), expected)  # at most `expected` bytes
    except zlib.error as e:
        raise corrupt(_one_line(e)) from e
    if len(raw) < expected:
        raise corrupt(f"{len(raw)} of {expected} image bytes")
    rows = np.frombuffer(raw, np.uint8).reshape(h, 1 + stride)
    types = rows[:, 0]
    if int(types.max()) > 4:
        raise corrupt(f"unknown scanline filter type {int(types.max())}")
    unfiltered = _unfilter_scanlines(rows[:, 1:], types, bpp)
    # Big-endian byte pairs -> native uint16, (H, W, S).
    return unfiltered.view(">u2").reshape(h, w, samples).astype(np.uint16), has_trns


def _read_png16(path: Path, fmt: ImageFormat) -> list[Frame]:
    """16-bit colour (or grey + alpha) PNG at full depth, where Pillow would reduce it to 8 bits."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(path, f"cannot read file ({_one_line(e, path)})") from e
    arr, has_trns = _decode_png16(data, path)
    notes: list[str] = []
    if arr.shape[2] in (2, 4):
        arr = arr[:, :, :-1]
        notes.append("alpha channel dropped")
    if has_trns:
        notes.append("transparency (tRNS) ignored")
    if fmt != "png":
        notes.append(f"content is PNG although the suffix says {_PIL_NAMES[fmt]}")
    x = _unsigned_to_unit(arr, 16)
    meta = ImageMeta(
        path=str(path),
        format="png",
        bit_depth=16,
        value_range=(0.0, 65535.0),
        spacing=None,
        channels=x.shape[2],
        notes=tuple(notes),
    )
    return [(x, meta)]


# ---------------------------------------------------------------------------------------------------------
# TIFF (tifffile)
# ---------------------------------------------------------------------------------------------------------


def _tiff_to_hwc_frames(arr: np.ndarray, axes: str, path: Path) -> tuple[np.ndarray, list[str]]:
    """tifffile series -> (F, H, W, C): samples last, every axis before Y X flattened into frames."""
    notes: list[str] = []
    if "S" in axes:
        arr = np.moveaxis(arr, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    else:
        arr = arr[..., None]
        axes = axes + "S"
    if not axes.endswith("YXS"):
        raise ImageError(path, f"unsupported TIFF layout (axes {axes}, shape {arr.shape})")
    arr = arr.reshape((-1,) + arr.shape[-3:])
    c = arr.shape[-1]
    if c in (2, 4):
        arr = arr[..., : c - 1]
        notes.append("alpha channel dropped")
    elif c not in (1, 3):
        raise ImageError(path, f"unsupported TIFF with {c} samples per pixel (supported: 1, 3, +alpha)")
    return arr, notes


def _read_tiff(path: Path) -> list[Frame]:
    try:
        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            axes = series.axes
            arr = series.asarray()
    except tifffile.TiffFileError as e:
        raise ImageError(path, f"not a TIFF file (could not decode: {_one_line(e, path)})") from e
    except (ValueError, OSError, EOFError, IndexError, zlib.error) as e:
        raise ImageError(path, f"truncated or corrupt TIFF data ({_one_line(e, path)})") from e
    stack, notes = _tiff_to_hwc_frames(np.asarray(arr), axes, path)
    if stack.dtype == np.uint8 or stack.dtype == np.uint16:
        bits = 8 * stack.dtype.itemsize
        x, value_range, extra = _unsigned_to_unit(stack, bits), (0.0, float(2**bits - 1)), ()
    elif stack.dtype.kind == "f":
        bits = 32
        x, value_range, extra = _float_to_unit(stack, path)
    else:
        raise ImageError(
            path, f"unsupported TIFF sample type {stack.dtype} (supported: uint8, uint16, float16/32/64)"
        )
    base = ImageMeta(
        path=str(path),
        format="tiff",
        bit_depth=bits,
        value_range=value_range,
        spacing=None,
        channels=int(x.shape[-1]),
        n_frames=int(x.shape[0]),
        notes=tuple(notes) + extra,
    )
    if x.shape[0] == 1:
        return [(x[0], base)]
    return [(x[k], replace(base, frame=k)) for k in range(x.shape[0])]


# ---------------------------------------------------------------------------------------------------------
# DICOM (pydicom)
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
        if sequence in group and len(group[sequence]):
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
    source: Dataset | None = ds if "RescaleSlope" in ds else _functional_group_item(
        ds, "PixelValueTransformationSequence", None
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
# NIfTI (nibabel)
# ---------------------------------------------------------------------------------------------------------


def _nifti_volume(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The volume reoriented to RAS+ voxel axes and its voxel sizes in mm along them.

    Axis 0 runs left -> Right, axis 1 posterior -> Anterior, axis 2 inferior -> Superior.
    """
    try:
        img = nib.load(str(path))
    except nib.filebasedimages.ImageFileError as e:
        raise ImageError(path, "not a NIfTI file (unrecognised header)") from e
    except Exception as e:  # struct, zlib, EOF errors of a damaged header
        raise ImageError(path, f"truncated or corrupt NIfTI data ({_one_line(e, path)})") from e
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
    ornt = nib.orientations.io_orientation(img.affine)
    vol = nib.orientations.apply_orientation(arr, ornt)
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
    frames: list[Frame] = []
    for k in range(n):
        img = np.ascontiguousarray(unit.take(k, axis=axis).T[::-1])[:, :, None]
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


# ---------------------------------------------------------------------------------------------------------
# Public reading API
# ---------------------------------------------------------------------------------------------------------


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
        try:
            img = nib.load(str(p))
            shape = list(img.header.get_data_shape())
            ornt = nib.orientations.io_orientation(img.affine)
        except nib.filebasedimages.ImageFileError as e:
            raise ImageError(p, "not a NIfTI file (unrecognised header)") from e
        except Exception as e:  # struct, zlib, EOF errors of a damaged header
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
                shape, axes = tuple(series.shape), series.axes
        except tifffile.TiffFileError as e:
            raise ImageError(p, f"not a TIFF file (could not decode: {_one_line(e, p)})") from e
        except (ValueError, OSError, EOFError, IndexError, zlib.error) as e:
            raise ImageError(p, f"truncated or corrupt TIFF data ({_one_line(e, p)})") from e
        # Every axis before Y X except samples (S) is flattened into frames, as `_tiff_to_hwc_frames` does.
        return int(math.prod(n for n, a in zip(shape, axes) if a not in "YXS"))
    return 1


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
            suffix = _suffix_of(p)
            if suffix in SUFFIXES or (suffix == "" and _has_dicom_magic(p)):
                found.append(p)
    return sorted(found)


def check_size(image: np.ndarray, path: str | os.PathLike[str], *, min_side: int) -> None:
    """Raise `ImageError` when the image's height or width (HxW) is below `min_side` pixels."""
    h, w = int(image.shape[0]), int(image.shape[1])
    if min(h, w) < min_side:
        raise ImageError(path, f"is {h}x{w} pixels, smaller than the minimum {min_side}")


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------


def _as_unit_hwc(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) -> (H, W, C) float64 clipped to [0, 1]; uint8 / uint16 arrays are k / (2^b - 1)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"expected an (H, W, C) image with C in {{1, 3}}, got shape {arr.shape}")
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        return arr.astype(np.float64) / float(np.iinfo(arr.dtype).max)
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"unsupported image dtype {arr.dtype}")
    x = arr.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("image contains NaN or inf values")
    return np.clip(x, 0.0, 1.0)


def _quantise(x: np.ndarray, bits: int) -> np.ndarray:
    """[0, 1] -> unsigned integers rint(x * (2^bits - 1)) (round half to even)."""
    n = 2**bits - 1
    return np.rint(x * n).astype(np.uint8 if bits == 8 else np.uint16)


def _resolve_bit_depth(
    fmt: ImageFormat, explicit: int | None, meta: ImageMeta | None, image: np.ndarray
) -> int:
    """Explicit argument, else the source's depth (float sources: float32 TIFF / 16-bit PNG), else the
    input array's (16 for uint16) or 8. JPEG is always 8-bit; an explicit 16 for JPEG is an error."""
    allowed = {"png": (8, 16), "jpeg": (8,), "tiff": (8, 16, 32)}[fmt]
    if explicit is not None:
        if explicit not in allowed:
            raise ValueError(f"bit_depth {explicit} is not possible for {fmt} output (allowed: {allowed})")
        return explicit
    if meta is not None:
        depth = meta.bit_depth
    else:
        depth = 16 if np.asarray(image).dtype == np.uint16 else 8
    if depth not in allowed:
        depth = max(d for d in allowed if d <= 16)
    return depth


def _write_pil(tmp: Path, q: np.ndarray, fmt: ImageFormat) -> None:
    if q.shape[2] == 3 and q.dtype == np.uint16:  # Pillow stores 8 bits per colour channel
        tmp.write_bytes(_encode_png16(q))
        return
    im = Image.fromarray(q[:, :, 0] if q.shape[2] == 1 else q)
    if fmt == "jpeg":
        im.save(tmp, format="JPEG", quality=95, subsampling=0)
    else:
        im.save(tmp, format="PNG")


def _write_tiff(tmp: Path, x: np.ndarray, bits: int, meta: ImageMeta | None) -> None:
    if bits == 32:
        data = x
        if meta is not None and meta.bit_depth == 32:
            lo, hi = meta.value_range
            data = x * (hi - lo) + lo  # back to the float source's own range
        data = data.astype(np.float32)
    else:
        data = _quantise(x, bits)
    rgb = data.shape[2] == 3
    tifffile.imwrite(tmp, data if rgb else data[:, :, 0], photometric="rgb" if rgb else "minisblack")


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


def _to_stored(x: np.ndarray, info: DicomSource) -> np.ndarray:
    """Inverse of `_dicom_integer_to_unit`: stored = s_lo + rint(x' * (s_hi - s_lo)), x' = x or 1 - x."""
    s_lo, s_hi = info.stored_range
    unit = 1.0 - x if info.photometric == "MONOCHROME1" else x
    s = np.rint(unit * float(s_hi - s_lo)).astype(np.int64) + s_lo
    return s.astype(np.dtype(info.stored_dtype))


def _derived_dataset(meta: ImageMeta, image: np.ndarray, scale: float, out: Path) -> Dataset:
    """The source dataset with its pixels replaced by `image` (one frame), marked as a derived image."""
    info = meta.dicom
    if info is None:
        raise ValueError(f"{out}: DICOM output needs a DICOM source's metadata, got {meta.format} metadata")
    if info.stored_dtype.startswith("float"):
        raise ValueError(f"{out}: DICOM output of float pixel data (from {meta.path}) is not supported")
    samples = 3 if info.photometric == "RGB" or info.photometric.startswith("YBR") else 1
    if image.shape[2] != samples:
        raise ValueError(f"{out}: the DICOM source has {samples} channel(s), the image {image.shape[2]}")
    src = Path(meta.path)
    try:
        ds = pydicom.dcmread(src)
    except Exception as e:
        raise ImageError(out, f"cannot re-read the DICOM source {src} ({_one_line(e)})") from e
    stored = _to_stored(image, info)
    frame = meta.frame
    # Single-frame result: keep only this frame's per-frame functional group.
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame is not None and frame < len(per_frame):
        ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence([per_frame[frame]])
    stale = ("FloatPixelData", "DoubleFloatPixelData", "SmallestImagePixelValue", "LargestImagePixelValue")
    for keyword in stale:
        if keyword in ds:
            del ds[keyword]
    if "NumberOfFrames" in ds:
        ds.NumberOfFrames = 1
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
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
    _update_spacing(ds, scale)
    _mark_derived(ds, meta, scale)
    return ds


def _mark_derived(ds: Dataset, meta: ImageMeta, scale: float) -> None:
    """New SOP / series identity, ImageType DERIVED, a derivation note, uncompressed little endian.

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
    ds.DerivationDescription = f"ldsr super-resolution x{scale:g} of{where or ' the'} source image"
    if meta.frame is not None and "InstanceNumber" in ds:
        ds.InstanceNumber = meta.frame + 1


def write_image(
    path: str | os.PathLike[str],
    image: np.ndarray,
    meta: ImageMeta | None = None,
    *,
    bit_depth: int | None = None,
    scale: float = 1.0,
) -> Path:
    """Write an (H, W, C) or (H, W) image in [0, 1] atomically; the format comes from the suffix.

    - .png (8/16-bit; 16-bit colour through ldsr's own encoder, as Pillow keeps 8 bits per colour channel),
      .jpg/.jpeg (8-bit, quality 95), .tif/.tiff (8/16-bit, or 32 = float32).
    - Bit depth: `bit_depth`, else `meta.bit_depth` (float sources give float32 TIFF in their original
      range, 16-bit PNG), else 16 for a uint16 array, else 8. Floats are clipped to [0, 1] and rounded
      half to even onto 0..2^b - 1; uint8 / uint16 arrays are taken as k / (2^b - 1).
    - .dcm needs the `meta` of a DICOM source: the source is read again, its pixels replaced by this single
      frame stored as the source stores them (slope/intercept, MONOCHROME1 and BitsStored undone exactly),
      PixelSpacing divided by `scale` (the SR factor), a new SOP Instance UID, a Series UID derived from
      (source series, scale) so that all frames / slices of one series share it, ImageType DERIVED.
      `bit_depth` must be None or the source's depth there.
    Returns the written path. The source file named by `meta.path` is never overwritten.
    """
    out = Path(path)
    suffix = _suffix_of(out)
    if suffix not in OUTPUT_SUFFIXES:
        supported = ", ".join(OUTPUT_SUFFIXES)
        shown = suffix or "(no suffix)"
        raise ValueError(f"{out}: unsupported output format {shown} (supported: {supported})")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    fmt = OUTPUT_SUFFIXES[suffix]
    if meta is not None and out.exists() and out.resolve() == Path(meta.path).resolve():
        raise ValueError(f"{out}: refusing to overwrite the source image")
    x = _as_unit_hwc(image)
    if fmt == "dicom":
        if meta is None or meta.dicom is None:
            raise ValueError(
                f"{out}: DICOM output needs the metadata of a DICOM source (from read_image of a .dcm file); "
                f"got {'no metadata' if meta is None else meta.format + ' metadata'}"
            )
        if bit_depth is not None and bit_depth != meta.bit_depth:
            raise ValueError(
                f"{out}: bit_depth {bit_depth} cannot be chosen for DICOM output; pixels are stored as the "
                f"source stores them ({meta.bit_depth}-bit)"
            )
        ds = _derived_dataset(meta, x, scale, out)
        with atomic_path(out) as tmp:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        return out
    bits = _resolve_bit_depth(fmt, bit_depth, meta, image)
    with atomic_path(out) as tmp:
        if fmt == "tiff":
            _write_tiff(tmp, x, bits, meta)
        else:
            _write_pil(tmp, _quantise(x, bits), fmt)
    return out
