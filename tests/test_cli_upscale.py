"""`ldsr upscale` as a user meets it (issue 19): every check before the first computation, no silent loss or
change of an image, per-file model choice, one bad file never stops the others, progress lines in logs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner

from ldsr.cli import app
from ldsr.data.resize import imresize
from ldsr.io import read_image, read_provenance, write_image
from ldsr.pipeline import load

FIX = Path(__file__).resolve().parents[1] / "fixtures"
BAD = FIX / "bad"


def _lr(source: str = "mri/colin27_z141.png", side: int = 8) -> np.ndarray:
    """A real (side x side) LR image: a crop of a fixture reduced x4 (bicubic)."""
    img, _ = read_image(FIX / source)
    return imresize(img[40 : 40 + 4 * side, 40 : 40 + 4 * side], 0.25).clip(0, 1).astype(np.float32)


def _invoke(*args: str | Path):  # noqa: ANN202 - click.testing.Result
    return CliRunner().invoke(app, ["upscale", *map(str, args)])


def _no_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any network / bicubic call fails the test: the checks must come before computation."""
    from ldsr.pipeline.upscaler import Upscaler

    def boom(*_: object, **__: object) -> None:
        raise AssertionError("computation started before the job was checked")

    monkeypatch.setattr(Upscaler, "upscale_batch", boom)


def _lines(text: str, word: str) -> list[str]:
    return [line for line in text.splitlines() if word in line]


# --- checks that used to come after the work --------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".webp", ".bmp"])
def test_unsupported_output_format_is_refused_before_computing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    _no_compute(monkeypatch)
    src = write_image(tmp_path / "slice.png", _lr())
    res = _invoke("-i", src, "-o", tmp_path / f"x{suffix}", "-m", "bicubic")
    assert res.exit_code == 2, res.output
    assert _lines(res.output, "error:") == [
        f"error: {tmp_path / f'x{suffix}'}: unsupported output format {suffix} "
        "(supported: .png, .jpg, .jpeg, .tif, .tiff, .dcm)"
    ]


def test_output_equal_to_input_is_refused_before_computing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_compute(monkeypatch)
    src = write_image(tmp_path / "slice.png", _lr())
    before = src.read_bytes()
    res = _invoke("-i", src, "-o", src, "-m", "bicubic")
    assert res.exit_code == 2 and "would overwrite the input" in res.output, res.output
    assert src.read_bytes() == before
    folder = _invoke("-i", tmp_path, "-o", tmp_path, "-m", "bicubic")  # a folder onto itself
    assert folder.exit_code == 2 and "is the input folder" in folder.output, folder.output


def test_volume_to_unwritable_format_is_refused_before_computing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_compute(monkeypatch)  # NIfTI output is written (tests/test_volume.py), but only for a NIfTI input
    res = _invoke("-i", FIX / "dicom" / "MR_small.dcm", "-o", tmp_path / "out.nii.gz", "-m", "bicubic")
    assert res.exit_code == 2, res.output
    assert len(_lines(res.output, "error:")) == 1 and "NIfTI output needs a NIfTI volume input" in res.output
    assert not any(tmp_path.iterdir())


def test_dry_run_lists_outputs_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_compute(monkeypatch)
    src = tmp_path / "in"
    write_image(src / "a.png", _lr())
    write_image(src / "sub" / "b.tif", _lr(), bit_depth=16)
    res = _invoke("-i", src, "-o", tmp_path / "out", "-m", "bicubic", "--dry-run")
    assert res.exit_code == 0, res.output
    assert f"{src / 'a.png'} -> {tmp_path / 'out' / 'a.png'}" in res.output
    assert f"{src / 'sub' / 'b.tif'} -> {tmp_path / 'out' / 'sub' / 'b.png'}" in res.output
    assert not (tmp_path / "out").exists()


def test_unwritable_outputs_are_refused_before_computing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_compute(monkeypatch)
    src = tmp_path / "in"
    write_image(src / "a.png", _lr())
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should go")
    res = _invoke("-i", src, "-o", blocker / "out", "-m", "bicubic")
    assert res.exit_code == 2 and f"{blocker} is a file" in res.output, res.output
    named = _invoke("-i", src, "-o", tmp_path / "sr.png", "-m", "bicubic")  # a folder job needs a folder
    assert named.exit_code == 2 and "needs an output folder" in named.output, named.output


# --- silent data loss: inputs sharing a stem -------------------------------------------------------------


