"""Inference: ldsr.pipeline.load(...).upscale(...) and the `ldsr upscale` command, from LR images alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from ldsr.cli import app
from ldsr.data.resize import imresize
from ldsr.io import read_image, write_image
from ldsr.pipeline import load

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "fixtures"


def _lr(h: int = 13, w: int = 10) -> np.ndarray:
    img, _ = read_image(FIX / "mri" / "figshare_0_1840.jpg")
    return imresize(img[200 : 200 + 4 * h, 200 : 200 + 4 * w], 0.25).clip(0, 1).astype(np.float32)


def test_cli_bicubic_keeps_grey(tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    write_image(src, _lr(8, 8), bit_depth=16)
    res = CliRunner().invoke(
        app, ["upscale", "-i", str(src), "-o", str(tmp_path / "out.png"), "-m", "bicubic", "--scale", "4"]
    )
    assert res.exit_code == 0, res.output
    out, meta = read_image(tmp_path / "out.png")
    assert out.shape == (32, 32, 1) and meta.bit_depth == 16


def test_bicubic_is_matlab_imresize() -> None:
    lr = _lr()
    out = load("bicubic", scale=4, channels=1).upscale(lr)
    assert out.image.shape == (52, 40, 1)
    np.testing.assert_array_equal(out.image, np.clip(imresize(lr, 4), 0, 1).astype(np.float32))
    with pytest.raises(ValueError, match="scale"):
        load("bicubic")


@pytest.mark.parametrize("kind", ["latent", "pixel", "baseline"])
def test_any_size_is_padded_and_cropped(runs: dict[str, Path], kind: str) -> None:
    up = load(runs[kind])
    assert up.kind == kind and up.scale == 4 and up.channels == 1 and up.n_params > 0
    res = up.upscale(_lr(13, 10), steps=2)  # 13 and 10 are not multiples of the UNet's grid
    assert res.image.shape == (52, 40, 1) and res.image.dtype == np.float32
    assert 0.0 <= res.image.min() and res.image.max() <= 1.0 and np.isfinite(res.image).all()


def test_latent_checkpoint_is_self_contained(runs: dict[str, Path], tmp_path: Path) -> None:
    # The autoencoder run may disappear: the SR checkpoint carries its weights and config.
    import shutil

    ckpt = runs["latent"]
    copy = tmp_path / "only_sr"
    shutil.copytree(ckpt, copy)
    shutil.rmtree(ckpt.parents[2] / "ae")
    up = load(copy)
    assert up.kind == "latent" and up.nfe(7) == 7 and up.nfe(7, "ddim") == 7
    from ldsr.diffusion.sampling import DEFAULT_MIN_LOG_SNR, truncate_betas

    # ancestral DDPM walks every step of the chain, truncated where the log-SNR drops below -5.1
    assert up.nfe(7, "ddpm") == len(truncate_betas(up.model.betas, DEFAULT_MIN_LOG_SNR)) <= len(up.model.betas)


def test_seeded_samples_and_uncertainty(runs: dict[str, Path]) -> None:
    up = load(runs["latent"])
    a = up.upscale(_lr(), sampler="ddim", steps=2, seed=3)
    b = up.upscale(_lr(), sampler="ddim", steps=2, seed=3)
    c = up.upscale(_lr(), sampler="ddpm", seed=4)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)
    many = up.upscale(_lr(), sampler="ddim", steps=2, eta=1.0, seed=0, samples=3, reduce="median")
    assert many.samples.shape == (3, 52, 40, 1) and many.std.shape == (52, 40, 1)
    assert many.std.max() > 0  # eta = 1: stochastic draws differ
    np.testing.assert_allclose(many.image, np.median(many.samples, axis=0), atol=1e-6)
    up.default_samples = 2  # a model's sr.samples: the draws averaged when the caller does not say
    avg = up.upscale(_lr(), sampler="ddim", steps=2, eta=1.0, seed=0, std=True)  # std: every draw decoded
    assert avg.samples.shape == (2, 52, 40, 1)
    np.testing.assert_allclose(avg.image, avg.samples.mean(axis=0), atol=1e-6)
    assert up.upscale(_lr(), sampler="ddim", steps=2, samples=1).samples is None  # an explicit value wins
    with pytest.raises(ValueError, match="reduce"):
        up.upscale(_lr(), reduce="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channel"):
        up.upscale(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        up.upscale(np.full((8, 8, 1), np.nan, np.float32))


def test_load_errors(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such checkpoint"):
        load(tmp_path / "missing")
    with pytest.raises(ValueError, match="x4"):
        load(runs["baseline"], scale=2)
    ae = runs["latent"].parents[2] / "ae"
    if ae.exists():
        with pytest.raises(ValueError, match="not an SR model"):
            load(ae)


def test_cli_folder_keeps_bit_depth_and_reports_bad_files(runs: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "lr"
    lr = _lr(8, 8)
    write_image(src / "a8.png", lr, bit_depth=8)
    write_image(src / "sub" / "b16.png", lr, bit_depth=16)
    (src / "broken.png").write_text("not an image")
    out = tmp_path / "sr"
    res = CliRunner().invoke(app, ["upscale", "-i", str(src), "-o", str(out), "-m", str(runs["baseline"])])
    assert res.exit_code == 1, res.output
    a, ma = read_image(out / "a8.png")
    b, mb = read_image(out / "sub" / "b16.png")
    assert a.shape == (32, 32, 1) and ma.bit_depth == 8
    assert b.shape == (32, 32, 1) and mb.bit_depth == 16
    assert not (out / "broken.png").exists()
    assert "1 failed" in res.output


def test_cli_dicom_in_dicom_out(runs: dict[str, Path], tmp_path: Path) -> None:
    src = FIX / "dicom" / "MR_small.dcm"
    out = tmp_path / "sr.dcm"
    res = CliRunner().invoke(app, ["upscale", "-i", str(src), "-o", str(out), "-m", str(runs["baseline"])])
    assert res.exit_code == 0, res.output
    before, after = pydicom.dcmread(src), pydicom.dcmread(out)
    assert (after.Rows, after.Columns) == (before.Rows * 4, before.Columns * 4)
    np.testing.assert_allclose([float(v) for v in after.PixelSpacing], [float(v) / 4 for v in before.PixelSpacing])
    assert after.SOPInstanceUID != before.SOPInstanceUID


def test_cli_samples_writes_std_map(runs: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    write_image(src, _lr(8, 8), bit_depth=8)
    out = tmp_path / "out.png"
    res = CliRunner().invoke(
        app,
        [
            "upscale",
            "-i",
            str(src),
            "-o",
            str(out),
            "-m",
            str(runs["latent"]),
            "--sampler",
            "ddim",
            "--steps",
            "2",
            "--eta",
            "1",
            "--samples",
            "2",
            "--std-map",
        ],
    )
    assert res.exit_code == 0, res.output
    assert read_image(out)[0].shape == (32, 32, 1)
    assert (tmp_path / "out_std.png").is_file()


def test_cli_batch_matches_shapes_and_counts(runs: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "lr"
    for k, size in enumerate([(8, 8), (8, 8), (8, 12)]):
        write_image(src / f"im{k}.png", _lr(*size), bit_depth=8)
    out = tmp_path / "sr"
    res = CliRunner().invoke(
        app, ["upscale", "-i", str(src), "-o", str(out), "-m", str(runs["baseline"]), "--batch", "2"]
    )
    assert res.exit_code == 0, res.output
    shapes = [read_image(out / f"im{k}.png")[0].shape for k in range(3)]
    assert shapes == [(32, 32, 1), (32, 32, 1), (32, 48, 1)]
    # A CNN is deterministic: batching does not change the result.
    single = load(runs["baseline"]).upscale(read_image(src / "im1.png")[0]).image
    np.testing.assert_allclose(read_image(out / "im1.png")[0], single, atol=1 / 255)


def test_top_level_load(runs: dict[str, Path]) -> None:
    import ldsr

    up = ldsr.load(str(runs["baseline"]))
    assert up.upscale(_lr(8, 8)).image.shape == (32, 32, 1)
