"""Tests of ldsr.io: reading every format to (H, W, C) [0, 1], bit-exact round trips, bad inputs."""

from __future__ import annotations

import gzip
import json
import os
import stat
import struct
import zlib
from io import BytesIO
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image, ImageFile
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ldsr.io import (
    ImageError,
    ImageMeta,
    atomic_path,
    check_size,
    count_frames,
    list_images,
    png16,
    provenance_record,
    read_frames,
    read_image,
    read_provenance,
    write_image,
)
from ldsr.io import files as io_files
from ldsr.io.provenance import mark_volume

FIX = Path(__file__).resolve().parent.parent / "fixtures"
MR_SMALL = FIX / "dicom/MR_small.dcm"
EMRI = FIX / "dicom/emri_small.dcm"
COLIN_PNG = FIX / "mri/colin27_z141.png"
COLIN_NII = FIX / "nifti/colin27_crop.nii.gz"
HISTO_PNG = FIX / "histology/cmu1sr_y2700_x0900.png"
MRI_JPG = FIX / "mri/figshare_0_1840.jpg"
MRI16_TIF = FIX / "tiff/mri16.tif"
HISTO8_TIF = FIX / "tiff/histo8.tif"
MRI16_PNG = FIX / "png16/mri16.png"


def raw_pil(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def raw_dicom(path: Path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array


# --------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    ("path", "fmt", "shape", "bits"),
    [
        (COLIN_PNG, "png", (217, 181, 1), 8),
        (HISTO_PNG, "png", (150, 150, 3), 8),
        (MRI_JPG, "jpeg", (512, 512, 1), 8),
        (MRI16_PNG, "png", (96, 96, 1), 16),
        (MRI16_TIF, "tiff", (64, 64, 1), 16),
        (HISTO8_TIF, "tiff", (96, 96, 3), 8),
        (MR_SMALL, "dicom", (64, 64, 1), 16),
        (COLIN_NII, "nifti", (64, 64, 1), 8),
    ],
)
def test_read_fixture_contract(path: Path, fmt: str, shape: tuple[int, ...], bits: int) -> None:
    x, meta = read_image(path)
    assert x.dtype == np.float32 and x.shape == shape
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > x.min()
    assert meta.format == fmt and meta.bit_depth == bits and meta.channels == shape[2]
    assert meta.path == str(path)
    # JSON-serialisable and reconstructible.
    assert ImageMeta.from_dict(json.loads(json.dumps(meta.to_dict()))) == meta


def test_integer_mapping_is_k_over_max() -> None:
    x, meta = read_image(MRI16_PNG)
    raw = raw_pil(MRI16_PNG)
    assert meta.value_range == (0.0, 65535.0)
    np.testing.assert_array_equal(x[:, :, 0], raw.astype(np.float32) / np.float32(65535))
    assert len(np.unique(raw)) > 256  # real 16-bit content, not 8-bit data in disguise


def test_dicom_meta_and_mapping() -> None:
    x, meta = read_image(MR_SMALL)
    raw = raw_dicom(MR_SMALL).astype(np.float64)
    assert (raw.min(), raw.max()) == (127, 2145)  # signed 16-bit storage, a small part of its range used
    assert meta.spacing == (0.3125, 0.3125)
    # Per-file window: the file's own (min, max), so the image spans [0, 1] exactly.
    assert meta.dicom is not None and meta.dicom.stored_range == (127, 2145)
    assert meta.value_range == (127.0, 2145.0)
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(x[:, :, 0], (raw - 127) / 2018, atol=1e-7)


def test_multiframe_dicom_frames_and_middle_default() -> None:
    frames = read_frames(EMRI)
    raw = raw_dicom(EMRI)
    lo, hi = int(raw.min()), int(raw.max())  # one window over all frames
    assert len(frames) == 10 and [m.frame for _, m in frames] == list(range(10))
    for k, (x, meta) in enumerate(frames):
        assert meta.n_frames == 10 and meta.dicom is not None and meta.dicom.bits_stored == 12
        assert meta.dicom.stored_range == (lo, hi) and meta.value_range == (lo, hi)
        np.testing.assert_allclose(x[:, :, 0], (raw[k] - lo) / (hi - lo), atol=1e-7)
    x, meta = read_image(EMRI)
    assert meta.frame == 5 and any("middle frame 5 of 10" in n for n in meta.notes)
    np.testing.assert_array_equal(x, frames[5][0])
    assert read_image(EMRI, frame=-1)[1].frame == 9
    with pytest.raises(ImageError, match="frame 10 out of range"):
        read_image(EMRI, frame=10)


def test_plain_image_gives_one_frame() -> None:
    frames = read_frames(HISTO_PNG)
    assert len(frames) == 1 and frames[0][1].frame is None


def test_nifti_slices_orientation_and_spacing() -> None:
    axial = read_frames(COLIN_NII, axis=2)
    assert len(axial) == 8 and axial[0][0].shape == (64, 64, 1)
    assert axial[3][1].spacing == (1.0, 1.0) and axial[3][1].frame == 3
    # Crop slice 3 is Colin27 z=141 at x 58:122, y 110:174; the shipped PNG slice shows it at rows 43:107
    # (anterior up), cols 58:122 (patient's left on the image left): same orientation, same values.
    png = raw_pil(COLIN_PNG)[43:107, 58:122]
    lo, hi = axial[3][1].value_range  # one window over the whole volume (uint8 0..196)
    assert (lo, hi) == (0.0, 196.0) and all(m.value_range == (lo, hi) for _, m in axial)
    back = np.rint(axial[3][0][:, :, 0].astype(np.float64) * (hi - lo) + lo).astype(np.uint8)
    np.testing.assert_array_equal(back, png)
    sagittal = read_frames(COLIN_NII, axis=0)
    assert len(sagittal) == 64 and sagittal[0][0].shape == (8, 64, 1)  # rows: superior..inferior (z)
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2"):
        read_image(COLIN_NII, axis=3)


def test_pil_modes_are_normalised(tmp_path: Path) -> None:
    rgb = Image.open(HISTO_PNG).convert("RGB")
    grey = Image.open(COLIN_PNG)
    cases = {
        "rgba.png": (rgb.convert("RGBA"), 3, "alpha channel dropped"),
        "la.png": (grey.convert("LA"), 1, "alpha channel dropped"),
        "pal.png": (rgb.quantize(16), 3, "palette expanded to RGB"),
        "bw.png": (grey.convert("1"), 1, "1-bit"),
    }
    for name, (im, channels, note) in cases.items():
        im.save(tmp_path / name)
        x, meta = read_image(tmp_path / name)
        assert x.shape[2] == channels and meta.channels == channels, name
        assert any(note in n for n in meta.notes), (name, meta.notes)
    pal = rgb.quantize(16)
    x, _ = read_image(tmp_path / "pal.png")
    np.testing.assert_array_equal(np.rint(x * 255).astype(np.uint8), np.asarray(pal.convert("RGB")))


def test_float_tiff_kept_or_scaled(tmp_path: Path) -> None:
    base = raw_pil(MRI16_PNG).astype(np.float32)
    inside = base / 65535.0
    tifffile.imwrite(tmp_path / "unit.tif", inside)
    x, meta = read_image(tmp_path / "unit.tif")
    assert meta.bit_depth == 32 and meta.value_range == (0.0, 1.0)
    np.testing.assert_array_equal(x[:, :, 0], inside)

    physical = base * 0.01 - 3.0  # e.g. a quantitative map with negative values
    tifffile.imwrite(tmp_path / "phys.tif", physical)
    x, meta = read_image(tmp_path / "phys.tif")
    lo, hi = float(physical.min()), float(physical.max())
    assert meta.value_range == pytest.approx((lo, hi)) and x.min() == 0.0 and x.max() == 1.0
    # Written back as float32 in the original range.
    out = write_image(tmp_path / "back.tif", x, meta)
    back = tifffile.imread(out)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, physical, atol=1e-5 * (hi - lo))