def test_same_stem_inputs_keep_distinct_outputs(tmp_path: Path) -> None:
    src = tmp_path / "in"
    a, b = _lr(), _lr("mri/colin27_z141.png", 8)[::-1].copy()  # two different images
    write_image(src / "x.png", a)
    write_image(src / "x.tif", b, bit_depth=16)
    out = tmp_path / "out"
    res = _invoke("-i", src, "-o", out, "-m", "bicubic")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["x.png", "x.tif.png"]
    assert "2 succeeded, 0 failed" in res.output
    # each output is the SR of its own input (not one overwriting the other)
    up = load("bicubic", scale=4)
    for name, sr in (("x.png", "x.png"), ("x.tif", "x.tif.png")):  # each compared with the SR of its own input
        np.testing.assert_allclose(read_image(out / sr)[0], up.upscale(read_image(src / name)[0]).image, atol=1 / 255)
    assert not np.allclose(read_image(out / "x.png")[0], read_image(out / "x.tif.png")[0], atol=0.05)


def test_outputs_that_still_collide_are_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_compute(monkeypatch)
    src = tmp_path / "in"
    write_image(src / "x.tif", _lr())
    write_image(src / "x.tif.png", _lr())  # its own output name is x.tif.png, the renamed x.tif's too
    write_image(src / "x.png", _lr())
    res = _invoke("-i", src, "-o", tmp_path / "out", "-m", "bicubic")
    assert res.exit_code == 2, res.output
    assert "would both be written to" in res.output and "x.tif.png" in res.output


# --- silent changes: channels, frames, alpha ---------------------------------------------------------------


def test_rgb_into_grey_model_is_refused_unless_asked(tmp_path: Path) -> None:
    rgb = write_image(tmp_path / "he.png", _lr("histology/cmu1sr_y2700_x0900.png"))
    res = _invoke("-i", rgb, "-o", tmp_path / "out.png", "-m", "mri-x4", "--draws", "1")
    assert res.exit_code == 1, res.output
    [line] = _lines(res.output, "error:")
    assert "colour (3-channel)" in line and "--channels grey" in line
    assert not (tmp_path / "out.png").exists()
    asked = _invoke("-i", rgb, "-o", tmp_path / "out.png", "-m", "mri-x4", "--draws", "1", "--channels", "grey")
    assert asked.exit_code == 0, asked.output
    assert read_image(tmp_path / "out.png")[0].shape == (32, 32, 1)


def test_alpha_is_refused_unless_channels_asked(tmp_path: Path) -> None:
    rgb = (_lr("histology/cmu1sr_y2700_x0900.png") * 255).round().astype(np.uint8)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    res = _invoke("-i", tmp_path / "a.png", "-o", tmp_path / "o.png", "-m", "bicubic")
    assert res.exit_code == 1 and "alpha channel" in res.output, res.output
    ok = _invoke("-i", tmp_path / "a.png", "-o", tmp_path / "o.png", "-m", "bicubic", "--channels", "rgb")
    assert ok.exit_code == 0, ok.output
    assert read_image(tmp_path / "o.png")[0].shape == (32, 32, 3)


def test_nifti_volume_is_processed_whole_by_default(tmp_path: Path) -> None:
    nii = FIX / "nifti" / "colin27_crop.nii.gz"  # 64 x 64 x 8, axial slices
    vol = _invoke("-i", nii, "-o", tmp_path / "vol", "-m", "bicubic", "--scale", "2")
    assert vol.exit_code == 0, vol.output  # a folder job keeps the volume (tests/test_volume.py)
    assert [p.name for p in (tmp_path / "vol").iterdir()] == ["colin27_crop.nii.gz"]
    res = _invoke("-i", nii, "-o", tmp_path / "all" / "s.png", "-m", "bicubic", "--scale", "2")
    assert res.exit_code == 0, res.output
    outs = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert outs == [f"s_f{k:03d}.png" for k in range(8)]
    assert f"note: {nii}: 8 of 8 slices; written as PNG slices" in res.output  # the format change is said
    mid = _invoke("-i", nii, "-o", tmp_path / "mid.png", "-m", "bicubic", "--scale", "2", "--frames", "middle")
    assert mid.exit_code == 0, mid.output
    np.testing.assert_array_equal(read_image(tmp_path / "mid.png")[0], read_image(tmp_path / "all" / outs[4])[0])


