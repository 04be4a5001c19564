"""NIfTI volumes upscaled in-plane slice by slice and written back as NIfTI (issues 15 and 19): the geometry
(shape, voxel size, affine by the half-pixel rule, voxel order, header codes) and the content of every slice."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from ldsr.cli import app
from ldsr.io import read_frames
from ldsr.io.volume import read_volume, slice_values, upscaled_affine
from ldsr.pipeline import load
from ldsr.pipeline.regions import upscale_volume

NII = Path(__file__).resolve().parents[1] / "fixtures" / "nifti" / "colin27_crop.nii.gz"  # 64 x 64 x 8 uint8, RAS


def _world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return (affine @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T


def test_half_pixel_rule_keeps_the_volume_faces() -> None:
    a = np.array([[0.9, 0.1, 0, -30], [-0.2, 1.1, 0, -15], [0, 0, 2.0, 60], [0, 0, 0, 1]])  # oblique, anisotropic
    s = 4
    new = upscaled_affine(a, s, (0, 1))
    np.testing.assert_allclose(new[:3, :2], a[:3, :2] / s)
    np.testing.assert_allclose(new[:3, 2], a[:3, 2])  # through-plane untouched
    np.testing.assert_allclose(new[:3, 3], a[:3, 3] + (1 / s - 1) / 2 * (a[:3, 0] + a[:3, 1]))
    # output voxel m sits at input voxel (m + 1/2) / s - 1/2 (imresize's grid) ...
    m = np.array([[0, 0, 3], [5, 9, 3], [63, 2, 0]], dtype=float)
    src = m.copy()
    src[:, :2] = (m[:, :2] + 0.5) / s - 0.5
    np.testing.assert_allclose(_world(new, m), _world(a, src), atol=1e-9)
    # ... so the outer faces (voxel -1/2 and n - 1/2, n = 16 input voxels) are the same world points
    np.testing.assert_allclose(_world(new, np.array([[-0.5, -0.5, 0], [16 * s - 0.5, 16 * s - 0.5, 0]])),
                               _world(a, np.array([[-0.5, -0.5, 0], [15.5, 15.5, 0]])), atol=1e-9)  # fmt: skip


@pytest.mark.parametrize("axis", [2, 0])
def test_volume_keeps_its_geometry_and_each_slice_is_the_2d_upscale(tmp_path: Path, axis: int) -> None:
    up = load("bicubic", scale=2)
    res = upscale_volume(up, NII, tmp_path / "o.nii.gz", axis)
    src, out = nib.load(str(NII)), nib.load(str(tmp_path / "o.nii.gz"))
    shape = [64 * 2, 64 * 2, 8 * 2]
    shape[axis] //= 2  # same number of slices, in-plane x2
    assert out.shape == tuple(shape) == res.shape
    zooms = [0.5, 0.5, 0.5]
    zooms[axis] = 1.0
    assert out.header.get_zooms() == pytest.approx(zooms)
    np.testing.assert_allclose(out.affine, upscaled_affine(src.affine, 2, tuple(i for i in range(3) if i != axis)))
    assert out.get_data_dtype() == src.get_data_dtype() == np.uint8
    assert (int(out.header["sform_code"]), int(out.header["qform_code"])) == (2, 0)  # the source's codes
    # every slice is the 2D upscale of that slice (as read_frames shows it), back in the volume's values
    vin, vout = read_volume(NII), read_volume(tmp_path / "o.nii.gz")
    frames = read_frames(NII, axis=axis)
    assert len(read_frames(tmp_path / "o.nii.gz", axis=axis)) == len(frames)
    for k in (0, len(frames) // 2):
        expect = slice_values(vin, up.upscale(frames[k][0]).image, np.dtype(np.uint8))
        np.testing.assert_array_equal(np.take(vout.data, k, axis=axis), expect)


def test_voxel_order_of_the_file_is_kept(tmp_path: Path) -> None:
    """A left-to-right flipped (LAS) copy of the volume: the output stays LAS and holds the same world content."""
    src = nib.load(str(NII))
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = 63  # voxel i of the copy is voxel 63 - i of the original
    las = nib.Nifti1Image(np.asarray(src.dataobj)[::-1].copy(), src.affine @ flip, header=src.header)
    nib.save(las, tmp_path / "las.nii.gz")
    up = load("bicubic", scale=2)
    upscale_volume(up, NII, tmp_path / "ras_x2.nii.gz")
    upscale_volume(up, tmp_path / "las.nii.gz", tmp_path / "las_x2.nii.gz")
    a, b = nib.load(str(tmp_path / "ras_x2.nii.gz")), nib.load(str(tmp_path / "las_x2.nii.gz"))
    assert nib.aff2axcodes(b.affine) == ("L", "A", "S") and nib.aff2axcodes(a.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(np.asarray(b.dataobj), np.asarray(a.dataobj)[::-1])
    ijk = np.array([[0.0, 0, 0], [127, 5, 7]])
    np.testing.assert_allclose(_world(b.affine, ijk), _world(a.affine, np.c_[127 - ijk[:, 0], ijk[:, 1:]]))


def test_a_shipped_model_volume_is_consistent_with_its_slices(tmp_path: Path) -> None:
    """mri-x4 (1 step, 1 draw) on a 3-slice 16 x 16 crop: the written slices explain their LR slices."""
    from ldsr.data.resize import imresize

    src = nib.load(str(NII))
    crop = np.asarray(src.dataobj)[24:40, 24:40, 2:5].copy()
    nib.save(nib.Nifti1Image(crop, src.affine, header=src.header), tmp_path / "c.nii.gz")
    res = upscale_volume(load("mri-x4"), tmp_path / "c.nii.gz", tmp_path / "o.nii", steps=1, samples=1)
    assert res.shape == (64, 64, 3) and res.zooms == pytest.approx((0.25, 0.25, 1.0))
    lr, sr = read_frames(tmp_path / "c.nii.gz"), read_volume(tmp_path / "o.nii")
    lo, hi = read_volume(tmp_path / "c.nii.gz").window
    for k in range(3):
        x = (np.take(sr.data, k, axis=2).astype(np.float64).T[::-1] - lo) / (hi - lo)  # as read_frames shows it
        mse = np.mean((imresize(x, size=(16, 16)) - lr[k][0][:, :, 0]) ** 2)
        assert 10 * np.log10(1 / mse) > 28


# --- the command -------------------------------------------------------------------------------------------


def _invoke(*args: object):  # noqa: ANN202 - click.testing.Result
    return CliRunner().invoke(app, ["upscale", *map(str, args)])


def test_cli_writes_a_volume_by_name_or_in_a_folder(tmp_path: Path) -> None:
    one = _invoke("-i", NII, "-o", tmp_path / "v.nii.gz", "-m", "bicubic", "--scale", "2", "--axis", "1")
    assert one.exit_code == 0, one.output
    assert nib.load(str(tmp_path / "v.nii.gz")).shape == (128, 64, 16)  # coronal slices: x and z upscaled
    folder = _invoke("-i", NII.parent, "-o", tmp_path / "out", "-m", "bicubic", "--scale", "2")
    assert folder.exit_code == 0, folder.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["colin27_crop.nii.gz"]  # the default: a volume
    assert nib.load(str(tmp_path / "out" / "colin27_crop.nii.gz")).shape == (128, 128, 8)
    png = _invoke("-i", NII, "-o", tmp_path / "mid.png", "-m", "bicubic", "--scale", "2", "--frames", "middle")
    assert png.exit_code == 0 and (tmp_path / "mid.png").is_file()  # a 2D slice when asked for


def test_cli_refuses_nifti_output_it_cannot_write_before_computing(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    _invoke("-i", NII, "-o", png, "-m", "bicubic", "--frames", "0")
    bad = _invoke("-i", png, "-o", tmp_path / "a.nii.gz", "-m", "bicubic")
    assert bad.exit_code == 2 and "NIfTI output needs a NIfTI volume input" in bad.output
    some = _invoke("-i", NII, "-o", tmp_path / "b.nii.gz", "-m", "bicubic", "--frames", "middle")
    assert some.exit_code == 2 and "NIfTI output keeps the whole volume" in some.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