# --------------------------------------------------------------------------------- bit-exact round trips


@pytest.mark.parametrize("src", [COLIN_PNG, HISTO_PNG, MRI16_PNG])
def test_png_round_trip_bit_exact(src: Path, tmp_path: Path) -> None:
    x, meta = read_image(src)
    out = write_image(tmp_path / "out.png", x, meta)
    assert raw_pil(out).dtype == raw_pil(src).dtype
    np.testing.assert_array_equal(raw_pil(out), raw_pil(src))


@pytest.mark.parametrize("src", [MRI16_TIF, HISTO8_TIF])
def test_tiff_round_trip_bit_exact(src: Path, tmp_path: Path) -> None:
    x, meta = read_image(src)
    out = write_image(tmp_path / "out.tif", x, meta)
    a, b = tifffile.imread(out), tifffile.imread(src)
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


def test_every_16bit_value_survives_png(tmp_path: Path) -> None:
    allv = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    first = write_image(tmp_path / "all.png", allv)  # uint16 input defaults to 16-bit
    x, meta = read_image(first)
    assert meta.bit_depth == 16
    second = write_image(tmp_path / "again.png", x, meta)
    np.testing.assert_array_equal(raw_pil(second), allv)


def test_dicom_round_trip_bit_exact(tmp_path: Path) -> None:
    x, meta = read_image(MR_SMALL)
    out = write_image(tmp_path / "out.dcm", x, meta)
    src, ds = pydicom.dcmread(MR_SMALL), pydicom.dcmread(out)
    np.testing.assert_array_equal(ds.pixel_array, src.pixel_array)
    assert ds.pixel_array.dtype == src.pixel_array.dtype
    assert ds.SOPInstanceUID != src.SOPInstanceUID and ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.ImageType[0] == "DERIVED" and "ldsr" in ds.DerivationDescription
    x2, meta2 = read_image(out)
    np.testing.assert_array_equal(x2, x)
    assert meta2.value_range == meta.value_range