def test_multiframe_dicom_is_processed_whole_into_dicom(tmp_path: Path) -> None:
    src = FIX / "dicom" / "emri_small.dcm"  # 10 frames of 64 x 64
    res = _invoke("-i", src, "-o", tmp_path / "out", "-m", "bicubic", "--scale", "2")
    assert res.exit_code == 0, res.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["emri_small.dcm"]  # one multi-frame DICOM
    ds = pydicom.dcmread(tmp_path / "out" / "emri_small.dcm")
    assert (int(ds.NumberOfFrames), ds.Rows, ds.Columns) == (10, 128, 128)
    pngs = _invoke("-i", src, "-o", tmp_path / "f.png", "-m", "bicubic", "--scale", "2")  # PNG: one per frame
    assert pngs.exit_code == 0 and sorted(p.name for p in tmp_path.glob("f_f*.png")) == [
        f"f_f{k:03d}.png" for k in range(10)
    ]
    bad = _invoke("-i", src, "-o", tmp_path / "f.png", "-m", "bicubic", "--frames", "12")
    assert bad.exit_code == 1 and "frame 12 out of range (the file has 10 frames)" in bad.output


# --- model choice per file; one bad file never stops the others --------------------------------------------


def test_bad_fixtures_without_model_every_file_named_good_ones_written(tmp_path: Path) -> None:
    """The issue's 'must show': bad-input fixtures + good files + a same-stem pair, no -m."""
    src = tmp_path / "in"
    shutil.copytree(BAD, src, ignore=shutil.ignore_patterns("README.md"))
    bad = sorted(p.name for p in src.iterdir())
    write_image(src / "scan.png", _lr())  # grey: mri-x4
    write_image(src / "scan.tif", _lr()[::-1].copy(), bit_depth=16)  # same stem
    write_image(src / "tissue.png", _lr("histology/cmu1sr_y2700_x0900.png", 8))  # H&E: histology-x4
    out = tmp_path / "out"
    res = _invoke("-i", src, "-o", out, "--draws", "1")
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.output
    errors = _lines(res.output, "error:")
    assert len(errors) == len(bad) == 5
    for name in bad:
        assert len([e for e in errors if f"{src / name}: " in e]) == 1, (name, errors)
    assert sorted(p.name for p in out.iterdir()) == ["scan.png", "scan.tif.png", "tissue.png"]
    assert read_image(out / "tissue.png")[0].shape == (32, 32, 3)
    assert read_image(out / "scan.tif.png")[0].shape == (32, 32, 1)
    assert "3 succeeded, 5 failed" in res.output


def test_colour_photo_without_model_asks_for_one(tmp_path: Path) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    photo = write_image(tmp_path / "photo.png", imresize(skimage_data.astronaut()[:128, :128] / 255.0, 0.25).clip(0, 1))
    res = _invoke("-i", photo, "-o", tmp_path / "o.png", "--dry-run")
    assert res.exit_code == 1
    [line] = _lines(res.output, "error:")
    assert "pass -m with one of: histology-x4, histology-x8, mri-x4, bicubic" in line


# --- vocabulary and devices ------------------------------------------------------------------------------


def test_bicubic_without_scale_is_x4_and_samples_is_an_alias(tmp_path: Path) -> None:
    src = write_image(tmp_path / "a.png", _lr())
    res = _invoke("-i", src, "-o", tmp_path / "o.png", "-m", "bicubic", "--samples", "2")
    assert res.exit_code == 0, res.output
    assert read_image(tmp_path / "o.png")[0].shape == (32, 32, 1)
    clash = _invoke("-i", src, "-o", tmp_path / "o.png", "-m", "bicubic", "--samples", "2", "--draws", "3")
    assert clash.exit_code == 2 and "old name of --draws" in clash.output


def test_cuda_without_cuda_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    src = write_image(tmp_path / "a.png", _lr())
    res = _invoke("-i", src, "-o", tmp_path / "o.png", "-m", "bicubic", "--device", "cuda")
    assert res.exit_code == 2
    assert [line for line in res.output.splitlines() if line.strip()] == [
        line for line in res.output.splitlines() if line.startswith("error: --device cuda: ")
    ]
    assert "Traceback" not in res.output
    fp16 = _invoke("-i", src, "-o", tmp_path / "o.png", "-m", "bicubic", "--device", "cpu", "--precision", "fp16")
    assert fp16.exit_code == 2 and "--precision fp16 needs --device cuda" in fp16.output


# --- progress ----------------------------------------------------------------------------------------------


