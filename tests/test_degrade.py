"""Degradation steps, the BSRGAN-style chain, the folder job and `ldsr degrade`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldsr.data import degrade as D
from ldsr.data.resize import imresize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RNG_FOR_0_A = 156999228  # rng_for(0, "a.png").integers(2**30), fixed when rng_for was written


def _hr(h: int = 48, w: int = 48, c: int = 3, seed: int = 0) -> np.ndarray:
    # A smooth image plus texture, in [0, 1].
    rng = np.random.default_rng(seed)
    i, j = np.mgrid[0:h, 0:w] / max(h, w)
    base = 0.5 + 0.3 * np.sin(6 * i) * np.cos(4 * j)
    x = base[..., None] + 0.1 * rng.random((h, w, c))
    return np.clip(x, 0, 1).astype(np.float32)


# ------------------------------------------------------------------------------------------------ steps


def test_gaussian_kernel_properties():
    k = D.gaussian_kernel(15, 2.0, 2.0)
    assert k.shape == (15, 15) and abs(k.sum() - 1) < 1e-12
    np.testing.assert_allclose(k, k.T, atol=1e-15)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)
    a = D.gaussian_kernel(21, 2.0, 1.0, 0.0)
    r = np.arange(21) - 10
    # theta = 0: sigma_x along columns, sigma_y along rows (second moments of the kernel).
    assert abs((a.sum(0) * r**2).sum() - 4.0) < 0.01 and abs((a.sum(1) * r**2).sum() - 1.0) < 0.01
    np.testing.assert_allclose(D.gaussian_kernel(21, 2.0, 1.0, np.pi / 2), a.T, atol=1e-12)
    with pytest.raises(ValueError, match="odd"):
        D.gaussian_kernel(4, 1.0, 1.0)
    with pytest.raises(ValueError, match="positive"):
        D.gaussian_kernel(5, 0.0, 1.0)


def test_blur_delta_is_identity_and_constant_stays():
    x = _hr(c=1)
    delta = np.zeros((5, 5))
    delta[2, 2] = 1
    np.testing.assert_allclose(D.blur(x, delta), x, atol=1e-7)
    flat = np.full((20, 20, 3), 0.4, np.float32)
    np.testing.assert_allclose(D.blur(flat, D.gaussian_kernel(25, 3, 1, 0.3)), 0.4, atol=1e-6)


@pytest.mark.parametrize("size,hw", [(5, (20, 30)), (25, (40, 33)), (25, (9, 11))])
def test_blur_equals_ndimage_reflect_convolution(size, hw):
    from scipy import ndimage

    x = _hr(*hw, c=3)
    k = D.gaussian_kernel(size, 2.5, 0.8, 0.7)
    ref = np.stack([ndimage.convolve(x[..., c].astype(np.float64), k, mode="reflect") for c in range(3)], -1)
    np.testing.assert_allclose(D.blur(x, k), ref, atol=1e-6)


def test_noise_grey_vs_per_channel():
    x = np.full((64, 64, 3), 0.5, np.float32)
    grey = D.add_gaussian_noise(x, 10 / 255, np.random.default_rng(0), per_channel=False)
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    colour = D.add_gaussian_noise(x, 10 / 255, np.random.default_rng(0), per_channel=True)
    assert not np.array_equal(colour[..., 0], colour[..., 2])
    assert abs(float((colour - 0.5).std()) - 10 / 255) < 0.003


def test_jpeg_8bit_and_16bit_residual():
    x = _hr(32, 32, 3)
    j8 = D.jpeg(x, 30, 8)
    assert j8.shape == x.shape and j8.dtype == np.float32
    np.testing.assert_allclose(j8 * 255, np.round(j8 * 255), atol=1e-4)  # on the 8-bit grid
    x16 = np.round(x * 65535) / 65535
    j16 = D.jpeg(x16, 30, 16)
    q8 = np.round(x16 * 255)
    # residual mode: j16 - x16 is the 8-bit JPEG error of q8, so j16 keeps the 16-bit detail of x16
    np.testing.assert_allclose((j16 - x16) * 255, j8 * 255 - q8, atol=1e-3)
    assert np.abs(j16 * 255 - np.round(j16 * 255)).max() > 0.1  # not collapsed to 8 bits
    grey = D.jpeg(x[..., :1], 50, 8)
    assert grey.shape == (32, 32, 1)


def test_downsample_exact_size_and_clip():
    x = _hr(50, 40)
    y = D.downsample(x, 4.0, "bicubic", size=(13, 10))
    assert y.shape == (13, 10, 3) and y.min() >= 0 and y.max() <= 1
    assert D.downsample(x, 2.0, "nearest").shape == (25, 20, 3)


# ------------------------------------------------------------------------------------------------ chain


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("scale", [2, 3, 4, 8])
@pytest.mark.parametrize("preset", ["bsrgan", "light", "bicubic"])
def test_degrade_shapes(c, scale, preset):
    hr = _hr(48, 72, c)
    lr, steps = D.degrade(hr, scale, preset, D.rng_for(1, f"{c}{scale}{preset}"))
    assert lr.shape == (48 // scale, 72 // scale, c) and lr.dtype == np.float32
    assert 0 <= lr.min() and lr.max() <= 1
    json.dumps(steps)  # JSON-serialisable
    finals = [s for s in steps if s["name"] == "downsample" and s["role"] == "final"]
    assert len(finals) == 1 and finals[0]["to"] == [48 // scale, 72 // scale]


def test_degrade_many_bsrgan_draws_land_on_lr_grid():
    hr = _hr(32, 32, 3)
    orders = set()
    for k in range(40):
        lr, steps = D.degrade(hr, 4, "bsrgan", D.rng_for(k, "x"))
        assert lr.shape == (8, 8, 3)
        names = [s["name"] + ("_" + s["role"] if "role" in s else "") for s in steps]
        assert names[-1] == "jpeg_final"
        if "downsample_random" in names:
            assert names.index("downsample_random") < names.index("downsample_final")
        orders.add(tuple(names))
    assert len(orders) > 5  # the order is shuffled


def test_bsrgan_steps_have_parameters():
    _, steps = D.degrade(_hr(), 4, "bsrgan", D.rng_for(0, "img.png"))
    by_name = {s["name"]: s for s in steps}
    assert {"blur", "downsample", "noise", "jpeg"} <= set(by_name)
    assert {"kernel", "size", "sigma_x", "sigma_y", "theta"} <= set(by_name["blur"])
    assert by_name["blur"]["size"] % 2 == 1 and 7 <= by_name["blur"]["size"] <= 25
    assert 2 <= by_name["noise"]["sigma_255"] <= 25
    assert 30 <= by_name["jpeg"]["quality"] <= 95 and by_name["jpeg"]["jpeg_mode"] == "8bit"
    _, steps16 = D.degrade(_hr(), 4, "bsrgan", D.rng_for(0, "img.png"), bit_depth=16)
    assert all(s["jpeg_mode"] == "residual_on_16bit" for s in steps16 if s["name"] == "jpeg")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_preset_is_imresize(scale):
    hr = _hr(48, 36, 3)
    lr, steps = D.degrade(hr, scale, "bicubic", np.random.default_rng(0))
    np.testing.assert_array_equal(lr, np.clip(imresize(hr, 1 / scale), 0, 1))
    assert [s["name"] for s in steps] == ["downsample"] and steps[0]["method"] == "bicubic"


def test_determinism_and_seed_dependence():
    hr = _hr()
    a, sa = D.degrade(hr, 4, "bsrgan", D.rng_for(7, "a/b.png"))
    b, sb = D.degrade(hr, 4, "bsrgan", D.rng_for(7, "a/b.png"))
    np.testing.assert_array_equal(a, b)
    assert sa == sb
    c, _ = D.degrade(hr, 4, "bsrgan", D.rng_for(8, "a/b.png"))
    assert not np.array_equal(a, c)


def test_rng_for_is_a_stable_hash():
    # Fixed values: a change here means every published degraded set would change.
    assert D.rng_for(0, "a.png").integers(1 << 30) == D.rng_for(0, "a.png").integers(1 << 30)
    assert D.rng_for(0, "a.png").integers(1 << 30) != D.rng_for(0, "b.png").integers(1 << 30)
    assert int(D.rng_for(0, "a.png").integers(1 << 30)) == RNG_FOR_0_A


def test_degrade_rejects_bad_input():
    with pytest.raises(ValueError, match="multiple of scale 4"):
        D.degrade(_hr(30, 32), 4, "bsrgan", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown degradation preset"):
        D.degrade(_hr(), 4, "nope", np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        D.degrade(_hr()[..., 0], 4, "bsrgan", np.random.default_rng(0))
    with pytest.raises(ValueError, match="probability"):
        D.DegradeConfig(noise_prob=1.5)
    with pytest.raises(ValueError, match="odd"):
        D.DegradeConfig(kernel_size=(6, 21))
    with pytest.raises(ValueError, match="down_probs"):
        D.DegradeConfig(down_probs=(0.5, 0.2, 0.2))


def test_crops():
    x = np.arange(7 * 10).reshape(7, 10, 1).astype(np.float32)
    np.testing.assert_array_equal(D.crop_to_multiple(x, 3), x[:6, :9])  # top-left
    np.testing.assert_array_equal(D.center_crop(x, 4), x[1:5, 3:7])
    r = D.random_crop(x, 5, np.random.default_rng(0))
    assert r.shape == (5, 5, 1)
    with pytest.raises(ValueError, match="smaller than the scale"):
        D.crop_to_multiple(x[:2], 3)
    with pytest.raises(ValueError, match="cannot crop"):
        D.center_crop(x, 8)


# ------------------------------------------------------------------------------------------------ folder


def _make_inputs(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = np.asarray(Image.open(FIXTURES / "histology" / "cmu1sr_y2700_x0900.png").convert("RGB"))
    Image.fromarray(np.ascontiguousarray(rgb[:64, :72])).save(folder / "rgb.png")
    (folder / "sub").mkdir(exist_ok=True)
    grey = np.asarray(Image.open(FIXTURES / "mri" / "colin27_z141.png").convert("L"))[60:124, 60:124]
    # 16-bit grey: 8-bit values spread to 16 bits plus fine detail below the 8-bit step.
    g16 = (grey.astype(np.uint32) * 257 + (np.arange(64)[None, :] * 3) % 200).clip(0, 65535).astype(np.uint16)
    Image.fromarray(g16).save(folder / "sub" / "grey16.png")
    Image.fromarray(np.ascontiguousarray(rgb[:40, :40, 0])).save(folder / "grey8.jpg", quality=95)


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def test_degrade_folder_outputs_manifest_and_bit_depth(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _make_inputs(src)
    res = D.degrade_folder(src, out, scale=4, preset="bsrgan", seed=3)
    assert res.exit_code == 0, res.summary()
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["name"] for r in lines] == ["grey8.jpg", "rgb.png", "sub/grey16.png"]
    rec = {r["name"]: r for r in lines}
    assert rec["rgb.png"]["hr_shape"] == [64, 72, 3] and rec["rgb.png"]["lr_shape"] == [16, 18, 3]
    assert rec["sub/grey16.png"]["bit_depth"] == 16 and rec["grey8.jpg"]["bit_depth"] == 8
    assert rec["grey8.jpg"]["lr"] == "lr/grey8.png"
    steps = rec["rgb.png"]["steps"]
    assert steps[-1]["name"] == "jpeg" and "quality" in steps[-1]
    assert any(s["name"] == "downsample" and s["role"] == "final" for s in steps)
    # 16-bit grey stays 16-bit grey, in hr/ and lr/
    hr16, lr16 = _read(out / "hr/sub/grey16.png"), _read(out / "lr/sub/grey16.png")
    assert hr16.dtype.itemsize >= 2 and hr16.ndim == 2 and hr16.shape == (64, 64)
    assert lr16.shape == (16, 16) and np.any(lr16.astype(np.int64) % 257 != 0)
    assert _read(out / "lr/grey8.png").dtype == np.uint8 and _read(out / "lr/rgb.png").shape == (16, 18, 3)


def test_degrade_folder_same_seed_same_bytes_workers_independent(tmp_path):
    src = tmp_path / "in"
    _make_inputs(src)
    a = D.degrade_folder(src, tmp_path / "a", scale=2, preset="bsrgan", seed=5, workers=1)
    b = D.degrade_folder(src, tmp_path / "b", scale=2, preset="bsrgan", seed=5, workers=2)
    c = D.degrade_folder(src, tmp_path / "c", scale=2, preset="bsrgan", seed=6, workers=1)
    assert a.exit_code == b.exit_code == c.exit_code == 0
    for rel in ("lr/rgb.png", "lr/sub/grey16.png", "lr/grey8.png"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
        assert (tmp_path / "a" / rel).read_bytes() != (tmp_path / "c" / rel).read_bytes()
    assert (tmp_path / "a/manifest.jsonl").read_text() == (tmp_path / "b/manifest.jsonl").read_text()


def test_degrade_folder_hr_size_crop(tmp_path):
    src = tmp_path / "in"
    _make_inputs(src)
    res = D.degrade_folder(src, tmp_path / "o", scale=4, preset="bicubic", seed=0, hr_size=48)
    assert [n for n, _ in res.failures] == [str(src / "grey8.jpg")]  # 40x40 < 48
    assert "smaller than --hr-size 48" in res.failures[0][1]
    assert _read(tmp_path / "o/hr/rgb.png").shape == (48, 48, 3)
    with pytest.raises(ValueError, match="multiple of the scale"):
        D.degrade_folder(src, tmp_path / "o", scale=4, preset="bicubic", seed=0, hr_size=50)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_reports_bad_files_and_goes_on(tmp_path):
    from typer.testing import CliRunner

    from ldsr.cli import app

    src = tmp_path / "in"
    _make_inputs(src)
    (src / "x.png").write_text("not an image")
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(src / "tiny.png")
    r = CliRunner().invoke(app, ["degrade", str(src), str(tmp_path / "o"), "--scale", "4", "--seed", "1"])
    assert r.exit_code == 1, r.output
    assert "3 succeeded, 2 failed" in r.output
    assert "x.png" in r.output and "tiny.png" in r.output and "smaller than the scale 4" in r.output
    assert (tmp_path / "o/lr/rgb.png").exists() and not (tmp_path / "o/lr/x.png").exists()
    assert len((tmp_path / "o/manifest.jsonl").read_text().splitlines()) == 3


def test_cli_help_and_scale_choice(tmp_path):
    from typer.testing import CliRunner

    from ldsr.cli import app

    runner = CliRunner()
    h = runner.invoke(app, ["degrade", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    assert h.exit_code == 0
    text = " ".join(h.output.split())
    for expected in ("--scale", "default: 4", "bsrgan", "default: 0", "no crop", "default: 1"):
        assert expected in text, expected
    r = runner.invoke(app, ["degrade", str(tmp_path), str(tmp_path / "o"), "--scale", "5"])
    assert r.exit_code == 2 and not (tmp_path / "o").exists()