def test_dicom_sr_output_spacing_and_size(tmp_path: Path) -> None:
    x, meta = read_image(MR_SMALL)
    up = np.repeat(np.repeat(x, 2, axis=0), 2, axis=1)  # stand-in for a x2 SR output
    ds = pydicom.dcmread(write_image(tmp_path / "sr.dcm", up, meta, scale=2))
    assert (ds.Rows, ds.Columns) == (128, 128)
    assert [float(v) for v in ds.PixelSpacing] == [0.15625, 0.15625]
    assert "x2" in ds.DerivationDescription
    with pytest.raises(ValueError, match="bit_depth 8 cannot be chosen for DICOM"):
        write_image(tmp_path / "b.dcm", x, meta, bit_depth=8)


def test_multiframe_dicom_each_frame_bit_exact(tmp_path: Path) -> None:
    src = raw_dicom(EMRI)
    for x, meta in read_frames(EMRI):
        assert meta.frame is not None
        ds = pydicom.dcmread(write_image(tmp_path / f"f{meta.frame}.dcm", x, meta))
        assert int(ds.get("NumberOfFrames", 1)) == 1 and ds.BitsStored == 12
        assert ds.pixel_array.shape == (64, 64)
        np.testing.assert_array_equal(ds.pixel_array, src[meta.frame])
        assert f"frame {meta.frame} of 10" in ds.DerivationDescription


def _full_range_dicom(tmp_path: Path, photometric: str, slope: float, intercept: float) -> Path:
    """MR_small's header over a 256x256 frame holding every signed 16-bit stored value once."""
    ds = pydicom.dcmread(MR_SMALL)
    values = np.arange(-32768, 32768, dtype=np.int16).reshape(256, 256)
    ds.Rows, ds.Columns = 256, 256
    ds.PixelData = values.tobytes()
    ds.PhotometricInterpretation = photometric
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    path = tmp_path / f"full_{photometric}.dcm"
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    ("photometric", "slope", "intercept"), [("MONOCHROME2", 2.5, -1024.0), ("MONOCHROME1", 0.37, 12.0)]
)
def test_dicom_every_16bit_value_with_rescale(tmp_path: Path, photometric: str, slope: float, intercept: float) -> None:
    src = _full_range_dicom(tmp_path, photometric, slope, intercept)
    x, meta = read_image(src)
    stored = raw_dicom(src).astype(np.float64)
    unit = (stored + 32768) / 65535
    if photometric == "MONOCHROME1":
        unit = 1 - unit  # high stored value = dark
    np.testing.assert_allclose(x[:, :, 0], unit, atol=1e-7)
    lo, hi = -32768 * slope + intercept, 32767 * slope + intercept
    assert meta.value_range == pytest.approx((hi, lo) if photometric == "MONOCHROME1" else (lo, hi))
    ds = pydicom.dcmread(write_image(tmp_path / "out.dcm", x, meta))
    np.testing.assert_array_equal(ds.pixel_array, raw_dicom(src))
    assert ds.PhotometricInterpretation == photometric
    assert float(ds.RescaleSlope) == slope and float(ds.RescaleIntercept) == intercept


def test_dicom_constant_image_window_width_one(tmp_path: Path) -> None:
    for value, expect_x, window in ((500, 0.0, (500, 501)), (32767, 1.0, (32766, 32767))):
        ds = pydicom.dcmread(MR_SMALL)
        ds.PixelData = np.full((64, 64), value, np.int16).tobytes()
        src = tmp_path / f"const{value}.dcm"
        ds.save_as(src)
        x, meta = read_image(src)  # no division by zero; the window stays inside the int16 range
        assert meta.dicom is not None and meta.dicom.stored_range == window
        assert np.all(x == expect_x)
        back = pydicom.dcmread(write_image(tmp_path / f"out{value}.dcm", x, meta)).pixel_array
        np.testing.assert_array_equal(back, np.full((64, 64), value, np.int16))