def test_log_line_per_finished_image_and_quiet(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for k in range(3):
        write_image(src / f"im{k}.png", _lr())
    res = _invoke("-i", src, "-o", tmp_path / "out", "-m", "mri-x4", "--draws", "2")
    assert res.exit_code == 0, res.output
    done = _lines(res.output, "upscale [")
    assert len(done) == 3
    for k, line in enumerate(done):
        assert re.fullmatch(
            rf"upscale \[{k + 1}/3, [0-9.]+ s\] \S+im{k}\.png -> \S+im{k}\.png \(mri-x4, [0-9.]+ s\)", line
        )
    assert "dpm" not in res.output.lower() and "it/s" not in res.output  # no per-draw sampler bars
    quiet = _invoke("-i", src, "-o", tmp_path / "out2", "-m", "bicubic", "--quiet")
    assert quiet.exit_code == 0 and not _lines(quiet.output, "upscale [")
    assert "3 succeeded" in quiet.output


def test_mode_sharp_writes_one_draw_and_its_spread(tmp_path: Path) -> None:
    """Issue 14: a sharp-mode output is always written with its spread map (no --std-map needed) and says in
    its own metadata that it is a posterior sample; faithful outputs say they are not."""
    src = write_image(tmp_path / "a.png", _lr())
    args = ["-i", src, "-m", "mri-x4", "--steps", "1", "--draws", "2", "--seed", "5"]
    sharp = _invoke(*args, "-o", tmp_path / "s.png", "--mode", "sharp")
    faithful = _invoke(*args, "-o", tmp_path / "f.png", "--mode", "faithful", "--std-map")
    assert sharp.exit_code == 0 and faithful.exit_code == 0, sharp.output + faithful.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "f.png", "f_std.png", "s.png", "s_std.png"]
    image, spread = read_image(tmp_path / "s.png")[0], read_image(tmp_path / "s_std.png")[0]
    assert not np.array_equal(image, read_image(tmp_path / "f.png")[0])
    assert spread.shape == image.shape and spread.max() > 0  # two different draws: a spread that is not zero
    common = {"software": "ldsr", "model": "mri-x4", "scale": 4, "draws": 2, "steps": 1, "seed": 5}
    rec = read_provenance(tmp_path / "s.png")
    assert rec is not None and rec.items() >= {**common, "mode": "sharp", "is_sample": True}.items()
    assert rec["spread"] == "s_std.png" and rec["content"] == "image"
    std_rec = read_provenance(tmp_path / "s_std.png")
    assert std_rec is not None and std_rec["content"] == "spread" and not std_rec["is_sample"]
    with Image.open(tmp_path / "s.png") as im:  # what any PNG viewer shows
        assert "posterior sample (sharp mode" in im.info["Description"]
    f_rec = read_provenance(tmp_path / "f.png")
    assert f_rec is not None and f_rec.items() >= {**common, "mode": "faithful", "is_sample": False}.items()


