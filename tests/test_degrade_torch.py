"""The torch degradations agree with the numpy reference of `ldsr degrade`; the device-degrade dataset mode."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldsr.data import degrade as D
from ldsr.data import degrade_torch as T

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _rgb(h: int = 48, w: int = 56) -> np.ndarray:
    img = np.asarray(Image.open(FIXTURES / "histology" / "cmu1sr_y2700_x0900.png").convert("RGB"))
    return np.ascontiguousarray(img[:h, :w], dtype=np.float32) / 255.0


def _grey(size: int = 64) -> np.ndarray:
    g = np.asarray(Image.open(FIXTURES / "mri" / "colin27_z141.png").convert("L"), dtype=np.float32) / 255
    h, w = g.shape
    return np.ascontiguousarray(
        g[h // 2 - size // 2 : h // 2 + size // 2, w // 2 - size // 2 : w // 2 + size // 2, None]
    )


def _t(*arrays: np.ndarray) -> torch.Tensor:
    """(H, W, C) arrays in [0, 1] -> (N, C, H, W)."""
    return torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays])


def _a(x: torch.Tensor, i: int = 0) -> np.ndarray:
    return x[i].permute(1, 2, 0).cpu().numpy()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def test_blur_matches_numpy_with_a_kernel_per_sample():
    a, b = _rgb(), _rgb()[::-1].copy()
    k1, k2 = D.gaussian_kernel(7, 1.2, 1.2), D.gaussian_kernel(25, 2.5, 0.8, 0.7)
    big = np.zeros((2, 25, 25))
    big[0, 9:16, 9:16], big[1] = k1, k2  # a zero-padded small kernel is the same convolution
    y = T.blur(_t(a, b), torch.as_tensor(big))
    np.testing.assert_allclose(_a(y, 0), D.blur(a, k1), atol=1e-4)
    np.testing.assert_allclose(_a(y, 1), D.blur(b, k2), atol=1e-4)
    small = _rgb(9, 11)  # kernel wider than the image: the mirror repeats
    np.testing.assert_allclose(_a(T.blur(_t(small), k2)), D.blur(small, k2), atol=1e-4)


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(12, 14), (17, 9), (24, 28), (60, 70)])
def test_imresize_matches_numpy(method, size):
    x = _rgb()
    want = D.downsample(x, 1.0, method, size=size)
    np.testing.assert_allclose(_a(T.downsample(_t(x), size, method)), want, atol=1e-4)


def test_bicubic_preset_batch_equals_numpy_degrade():
    a, b = _rgb(), _rgb()[:, ::-1].copy()
    lr = T.degrade_batch(_t(a, b) * 2 - 1, "bicubic", torch.Generator().manual_seed(0), scale=4)
    assert lr.shape == (2, 3, 12, 14)
    for i, x in enumerate((a, b)):
        want, _ = D.degrade(x, 4, "bicubic", np.random.default_rng(0))
        np.testing.assert_allclose(_a((lr + 1) / 2, i), want, atol=1e-4)


@pytest.mark.parametrize("window", ["none", "hann", "tukey"])
def test_kspace_truncation_matches_numpy(window):
    x = _grey(64)
    wr = D.kspace_window_1d(16, window, 0.4) * D.partial_fourier_mask(16, 0.625, "high")
    wc = D.kspace_window_1d(16, window, 0.4)
    want = D.kspace_lowres(x, (16, 16), weights_rows=wr, weights_cols=wc)
    got = T.kspace_lowres(_t(x), (16, 16), torch.as_tensor(wr)[None], torch.as_tensor(wc)[None])
    np.testing.assert_allclose(_a(got.real), want.real, atol=1e-4)
    np.testing.assert_allclose(_a(got.imag), want.imag, atol=1e-4)


@pytest.mark.parametrize("quality", [30, 60, 95])
def test_jpeg_within_35_db_of_pillow(quality):
    rgb, grey = _rgb(48, 56), _rgb(37, 45)[..., :1]  # sizes that are not multiples of the 16x16 MCU
    for x in (rgb, grey):
        ref = D.jpeg(x, quality)
        got = _a(T.jpeg(_t(x), quality))
        assert _psnr(got, ref) > 35.0, (x.shape, quality, _psnr(got, ref))
        assert _psnr(got, ref) > _psnr(x, ref) + 5  # much closer to Pillow's JPEG than the input is
        np.testing.assert_allclose(got * 255, np.round(got * 255), atol=1e-3)  # on the 8-bit grid
    # 16-bit residual mode, and one quality per sample
    fine = (np.arange(rgb.shape[1]) % 7)[None, :, None] / 65535 * 50  # detail below the 8-bit step
    x16 = (np.round(np.clip(rgb + fine, 0, 1) * 65535) / 65535).astype(np.float32)
    got16 = _a(T.jpeg(_t(x16, x16), [quality, 50], bit_depth=16), 0)
    assert _psnr(got16, D.jpeg(x16, quality, 16)) > 35.0
    assert np.abs(got16 * 255 - np.round(got16 * 255)).max() > 0.1  # not collapsed to 8 bits


def test_noise_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.full((2, 3, 128, 128), 0.5)
    y = T.add_gaussian_noise(x, torch.tensor([5 / 255, 20 / 255]), g, per_channel=True)
    for i, s in enumerate((5 / 255, 20 / 255)):
        d = (y[i] - 0.5).numpy()
        assert abs(d.mean()) < 1e-3 and abs(d.std() - s) < 0.05 * s
    grey = T.add_gaussian_noise(x, 0.05, g, per_channel=False)
    assert torch.equal(grey[:, 0], grey[:, 2]) and not torch.equal(y[:, 0], y[:, 2])
    z = torch.full((1, 1, 200, 200), 0.5 + 0j, dtype=torch.complex64)
    r = T.rician_magnitude(z, 0.02, g).numpy()
    assert abs(r.mean() - np.sqrt(0.25 + 0.02**2)) < 1e-3 and abs(r.std() - 0.02) < 1e-3
    dark = T.rician_magnitude(torch.zeros((1, 1, 200, 200), dtype=torch.complex64), 0.05, g).numpy()
    assert abs(dark.mean() - 0.05 * np.sqrt(np.pi / 2)) < 2e-3


@pytest.mark.parametrize("preset", ["bsrgan", "light", "bicubic", "blind"])
@pytest.mark.parametrize("c,scale", [(3, 4), (1, 2), (1, 8)])
def test_chain_shapes_range_steps_and_determinism(preset, c, scale):
    hr = _t(*[(_rgb(32, 32) if c == 3 else _grey(32)) for _ in range(3)]) * 2 - 1
    lr, steps = T.degrade_batch_steps(hr, preset, torch.Generator().manual_seed(1), scale=scale)
    assert lr.shape == (3, c, 32 // scale, 32 // scale) and lr.dtype == torch.float32
    assert lr.min() >= -1 and lr.max() <= 1 and len(steps) == 3
    json.dumps(steps)
    again = T.degrade_batch(hr, preset, torch.Generator().manual_seed(1), scale=scale)
    assert torch.equal(lr, again)
    for s in steps:
        if preset != "blind":
            assert [x["name"] for x in s if x["name"] == "downsample" and x["role"] == "final"] == ["downsample"]
        if preset == "bsrgan":
            assert s[-1]["name"] == "jpeg" and s[-1]["role"] == "final"


def test_bsrgan_draws_vary_order_and_keep_random_down_first():
    hr = _t(*[_rgb(32, 32)] * 24) * 2 - 1
    _, steps = T.degrade_batch_steps(hr, "bsrgan", torch.Generator().manual_seed(3), scale=4)
    orders = set()
    for s in steps:
        names = [x["name"] + ("_" + x["role"] if "role" in x else "") for x in s]
        if "downsample_random" in names:
            assert names.index("downsample_random") < names.index("downsample_final")
        orders.add(tuple(names))
        for x in s:
            if x["name"] == "blur":
                assert x["size"] % 2 == 1 and 7 <= x["size"] <= 25
            if x["name"] == "jpeg":
                assert 30 <= x["quality"] <= 95
    assert len(orders) > 5


def test_kspace_and_blind_batches():
    hr = _t(*[_grey(64)] * 6) * 2 - 1
    lr, steps = T.degrade_batch_steps(hr, "kspace", torch.Generator().manual_seed(0), scale=4)
    assert lr.shape == (6, 1, 16, 16)
    for s in steps:
        assert s[0]["name"] == "kspace" and s[1]["name"] == "rician" and 10 <= s[1]["snr"] <= 60
    # Without noise, each sample is the numpy model with the same recorded window / partial Fourier.
    quiet = replace(D.PRESETS["kspace"], rician_prob=0.0, partial_fourier_prob=1.0)
    lr, steps = T.degrade_batch_steps(hr, quiet, torch.Generator().manual_seed(0), scale=4)
    for i, s in enumerate(steps):
        k = s[0]
        wr = D.kspace_window_1d(16, k["window"], k.get("tukey_alpha", 1.0))
        wc = wr.copy()
        pf = k["partial_fourier"]
        mask = D.partial_fourier_mask(16, pf["acquired"], pf["side"])
        wr, wc = (wr * mask, wc) if pf["phase_axis"] == 0 else (wr, wc * mask)
        want = np.clip(np.abs(D.kspace_lowres(_grey(64), (16, 16), weights_rows=wr, weights_cols=wc)), 0, 1)
        np.testing.assert_allclose(_a((lr + 1) / 2, i), want, atol=1e-4)
    with pytest.raises(ValueError, match="needs 1 channel"):
        T.degrade_batch(_t(_rgb(32, 32)), "kspace", torch.Generator(), scale=4)
    rgb = _t(*[_rgb(32, 32)] * 12) * 2 - 1
    _, steps = T.degrade_batch_steps(rgb, "blind", torch.Generator().manual_seed(0), scale=4)
    assert {s[0]["preset"] for s in steps} <= {"bicubic", "light", "bsrgan"} and len(
        {s[0]["preset"] for s in steps}
    ) > 1
    only = D.degrade_config("blind", {"light": 0.0, "bicubic": 1.0})
    lr, steps = T.degrade_batch_steps(rgb, only, torch.Generator(), scale=4)
    assert all(s[0]["preset"] == "bicubic" for s in steps)
    np.testing.assert_allclose(
        _a((lr + 1) / 2, 0), D.degrade(_rgb(32, 32), 4, "bicubic", np.random.default_rng())[0], atol=1e-4
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="not a multiple of scale"):
        T.degrade_batch(torch.zeros(1, 3, 30, 32), "bicubic", torch.Generator(), scale=4)
    with pytest.raises(ValueError, match="bit_depth"):
        T.degrade_batch(torch.zeros(2, 3, 32, 32), "bsrgan", torch.Generator(), scale=4, bit_depth=[8])


def test_generator_for_depends_on_the_seeds_only():
    a = T.generator_for(torch.tensor([5, 7]))
    b = T.generator_for([5, 7])
    c = T.generator_for([7, 5])
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert not torch.equal(torch.rand(4, generator=T.generator_for([5, 7])), torch.rand(4, generator=c))


def test_device_degrade_dataset_yields_hr_and_seeds(tmp_path):
    from torch.utils.data import DataLoader

    from ldsr.data.config import DataConfig
    from ldsr.data.datasets import SampleStream, build_train_dataset

    folder = tmp_path / "hr"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((_rgb(48, 56) * 255).astype(np.uint8)[:, i:]).save(folder / f"{i}.png")
    cfg = DataConfig(train=[str(folder)], split="all", hr_size=32, degradation="blind",
                     degradation_weights={"bicubic": 0.5, "bsrgan": 0.5}, device_degrade=True)  # fmt: skip
    ds = build_train_dataset(cfg, channels=3, scale=4, seed=0)
    item = ds[5]
    assert set(item) == {"hr", "seed", "bits", "name"} and item["hr"].shape == (3, 32, 32) and item["bits"] == 8
    assert ds[5]["seed"] == item["seed"] and ds[6]["seed"] != item["seed"]
    batch = next(iter(DataLoader(ds, batch_size=4, sampler=SampleStream(0))))
    from ldsr.data.degrade import degrade_config

    dcfg = degrade_config(cfg.degradation, cfg.degradation_weights)
    lr = T.degrade_batch(batch["hr"], dcfg, T.generator_for(batch["seed"]), scale=4, bit_depth=batch["bits"])
    again = T.degrade_batch(batch["hr"], dcfg, T.generator_for(batch["seed"]), scale=4, bit_depth=batch["bits"])
    assert lr.shape == (4, 3, 8, 8) and torch.equal(lr, again)
    # The CPU-loader mode of the same config still yields LR made by numpy.
    assert "lr" in build_train_dataset(replace(cfg, device_degrade=False), channels=3, scale=4, seed=0)[0]
    with pytest.raises(ValueError, match="device_degrade needs HR folders"):
        DataConfig(paired=str(tmp_path), device_degrade=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    hr = _t(*[_rgb(32, 32)] * 4) * 2 - 1
    for preset in ("bicubic", "bsrgan"):
        cpu = T.degrade_batch(hr, preset, torch.Generator().manual_seed(0), scale=4)
        gpu = T.degrade_batch(hr.cuda(), preset, torch.Generator().manual_seed(0), scale=4)
        assert gpu.device.type == "cuda" and gpu.shape == cpu.shape
        if preset == "bicubic":
            np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), atol=1e-4)