def test_dicom_derived_series_uid_is_shared_per_source_series(tmp_path: Path) -> None:
    src = pydicom.dcmread(EMRI)
    frames = read_frames(EMRI)
    paths = [write_image(tmp_path / f"f{k}.dcm", x, m, scale=2) for k, (x, m) in enumerate(frames[:3])]
    written = [pydicom.dcmread(p) for p in paths]
    expected = generate_uid(entropy_srcs=[src.SeriesInstanceUID, "ldsr-sr", "2"])
    assert {ds.SeriesInstanceUID for ds in written} == {expected} and expected != src.SeriesInstanceUID
    assert len({ds.SOPInstanceUID for ds in written} | {src.SOPInstanceUID}) == 4  # new per file
    x, meta = frames[0]
    again = pydicom.dcmread(write_image(tmp_path / "again.dcm", x, meta, scale=2.0))
    assert again.SeriesInstanceUID == expected  # 2 and 2.0 are one factor
    other = pydicom.dcmread(write_image(tmp_path / "x4.dcm", x, meta, scale=4))
    assert other.SeriesInstanceUID not in (expected, src.SeriesInstanceUID)


def test_nifti_window_is_volume_range(tmp_path: Path) -> None:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    vol = np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 100 + 1000
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "v.nii.gz")
    frames = read_frames(tmp_path / "v.nii.gz")
    assert [m.value_range for _, m in frames] == [(1000.0, 6900.0)] * 3 and frames[0][1].bit_depth == 16
    assert min(x.min() for x, _ in frames) == 0.0 and max(x.max() for x, _ in frames) == 1.0
    nib.save(nib.Nifti1Image(np.full((4, 5, 3), 7, np.int16), affine), tmp_path / "c.nii.gz")
    x, meta = read_image(tmp_path / "c.nii.gz")
    assert meta.value_range == (7.0, 8.0) and np.all(x == 0.0)  # constant: width-1 window


# --------------------------------------------------------------------------------------- 16-bit PNG


def _png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _handmade_png16(arr: np.ndarray, colour_type: int, trns: bytes | None = None, idat_crc: int | None = None) -> bytes:
    """A minimal 16-bit PNG written here (filter 0 on every row), independent of ldsr's encoder; `trns` is the
    tRNS chunk's payload, `idat_crc` overrides the IDAT chunk's CRC."""
    h, w = arr.shape[:2]
    rows = arr.astype(">u2").reshape(h, -1).view(np.uint8)
    body = zlib.compress(b"".join(b"\x00" + r.tobytes() for r in rows))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    extra = b"" if trns is None else _png_chunk(b"tRNS", trns)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + extra
        + _png_chunk(b"IDAT", body, idat_crc)
        + _png_chunk(b"IEND", b"")
    )


def test_16bit_rgb_png_round_trip_bit_exact(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 65536, (37, 53, 3), dtype=np.uint16)
    out = write_image(tmp_path / "rgb16.png", rgb)
    x, meta = read_image(out)
    assert meta.bit_depth == 16 and meta.channels == 3 and meta.notes == ()
    np.testing.assert_array_equal(np.rint(x.astype(np.float64) * 65535).astype(np.uint16), rgb)
    again = write_image(tmp_path / "again.png", x, meta)  # float input, 16-bit from the metadata
    assert again.read_bytes() == out.read_bytes()
    # Independent reader: Pillow decodes 16-bit RGB to the high byte of each sample.
    np.testing.assert_array_equal(raw_pil(out), (rgb >> 8).astype(np.uint8))


@pytest.mark.parametrize("filter_type", [None, 0, 1, 2, 3, 4])
def test_png16_encoder_filters_against_pillow(filter_type: int | None) -> None:
    rng = np.random.default_rng(1)
    smooth = np.cumsum(rng.integers(0, 300, (23, 31, 3)), axis=1).astype(np.uint16)  # Paeth / Average help here
    for img in (smooth, rng.integers(0, 65536, (23, 31, 3), dtype=np.uint16)):
        data = png16._encode_png16(img, filter_type=filter_type)
        decoded, _ = png16._decode_png16(data, Path("mem.png"))
        np.testing.assert_array_equal(decoded, img)
        with Image.open(BytesIO(data)) as im:  # Pillow: high bytes of RGB
            np.testing.assert_array_equal(np.asarray(im), (img >> 8).astype(np.uint8))
        grey = png16._encode_png16(img[:, :, :1], filter_type=filter_type)
        with Image.open(BytesIO(grey)) as im:  # Pillow: full 16-bit grey
            np.testing.assert_array_equal(np.asarray(im), img[:, :, 0])