def test_single_draws_are_marked_as_samples_and_no_draw_without_its_spread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--reduce none writes each draw alone: each is a posterior sample, even in faithful mode. In sharp mode the
    spread map is written first, so a failure there leaves no draw behind."""
    import ldsr.io.write

    src = write_image(tmp_path / "a.png", _lr())
    args = ["-i", src, "-m", "mri-x4", "--steps", "1", "--draws", "2"]
    res = _invoke(*args, "-o", tmp_path / "r.png", "--reduce", "none")
    assert res.exit_code == 0, res.output
    for name in ("r.png", "r_s1.png"):
        rec = read_provenance(tmp_path / name)
        assert rec is not None and rec["is_sample"] and rec["mode"] == "faithful" and rec["spread"] is None
    real = ldsr.io.write._write_pil

    def spread_fails(tmp: Path, q: np.ndarray, fmt: str, record: dict | None = None) -> None:
        if record is not None and record["content"] == "spread":
            raise OSError(28, "No space left on device")
        real(tmp, q, fmt, record)  # type: ignore[arg-type]  # fmt is an ImageFormat here

    monkeypatch.setattr(ldsr.io.write, "_write_pil", spread_fails)
    failed = _invoke(*args, "-o", tmp_path / "out" / "s.png", "--mode", "sharp")
    assert failed.exit_code == 1 and "No space left on device" in failed.output, failed.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_every_output_records_how_it_was_made(tmp_path: Path) -> None:
    """Deterministic methods (bicubic) record themselves too, in every output format; --mode sharp changes
    nothing for them (no draws, no spread)."""
    src = write_image(tmp_path / "a.png", _lr())
    for name in ("o.png", "o.jpg", "o.tif"):
        res = _invoke("-i", src, "-o", tmp_path / name, "-m", "bicubic", "--mode", "sharp")
        assert res.exit_code == 0, res.output
        rec = read_provenance(tmp_path / name)
        assert rec is not None and (rec["model"], rec["mode"], rec["is_sample"], rec["draws"]) == (
            "bicubic",
            None,
            False,
            1,
        )
    assert not list(tmp_path.glob("*_std*"))
    dcm = _invoke("-i", FIX / "dicom" / "MR_small.dcm", "-o", tmp_path / "o.dcm", "-m", "bicubic", "--scale", "2")
    assert dcm.exit_code == 0, dcm.output
    assert "deterministic super-resolution (bicubic x2)" in pydicom.dcmread(tmp_path / "o.dcm").DerivationDescription


def test_sharp_volume_gets_a_spread_volume_and_is_marked(tmp_path: Path) -> None:
    """A NIfTI volume in sharp mode: <stem>_std.nii.gz beside it (same grid, std in the volume's units, the
    same spread as the 2D path gives for a slice), both marked in the NIfTI header."""
    import nibabel as nib

    src = nib.load(FIX / "nifti" / "colin27_crop.nii.gz")
    small = nib.Nifti1Image(np.asarray(src.dataobj)[20:30, 20:32, 3:5], src.affine, header=src.header)
    nib.save(small, tmp_path / "v.nii.gz")
    args = ["-i", tmp_path / "v.nii.gz", "-m", "mri-x4", "--steps", "1", "--draws", "2", "--mode", "sharp"]
    res = _invoke(*args, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["v.nii.gz", "v_std.nii.gz"]
    vol, std = nib.load(tmp_path / "out" / "v.nii.gz"), nib.load(tmp_path / "out" / "v_std.nii.gz")
    assert vol.shape == std.shape == (40, 48, 2) and std.get_data_dtype() == np.float32
    np.testing.assert_array_equal(std.affine, vol.affine)
    rec, std_rec = read_provenance(tmp_path / "out" / "v.nii.gz"), read_provenance(tmp_path / "out" / "v_std.nii.gz")
    assert rec is not None and rec["is_sample"] and rec["mode"] == "sharp" and rec["spread"] == "v_std.nii.gz"
    assert std_rec is not None and std_rec["content"] == "spread"
    # slice 0 through the 2D path: its 8-bit map holds 2 x std of [0, 1] values; the volume std x (hi - lo)
    one = _invoke(*args, "--frames", "0", "-o", tmp_path / "s0.png")
    assert one.exit_code == 0, one.output
    lo, hi = float(np.asarray(small.dataobj).min()), float(np.asarray(small.dataobj).max())
    as_png = np.asarray(std.dataobj)[:, :, 0][:, ::-1].T / (hi - lo) * 2  # (B', A') as read_frames shows it
    png = read_image(tmp_path / "s0_std.png")[0][:, :, 0]
    assert as_png.max() > 0.01
    np.testing.assert_allclose(png, np.clip(as_png, 0, 1), atol=0.5 / 255 + 1e-6)


def test_sharp_mode_on_a_slide_region_is_refused_before_computing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tifffile

    _no_compute(monkeypatch)
    rgb = (_lr("histology/cmu1sr_y2700_x0900.png", 16) * 255).round().astype(np.uint8)
    tifffile.imwrite(tmp_path / "s.tif", np.tile(rgb, (4, 4, 1)), tile=(32, 32), photometric="rgb")
    args = ["-i", tmp_path / "s.tif", "-o", tmp_path / "o.tif", "-m", "histology-x4", "--region", "0,0,32,32"]
    res = _invoke(*args, "--mode", "sharp")
    assert res.exit_code == 2 and "--mode sharp is not available for slide regions" in res.output, res.output
    assert not (tmp_path / "o.tif").exists()


def test_jpeg_compressed_tiff_is_read_not_called_corrupt(tmp_path: Path) -> None:
    """The issue's JPEG-in-TIFF (and SVS) files were 'truncated or corrupt' when the codec was missing;
    imagecodecs is a dependency of ldsr (pyproject), so they decode."""
    import tifffile

    rgb = (_lr("histology/cmu1sr_y2700_x0900.png", 16) * 255).round().astype(np.uint8)
    tifffile.imwrite(tmp_path / "j.tif", rgb, compression="jpeg", photometric="rgb")
    res = _invoke("-i", tmp_path / "j.tif", "-o", tmp_path / "o.png", "-m", "bicubic")
    assert res.exit_code == 0, res.output
    assert read_image(tmp_path / "o.png")[0].shape == (64, 64, 3)


def test_a_failed_write_is_a_failure_not_a_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error inside ldsr.io.atomic_path must reach the caller (the temporary file removed): the job reports
    the file as failed instead of counting an image that was never written."""
    import ldsr.io.write

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    src = write_image(tmp_path / "a.png", _lr())
    monkeypatch.setattr(ldsr.io.write, "_write_pil", disk_full)
    res = _invoke("-i", src, "-o", tmp_path / "out" / "a.png", "-m", "bicubic")
    assert res.exit_code == 1 and "0 succeeded, 1 failed" in res.output, res.output
    assert "No space left on device" in res.output
    assert not any((tmp_path / "out").iterdir())  # no output, no temporary left behind


