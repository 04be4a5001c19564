"""Multi-frame DICOM in, ONE multi-frame DICOM out (issue 19): every frame, stored as the source stores it, with
the geometry of the upscaled image (Rows / Columns, PixelSpacing / scale, NumberOfFrames kept)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from ldsr.cli import app
from ldsr.data.resize import imresize
from ldsr.io import read_frames, read_provenance, write_dicom_frames

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
FRAMES, SIDE = 3, 16


def _multiframe(path: Path) -> Path:
    """A small Enhanced-MR-like file: 3 frames of 16 x 16, 12 of 16 bits, rescaled, spacing at the top level
    and in the shared functional groups, one per-frame group each."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(100, 4000, size=(FRAMES, SIDE, SIDE), dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_MR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_MR, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ImageType = "MR", ["ORIGINAL", "PRIMARY"]
    ds.NumberOfFrames, ds.Rows, ds.Columns = FRAMES, SIDE, SIDE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    ds.PixelSpacing = [0.8, 0.6]
    measures = Dataset()
    measures.PixelSpacing = [0.8, 0.6]
    measures.SliceThickness = 3
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(FRAMES):
        position, group = Dataset(), Dataset()
        position.ImagePositionPatient = [0, 0, 3 * k]
        group.PlanePositionSequence = Sequence([position])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_write_dicom_frames_is_one_bit_exact_multiframe_file(tmp_path: Path) -> None:
    src = _multiframe(tmp_path / "src.dcm")
    frames = read_frames(src)
    out = write_dicom_frames(tmp_path / "copy.dcm", [x for x, _ in frames], frames[0][1], scale=1)
    ds = pydicom.dcmread(out)
    np.testing.assert_array_equal(ds.pixel_array, pydicom.dcmread(src).pixel_array)  # every stored value back
    assert int(ds.NumberOfFrames) == FRAMES and len(ds.PerFrameFunctionalGroupsSequence) == FRAMES
    assert ds.ImageType[0] == "DERIVED" and "frame" not in ds.DerivationDescription
    assert [list(p) for p in [ds.PixelSpacing, ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
                              .PixelSpacing]] == [[0.8, 0.6]] * 2  # fmt: skip
    assert not list(tmp_path.glob(".*.tmp*"))  # atomic: no temporary file left
    with pytest.raises(ValueError, match="frames given"):
        write_dicom_frames(tmp_path / "short.dcm", [frames[0][0]], frames[0][1])
    assert not (tmp_path / "short.dcm").exists()


def test_upscale_multiframe_dicom_gives_one_multiframe_dicom(tmp_path: Path) -> None:
    """`ldsr upscale` of a multi-frame DICOM, into a folder or to NAME.dcm: one file, every frame upscaled and
    stored in the source's own format, Rows / Columns x2, PixelSpacing / 2 everywhere, NumberOfFrames kept."""
    src = _multiframe(tmp_path / "in" / "scan.dcm")
    source = pydicom.dcmread(src)
    for target, written in ((tmp_path / "out", tmp_path / "out" / "scan.dcm"), (tmp_path / "x2.dcm",) * 2):
        res = CliRunner().invoke(app, ["upscale", "-i", str(src), "-o", str(target), "-m", "bicubic", "--scale", "2"])
        assert res.exit_code == 0, res.output
        assert "1 succeeded, 0 failed" in res.output
        if target.suffix != ".dcm":
            assert [p.name for p in target.iterdir()] == ["scan.dcm"]  # no scan_f000.dcm, scan_f001.dcm, ...
        ds = pydicom.dcmread(written)
        assert int(ds.NumberOfFrames) == FRAMES and (ds.Rows, ds.Columns) == (2 * SIDE, 2 * SIDE)
        assert ds.pixel_array.shape == (FRAMES, 2 * SIDE, 2 * SIDE) and ds.pixel_array.dtype == np.uint16
        assert (ds.BitsStored, ds.PixelRepresentation, ds.PhotometricInterpretation) == (12, 0, "MONOCHROME2")
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (2.0, -1000.0)
        spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        assert [float(v) for v in ds.PixelSpacing] == [float(v) for v in spacing] == [0.4, 0.3]
        assert len(ds.PerFrameFunctionalGroupsSequence) == FRAMES and ds.SOPInstanceUID != source.SOPInstanceUID
        for k, (x, meta) in enumerate(read_frames(src)):  # frame k: the bicubic x2 of source frame k, stored
            assert meta.dicom is not None  # on the source's own grid (its window, not the output's)
            lo, hi = meta.dicom.stored_range
            expected = lo + np.rint(np.clip(imresize(x.astype(np.float64), 2), 0, 1)[:, :, 0] * (hi - lo))
            assert np.abs(ds.pixel_array[k].astype(np.int64) - expected).max() <= 1, k
        record = read_provenance(written)
        assert record is not None and record["model"] == "bicubic" and record["scale"] == 2