def test_png16_decoder_against_pillow_and_handmade_files(tmp_path: Path) -> None:
    # Pillow's own 16-bit grey fixture uses Sub, Up and Paeth rows.
    decoded, _ = png16._decode_png16(MRI16_PNG.read_bytes(), MRI16_PNG)
    np.testing.assert_array_equal(decoded[:, :, 0], raw_pil(MRI16_PNG))
    rgba = np.random.default_rng(2).integers(0, 65536, (9, 11, 4), dtype=np.uint16)
    (tmp_path / "rgb.png").write_bytes(_handmade_png16(rgba[:, :, :3], 2))
    (tmp_path / "rgba.png").write_bytes(_handmade_png16(rgba, 6))
    (tmp_path / "la.png").write_bytes(_handmade_png16(rgba[:, :, :2], 4))
    for name, want in (("rgb.png", rgba[:, :, :3]), ("rgba.png", rgba[:, :, :3]), ("la.png", rgba[:, :, :1])):
        x, meta = read_image(tmp_path / name)
        assert meta.bit_depth == 16 and x.shape[2] == want.shape[2], name
        np.testing.assert_array_equal(np.rint(x.astype(np.float64) * 65535).astype(np.uint16), want)
        assert ("alpha channel dropped" in meta.notes) == (name != "rgb.png")
    bad = bytearray((tmp_path / "rgb.png").read_bytes())
    bad[45] ^= 0xFF  # IDAT payload (after signature 8, IHDR 25, IDAT length + type 8): the zlib stream breaks
    (tmp_path / "bad.png").write_bytes(bytes(bad))
    with pytest.raises(ImageError, match="bad.png: truncated or corrupt PNG data \\(IDAT"):
        read_image(tmp_path / "bad.png")
    (tmp_path / "crc.png").write_bytes(_handmade_png16(rgba[:, :, :3], 2, idat_crc=0))  # intact data, wrong CRC
    with pytest.raises(ImageError, match="crc.png: truncated or corrupt PNG data \\(IDAT: CRC error"):
        read_image(tmp_path / "crc.png")
    (tmp_path / "cut.png").write_bytes(bytes(bad[:60]))
    with pytest.raises(ImageError, match="truncated or corrupt PNG data"):
        read_image(tmp_path / "cut.png")


@pytest.mark.parametrize("trns", [False, True])
@pytest.mark.parametrize("colour_type", [0, 2, 4, 6])  # grey, RGB, grey + alpha, RGBA
def test_png16_codec_bit_exact_for_every_colour_type(colour_type: int, trns: bool, tmp_path: Path) -> None:
    samples = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    arr = np.random.default_rng(colour_type).integers(0, 65536, (13, 17, samples), dtype=np.uint16)
    arr[0, 0] = 0
    arr[-1, -1] = 65535  # both ends of the range
    key = None
    if trns and colour_type in (0, 2):  # tRNS is only allowed without an alpha channel
        key = struct.pack(f">{samples}H", *map(int, arr[3, 5]))  # the colour at (3, 5) becomes transparent
    decoded, has_trns = png16._decode_png16(_handmade_png16(arr, colour_type, key), Path("mem.png"))
    assert decoded.dtype == np.uint16 and has_trns == (key is not None)
    np.testing.assert_array_equal(decoded, arr)  # the transparent pixel keeps its colour samples
    if samples in (1, 3):  # what ldsr writes: the encoder's file decodes to the same samples
        np.testing.assert_array_equal(png16._decode_png16(png16._encode_png16(arr), Path("m.png"))[0], arr)
    if colour_type == 2:  # read_image: exact [0, 1] values; the transparency is noted, not applied
        (tmp_path / "t.png").write_bytes(_handmade_png16(arr, colour_type, key))
        x, meta = read_image(tmp_path / "t.png")
        np.testing.assert_array_equal(np.rint(x.astype(np.float64) * 65535).astype(np.uint16), arr)
        assert ("transparency (tRNS) ignored" in meta.notes) == trns