def test_consistency_on_makes_the_output_agree_with_its_input(tmp_path: Path) -> None:
    """--consistency on back-projects onto the LR: the output resized down matches the input better than off."""
    lr = _lr(side=16)
    write_image(tmp_path / "lr.png", lr)
    errs = {}
    for choice in ("off", "on"):
        res = _invoke("-i", tmp_path / "lr.png", "-o", tmp_path / f"{choice}.png", "-m", "bicubic", "-q",
                      "--consistency", choice)  # fmt: skip
        assert res.exit_code == 0, res.output
        sr, _ = read_image(tmp_path / f"{choice}.png")
        errs[choice] = float(np.abs(imresize(sr, size=lr.shape[:2]) - lr).mean())
    assert errs["on"] < 0.7 * errs["off"], errs


def test_call_options_pass_every_option_without_inspecting_the_upscaler() -> None:
    """Every upscaler (bicubic, CNNs, diffusion) takes tile, tile_overlap, consistency, mode and std: they are
    passed as asked, not looked up on `upscale_batch`'s signature (a wrapper without one got none of them)."""
    from typing import Any, cast

    from ldsr.cli.common import JobProgress
    from ldsr.cli.upscale import RunOptions, _call_options

    class Wrapped:  # e.g. a decorator without functools.wraps
        kind = "latent"

        def upscale_batch(self, lrs: list[np.ndarray], **kw: Any) -> list[Any]:
            return []

    opts = RunOptions(sampler="ddim", steps=3, eta=None, seed=7, draws=2, reduce="mean", std_map=True, batch=1,
                      decode_tile=None, precision="fp32", device="cpu", mode="sharp", tile=16, tile_overlap=4,
                      consistency="off")  # fmt: skip
    kw = _call_options(cast(Any, Wrapped()), opts, JobProgress(1, desc="t", quiet=True))
    assert callable(kw.pop("progress"))
    assert kw == dict(sampler="ddim", steps=3, eta=None, seed=7, samples=2, reduce="mean", mode="sharp",
                      consistency=False, std=True, tile=16, tile_overlap=4)  # fmt: skip
    plain = _call_options(cast(Any, Wrapped()), RunOptions(None, None, None, 0, None, "none", False, 1, 0, "fp32",
                                                           "cpu"), JobProgress(1, desc="t", quiet=True))  # fmt: skip
    assert (plain["decode_tile"], plain["mode"], plain["consistency"], plain["std"]) == (0, None, "auto", True)
    assert "tile" not in plain and "tile_overlap" not in plain


def test_attention_radius_reaches_the_denoiser(tmp_path: Path) -> None:
    """--attention-radius: global (the shipped default) vs 1 token differ on a grid of more than 2 tokens a side;
    a negative radius is refused."""
    src = tmp_path / "lr.png"
    write_image(src, _lr(side=32))  # grid 32 + 2 x 8 border = 48 positions: 12 attention tokens a side
    outs = {}
    for r in (None, 1):
        extra = [] if r is None else ["--attention-radius", str(r)]
        res = _invoke("-i", src, "-o", tmp_path / f"r{r}.png", "-m", "mri-x4", "--draws", "1", *extra)
        assert res.exit_code == 0, res.output
        outs[r] = read_image(tmp_path / f"r{r}.png")[0]
    assert not np.allclose(outs[None], outs[1], atol=1 / 255)
    bad = _invoke("-i", src, "-o", tmp_path / "bad.png", "-m", "mri-x4", "--attention-radius", "-1")
    assert bad.exit_code != 0 and "attention-radius" in bad.output
