"""ImagePositionPatient of an upscaled DICOM (single-frame, multi-frame, one frame of a multi-frame): the centre of
the new first pixel, so that the outer corners of the image stay where they were in patient space.

The expected positions are computed here from the pixel-centre rule P(i, j) = IPP + j dc r + i dr c (i the row,
j the column, IOP = (r, c), PixelSpacing = (dr, dc)), not from the writer's formula: the old grid's corner
(-1/2, -1/2) must be the new grid's corner (-1/2, -1/2), and the old far corner (R - 1/2, C - 1/2) the new
(s R - 1/2, s C - 1/2). The orientation is oblique and rows / columns differ in count and spacing, so a swapped
row / column direction or spacing fails."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from ldsr.io import read_frames, write_dicom_frames, write_image
from ldsr.io.volume import upscaled_affine

CT = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
ROWS, COLS = 6, 10
SPACING = (0.7, 1.3)  # (row spacing dr, column spacing dc)
IPP = (-120.25, 35.5, 12.75)


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    """A rotation matrix from three angles (z, y, x), none a multiple of 90 degrees: an oblique plane."""
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


def _iop(rot: np.ndarray) -> list[float]:
    """ImageOrientationPatient: along a row (r), then down a column (c), orthonormal."""
    return [round(float(v), 10) for v in (*rot[:, 0], *rot[:, 1])]


IOP = _iop(_rotation(0.4, -0.3, 0.9))
IOP_OTHER = _iop(_rotation(-1.1, 0.5, 0.2))


def _centre(ipp: np.ndarray, iop: list[float], spacing: tuple[float, float], i: float, j: float) -> np.ndarray:
    """Patient position of pixel (row i, column j): IPP + j dc r + i dr c."""
    r, c = np.array(iop[:3]), np.array(iop[3:])
    return np.asarray(ipp, dtype=np.float64) + j * spacing[1] * r + i * spacing[0] * c


def _floats(values: Iterable[Any]) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=np.float64)


def _check_corners(old: Dataset, new: Dataset, iop: list[float], scale: int) -> None:
    """Old and new grids share both outer corners; the new IPP is where the old corner rule puts it."""
    old_ipp, new_ipp = _floats(old.ImagePositionPatient), _floats(new.ImagePositionPatient)
    new_spacing = (SPACING[0] / scale, SPACING[1] / scale)
    for (i, j), (ni, nj) in [
        ((-0.5, -0.5), (-0.5, -0.5)),
        ((ROWS - 0.5, COLS - 0.5), (scale * ROWS - 0.5, scale * COLS - 0.5)),
        ((-0.5, COLS - 0.5), (-0.5, scale * COLS - 0.5)),
    ]:
        np.testing.assert_allclose(
            _centre(new_ipp, iop, new_spacing, ni, nj), _centre(old_ipp, iop, SPACING, i, j), atol=1e-9
        )
    # The new first pixel's centre is old pixel coordinate (-(s-1)/(2s), -(s-1)/(2s)).
    k = -(scale - 1) / (2 * scale)
    np.testing.assert_allclose(new_ipp, _centre(old_ipp, iop, SPACING, k, k), atol=1e-9)
    assert np.linalg.norm(new_ipp - old_ipp) > 0.1  # it moved


def _file_meta(sop_class: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _base(sop_class: str, frames: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ImageType = "CT" if sop_class == CT else "MR", ["ORIGINAL", "PRIMARY"]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    rng = np.random.default_rng(0)
    ds.PixelData = rng.integers(0, 4000, size=(frames, ROWS, COLS), dtype=np.uint16).tobytes()
    return ds


def _single(path: Path, *, position: bool = True, orientation: bool = True) -> Path:
    ds = _base(CT, 1)
    ds.PixelSpacing = list(SPACING)
    if position:
        ds.ImagePositionPatient = list(IPP)
    if orientation:
        ds.ImageOrientationPatient = IOP
    ds.save_as(path, enforce_file_format=True)
    return path


def _frame_ipp(k: int) -> list[float]:
    return [IPP[0] + 0.5 * k, IPP[1] - 1.25 * k, IPP[2] + 3.0 * k]


def _frame_iop(k: int, orientation: str) -> list[float]:
    return IOP_OTHER if orientation == "per_frame" and k == 1 else IOP


def _multi(path: Path, orientation: str) -> Path:
    """Enhanced-MR-like, 3 frames: positions per frame, spacing in the shared pixel measures; the orientation in
    the shared plane orientation ("shared") or in each frame's group, frame 1's different ("per_frame")."""
    ds = _base(ENHANCED_MR, 3)
    measures = Dataset()
    measures.PixelSpacing = list(SPACING)
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    if orientation == "shared":
        plane = Dataset()
        plane.ImageOrientationPatient = IOP
        shared.PlaneOrientationSequence = Sequence([plane])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    groups = []
    for k in range(3):
        group, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = _frame_ipp(k)
        group.PlanePositionSequence = Sequence([pos])
        if orientation == "per_frame":
            plane = Dataset()
            plane.ImageOrientationPatient = _frame_iop(k, orientation)
            group.PlaneOrientationSequence = Sequence([plane])
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    ds.save_as(path, enforce_file_format=True)
    return path


def _upscaled(scale: int) -> np.ndarray:
    return np.full((ROWS * scale, COLS * scale, 1), 0.5, dtype=np.float32)


@pytest.mark.parametrize("scale", [2, 4])
def test_single_frame_first_pixel_moves_and_corners_stay(tmp_path: Path, scale: int) -> None:
    src = _single(tmp_path / "src.dcm")
    ((_, meta),) = read_frames(src)
    out = write_image(tmp_path / "out.dcm", _upscaled(scale), meta, scale=scale)
    old, new = pydicom.dcmread(src), pydicom.dcmread(out)
    _check_corners(old, new, IOP, scale)
    assert [float(v) for v in new.ImageOrientationPatient] == pytest.approx(IOP)  # orientation kept
    assert [float(v) for v in new.PixelSpacing] == pytest.approx([SPACING[0] / scale, SPACING[1] / scale])


@pytest.mark.parametrize("orientation", ["shared", "per_frame"])
@pytest.mark.parametrize("scale", [2, 4])
def test_multiframe_plane_positions_move_per_frame(tmp_path: Path, scale: int, orientation: str) -> None:
    src = _multi(tmp_path / "src.dcm", orientation)
    frames = read_frames(src)
    assert frames[2][1].spacing == pytest.approx(SPACING)  # read from the shared pixel measures
    out = write_dicom_frames(tmp_path / "out.dcm", [_upscaled(scale)] * len(frames), frames[0][1], scale=scale)
    old, new = pydicom.dcmread(src), pydicom.dcmread(out)
    assert "ImagePositionPatient" not in new  # none at the top level: none added
    for k in range(3):
        old_pos = old.PerFrameFunctionalGroupsSequence[k].PlanePositionSequence[0]
        new_pos = new.PerFrameFunctionalGroupsSequence[k].PlanePositionSequence[0]
        _check_corners(old_pos, new_pos, _frame_iop(k, orientation), scale)
    spacing = new.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == pytest.approx([SPACING[0] / scale, SPACING[1] / scale])


def test_one_frame_of_a_multiframe_keeps_its_own_moved_position(tmp_path: Path) -> None:
    src = _multi(tmp_path / "src.dcm", "per_frame")
    _, meta = read_frames(src)[1]
    out = write_image(tmp_path / "f1.dcm", _upscaled(2), meta, scale=2)
    old, new = pydicom.dcmread(src), pydicom.dcmread(out)
    (group,) = new.PerFrameFunctionalGroupsSequence
    _check_corners(
        old.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0],
        group.PlanePositionSequence[0],
        IOP_OTHER,
        2,
    )


def test_agrees_with_the_nifti_affine_rule(tmp_path: Path) -> None:
    """The DICOM plane as a voxel -> patient affine (columns dc r, dr c): `upscaled_affine`'s origin is the new
    ImagePositionPatient, its columns the new spacings, so NIfTI and DICOM outputs share one convention."""
    src = _single(tmp_path / "src.dcm")
    ((_, meta),) = read_frames(src)
    new = pydicom.dcmread(write_image(tmp_path / "out.dcm", _upscaled(4), meta, scale=4))
    r, c = np.array(IOP[:3]), np.array(IOP[3:])
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = SPACING[1] * r, SPACING[0] * c, np.cross(r, c), IPP
    up = upscaled_affine(affine, 4, (0, 1))
    np.testing.assert_allclose(_floats(new.ImagePositionPatient), up[:3, 3], atol=1e-9)
    np.testing.assert_allclose(up[:3, 0], (float(new.PixelSpacing[1]) * r), atol=1e-9)
    np.testing.assert_allclose(up[:3, 1], (float(new.PixelSpacing[0]) * c), atol=1e-9)


@pytest.mark.parametrize(("position", "orientation"), [(False, True), (True, False), (False, False)])
def test_missing_position_or_orientation_stays_missing(tmp_path: Path, position: bool, orientation: bool) -> None:
    src = _single(tmp_path / "src.dcm", position=position, orientation=orientation)
    ((_, meta),) = read_frames(src)
    new = pydicom.dcmread(write_image(tmp_path / "out.dcm", _upscaled(2), meta, scale=2))
    assert ("ImagePositionPatient" in new) == position and ("ImageOrientationPatient" in new) == orientation
    if position:  # no orientation: the position cannot be moved, so it is left as it was
        assert [float(v) for v in new.ImagePositionPatient] == pytest.approx(IPP)
    assert [float(v) for v in new.PixelSpacing] == pytest.approx([SPACING[0] / 2, SPACING[1] / 2])


def test_empty_position_is_left_empty(tmp_path: Path) -> None:
    """Type 2 attributes present but empty: kept empty, no crash."""
    ds = _base(CT, 1)
    ds.PixelSpacing = list(SPACING)
    ds.ImagePositionPatient = None
    ds.ImageOrientationPatient = IOP
    src = tmp_path / "src.dcm"
    ds.save_as(src, enforce_file_format=True)
    ((_, meta),) = read_frames(src)
    new = pydicom.dcmread(write_image(tmp_path / "out.dcm", _upscaled(2), meta, scale=2))
    assert "ImagePositionPatient" in new and not new.ImagePositionPatient