# ------------------------------------------------------------------------------------------ write rules


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        out = write_image(tmp_path / "a.png", np.zeros((4, 4)))
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("x")
        assert os.umask(umask) == umask  # reading it did not change it
    finally:
        os.umask(old)
    for path in (out, tmp_path / "b.txt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert io_files._current_umask() == old


def test_write_bit_depth_rules(tmp_path: Path) -> None:
    x16, meta16 = read_image(MRI16_PNG)
    assert raw_pil(write_image(tmp_path / "a.png", x16, meta16)).dtype == np.uint16  # 16-bit stays 16
    assert raw_pil(write_image(tmp_path / "b.png", x16, meta16, bit_depth=8)).dtype == np.uint8
    assert raw_pil(write_image(tmp_path / "c.png", x16)).dtype == np.uint8  # float, no meta: 8-bit
    assert raw_pil(write_image(tmp_path / "d.jpg", x16, meta16)).dtype == np.uint8  # JPEG is 8-bit
    with pytest.raises(ValueError, match="bit_depth 16 is not possible for jpeg"):
        write_image(tmp_path / "e.jpg", x16, bit_depth=16)
    # 16-bit colour PNG goes through ldsr's own encoder (Pillow would keep 8 bits).
    out = write_image(tmp_path / "f.png", np.zeros((4, 4, 3)), bit_depth=16)
    assert read_image(out)[1].bit_depth == 16 and out.read_bytes()[24:26] == bytes([16, 2])


def test_write_clips_and_rounds_half_away_from_zero(tmp_path: Path) -> None:
    """Writers quantise by ldsr's one rule (ldsr.io.meta.to_grid, as MATLAB's im2uint8): ties go up."""
    from ldsr.evaluation.metrics import quantize

    x = np.array([[-0.5, 0.5 / 255, 1.5 / 255, 2.5 / 255, 2.0]], dtype=np.float64)
    got = raw_pil(write_image(tmp_path / "r.png", x))
    np.testing.assert_array_equal(got, [[0, 1, 2, 3, 255]])
    np.testing.assert_array_equal(quantize(x, 8), got)  # the metrics' grid is the writers'


def test_write_errors(tmp_path: Path) -> None:
    x, meta = read_image(COLIN_PNG)
    with pytest.raises(ValueError, match="DICOM output needs the metadata of a DICOM source"):
        write_image(tmp_path / "x.dcm", x, meta)
    with pytest.raises(ValueError, match="DICOM output needs the metadata of a DICOM source"):
        write_image(tmp_path / "x.dcm", x)
    with pytest.raises(ValueError, match="unsupported output format .bmp"):
        write_image(tmp_path / "x.bmp", x)
    with pytest.raises(ValueError, match="NaN or inf"):
        write_image(tmp_path / "x.png", np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="expected an \\(H, W, C\\) image"):
        write_image(tmp_path / "x.png", np.zeros((4, 4, 2)))
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_write_never_overwrites_source(tmp_path: Path) -> None:
    src = tmp_path / "src.png"
    src.write_bytes(COLIN_PNG.read_bytes())
    x, meta = read_image(src)
    with pytest.raises(ValueError, match="refusing to overwrite the source"):
        write_image(src, x, meta)
    assert src.read_bytes() == COLIN_PNG.read_bytes()


# ---------------------------------------------------------------------------------- listing and sizes


def test_list_images(tmp_path: Path) -> None:
    (tmp_path / "sub/deeper").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    wanted = [
        tmp_path / "a.PNG",
        tmp_path / "b.jpg",
        tmp_path / "sub/c.tif",
        tmp_path / "sub/deeper/d.nii.gz",
        tmp_path / "sub/IM0001",  # suffixless DICOM
    ]
    for p in wanted[:4]:
        p.write_bytes(b"x")
    wanted[4].write_bytes(MR_SMALL.read_bytes())
    for p in ("notes.txt", "e.bmp", "sub/README", ".f.png.tmp.png", ".hidden/g.png"):
        (tmp_path / p).write_bytes(b"x" * 200)
    assert list_images(tmp_path) == sorted(wanted)
    assert list_images(tmp_path, recursive=False) == sorted(wanted[:2])
    assert list_images(wanted[0]) == [wanted[0]]
    x, meta = read_image(wanted[4])
    assert meta.format == "dicom" and x.shape == (64, 64, 1)
    with pytest.raises(ImageError, match="no such file or folder"):
        list_images(tmp_path / "missing")


def test_count_frames_matches_read_frames(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "pages.tif", np.zeros((3, 8, 9), np.uint16), photometric="minisblack")
    cases = [
        (MR_SMALL, 2),
        (EMRI, 2),
        (COLIN_NII, 2),
        (COLIN_NII, 0),
        (COLIN_NII, 1),
        (COLIN_PNG, 2),
        (MRI_JPG, 2),
        (HISTO8_TIF, 2),
        (tmp_path / "pages.tif", 2),
    ]
    for path, axis in cases:
        assert count_frames(path, axis=axis) == len(read_frames(path, axis=axis)), (path, axis)
    assert count_frames(EMRI) == 10 and count_frames(COLIN_NII, axis=0) == 64
    assert count_frames(tmp_path / "pages.tif") == 3
    with pytest.raises(ImageError, match="not a DICOM file"):
        count_frames(_text(tmp_path / "t.dcm", "hello" * 40))
    with pytest.raises(ImageError, match="file not found"):
        count_frames(tmp_path / "missing.nii.gz")


def test_check_size() -> None:
    check_size(np.zeros((8, 9, 1)), "ok.png", min_side=8)
    with pytest.raises(ImageError) as e:
        check_size(np.zeros((7, 9, 1)), "small.png", min_side=8)
    assert str(e.value) == "small.png: is 7x9 pixels, smaller than the minimum 8"


# -------------------------------------------------------------------------------------------- bad input


def _truncate(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def _nan_tiff(dst: Path, bad: float) -> Path:
    a = np.linspace(0, 2, 64, dtype=np.float32).reshape(8, 8)
    a[2, 3] = bad
    tifffile.imwrite(dst, a)
    return dst


def _nan_dicom(dst: Path) -> Path:
    ds = pydicom.dcmread(MR_SMALL)
    a = raw_dicom(MR_SMALL).astype(np.float32)
    a[5, 5] = np.nan
    del ds.PixelData
    for key in ("BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, key)
    ds.BitsAllocated = 32
    ds.FloatPixelData = a.tobytes()
    ds.save_as(dst)
    return dst


def _bad_nifti(dst: Path) -> Path:
    dst.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    return dst


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD_CASES = {
    "missing": (lambda d: d / "missing.png", "file not found"),
    "directory": (lambda d: (d / "dir.png").mkdir() or d / "dir.png", "is a directory"),
    "empty": (lambda d: _text(d / "empty.png", ""), "empty file"),
    "text png": (lambda d: _text(d / "t.png", "hello\nworld\n"), "not a PNG file (could not decode"),
    "truncated png": (lambda d: _truncate(COLIN_PNG, d / "cut.png"), "truncated or corrupt PNG data"),
    "truncated jpeg": (lambda d: _truncate(MRI_JPG, d / "cut.jpg"), "truncated or corrupt JPEG data"),
    "text tiff": (lambda d: _text(d / "t.tif", "hello"), "not a TIFF file"),
    "truncated tiff": (lambda d: _truncate(MRI16_TIF, d / "cut.tif"), "truncated or corrupt TIFF data"),
    "nan tiff": (lambda d: _nan_tiff(d / "nan.tif", np.nan), "contains NaN or inf values"),
    "inf tiff": (lambda d: _nan_tiff(d / "inf.tif", np.inf), "contains NaN or inf values"),
    "text dicom": (lambda d: _text(d / "t.dcm", "hello" * 40), "not a DICOM file"),
    "truncated dicom": (lambda d: _truncate(MR_SMALL, d / "cut.dcm"), "truncated or corrupt DICOM"),
    "nan dicom": (lambda d: _nan_dicom(d / "nan.dcm"), "contains NaN or inf values"),
    "bad nifti": (lambda d: _bad_nifti(d / "bad.nii.gz"), "not a NIfTI file"),
    "truncated nifti": (lambda d: _truncate(COLIN_NII, d / "cut.nii.gz"), "truncated or corrupt NIfTI data"),
    "bmp": (lambda d: _text(d / "x.bmp", "BM" * 50), "unsupported format .bmp (supported: .png"),
    "no suffix": (lambda d: _text(d / "README", "x" * 99), "unsupported format (no suffix, no DICOM preamble)"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_raises_one_line_image_error(case: str, tmp_path: Path) -> None:
    make, reason = BAD_CASES[case]
    path = make(tmp_path)
    with pytest.raises(ImageError) as e:
        read_image(path)
    message = str(e.value)
    assert isinstance(e.value, ValueError)
    assert message.startswith(f"{path}: ") and reason in message, message
    assert "\n" not in message and message.count(str(path)) == 1


def test_truncated_images_are_not_loaded_silently() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --------------------------------------------------------------------------------------------- provenance

SHARP = provenance_record(model="mri-x4", scale=4, mode="sharp", is_sample=True, draws=4, steps=10, sampler="dpmpp",
                          seed=3, spread="out_std.png")  # fmt: skip
FAITHFUL = {**SHARP, "mode": "faithful", "is_sample": False, "draws": 1, "spread": None}


def _native_text(path: Path) -> str:
    """The record's text as other software sees it (Pillow, tifffile, pydicom): no ldsr reader involved."""
    if path.suffix == ".png":
        with Image.open(path) as im:
            return f"{im.info['Description']}\n{im.info['ldsr']}"
    if path.suffix == ".jpg":
        with Image.open(path) as im:
            return bytes(im.info["comment"]).decode("ascii")
    if path.suffix == ".tif":
        with tifffile.TiffFile(path) as tf:
            return str(tf.pages.first.description)
    ds = pydicom.dcmread(path)
    return f"{ds.DerivationDescription}\n{ds.ImageComments}"


@pytest.mark.parametrize(
    ("name", "channels", "bits"),
    [("g8.png", 1, 8), ("g16.png", 1, 16), ("c8.png", 3, 8), ("c16.png", 3, 16), ("c.jpg", 3, 8),
     ("g16.tif", 1, 16), ("c8.tif", 3, 8), ("f32.tif", 1, 32)],
)  # fmt: skip
def test_provenance_round_trip_keeps_pixels(name: str, channels: int, bits: int, tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((11, 7, channels)).astype(np.float32)
    plain = write_image(tmp_path / f"plain_{name}", x, bit_depth=bits)
    marked = write_image(tmp_path / name, x, bit_depth=bits, provenance=SHARP)
    assert read_provenance(marked) == SHARP
    assert read_provenance(plain) is None  # an image without a record has none (tifffile's own JSON is not one)
    text = _native_text(marked)
    assert "posterior sample" in text and "detail may be invented" in text and '"is_sample": true' in text
    (a, meta_a), (b, meta_b) = read_image(plain), read_image(marked)
    assert meta_b.bit_depth == meta_a.bit_depth and meta_b.channels == channels
    np.testing.assert_array_equal(b, a)  # the record changes no sample (JPEG: the same encoder input)
    faithful = write_image(tmp_path / f"f_{name}", x, bit_depth=bits, provenance=FAITHFUL)
    assert read_provenance(faithful) == FAITHFUL
    assert "posterior mean estimate" in _native_text(faithful)


def test_dicom_provenance_marks_the_derived_image(tmp_path: Path) -> None:
    x, meta = read_image(MR_SMALL)
    out = write_image(tmp_path / "sr.dcm", x, meta, provenance=SHARP)
    ds = pydicom.dcmread(out)
    assert ds.DerivationDescription.startswith("ldsr super-resolution x1 of the source image: ldsr ")
    assert "posterior sample (sharp mode, mri-x4 x4, 4 draws, 10 steps, seed 3)" in ds.DerivationDescription
    assert read_provenance(out) == SHARP
    np.testing.assert_array_equal(ds.pixel_array, pydicom.dcmread(MR_SMALL).pixel_array)
    assert read_provenance(write_image(tmp_path / "plain.dcm", x, meta)) is None


def test_provenance_of_foreign_or_broken_files_is_none(tmp_path: Path) -> None:
    assert read_provenance(COLIN_PNG) is None and read_provenance(MRI_JPG) is None and read_provenance(MR_SMALL) is None
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    assert read_provenance(broken) is None and read_provenance(tmp_path / "missing.tif") is None
    other = write_image(tmp_path / "other.png", np.zeros((8, 8)), provenance={"software": "other"})
    assert read_provenance(other) is None  # a text chunk that is not ldsr's record


def test_provenance_record_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="mode must be"):
        provenance_record(model="m", scale=4, mode="crisp", is_sample=True, draws=2)
    with pytest.raises(ValueError, match="content must be"):
        provenance_record(model="m", scale=4, mode=None, is_sample=False, draws=1, content="std")  # type: ignore[arg-type]  # wrong on purpose


def test_mark_volume_keeps_the_volume_and_replaces_the_record(tmp_path: Path) -> None:
    vol = tmp_path / "v.nii.gz"
    vol.write_bytes(COLIN_NII.read_bytes())
    mark_volume(vol, SHARP)
    mark_volume(vol, {**SHARP, "seed": 4})  # a second mark replaces the first
    src, out = nib.load(COLIN_NII), nib.load(vol)
    np.testing.assert_array_equal(np.asarray(out.dataobj), np.asarray(src.dataobj))
    assert out.get_data_dtype() == src.get_data_dtype()
    np.testing.assert_array_equal(out.affine, src.affine)
    assert (out.header["qform_code"], out.header["sform_code"]) == (src.header["qform_code"], src.header["sform_code"])
    assert read_provenance(vol) == {**SHARP, "seed": 4}
    assert len(out.header.extensions) == len(src.header.extensions) + 1
    assert bytes(out.header["descrip"]).startswith(b"ldsr 0.1.0 posterior sample (sharp mode")
