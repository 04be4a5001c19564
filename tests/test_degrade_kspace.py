"""The `kspace` (MRI acquisition) and `blind` (per-image mixture) presets of ldsr.data.degrade."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldsr.data import degrade as D

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NO_NOISE = replace(D.PRESETS["kspace"], rician_prob=0.0)


def _mri(size: int = 64) -> np.ndarray:
    grey = np.asarray(Image.open(FIXTURES / "mri" / "colin27_z141.png").convert("L"), dtype=np.float32) / 255
    h, w = grey.shape
    return np.ascontiguousarray(
        grey[h // 2 - size // 2 : h // 2 + size // 2, w // 2 - size // 2 : w // 2 + size // 2, None]
    )


def test_truncation_of_a_band_limited_image_is_exact_sampling_on_the_imresize_grid():
    # A cosine below the LR Nyquist passes unchanged; LR pixel i sits at HR position s i + (s - 1) / 2.
    for s, n in ((2, 64), (3, 63), (4, 64)):
        r = np.arange(n, dtype=np.float64)
        x = (0.5 + 0.3 * np.cos(2 * np.pi * 2 * r / n))[:, None, None] * np.ones((1, n, 1))
        z = D.kspace_lowres(x, (n // s, n // s))
        pos = s * np.arange(n // s) + (s - 1) / 2
        want = 0.5 + 0.3 * np.cos(2 * np.pi * 2 * pos / n)
        np.testing.assert_allclose(z.real[:, :, 0], want[:, None] * np.ones((1, n // s)), atol=1e-12)
        assert np.abs(z.imag).max() < 1e-12


@pytest.mark.parametrize("window", ["none", "hann", "tukey"])
def test_constant_image_keeps_its_value_under_every_window_and_partial_fourier(window):
    x = np.full((48, 40, 1), 0.37)
    wr = D.kspace_window_1d(12, window, 0.5) * D.partial_fourier_mask(12, 0.625, "low")
    wc = D.kspace_window_1d(10, window, 0.5)
    np.testing.assert_allclose(np.abs(D.kspace_lowres(x, (12, 10), weights_rows=wr, weights_cols=wc)), 0.37, atol=1e-12)


def test_windows_and_partial_fourier_mask():
    for n in (7, 8, 16):
        for kind in ("none", "hann", "tukey"):
            w = D.kspace_window_1d(n, kind, 0.4)
            assert w[n // 2] == 1.0 and np.all((0 <= w) & (w <= 1))
    h = D.kspace_window_1d(8, "hann")
    np.testing.assert_allclose(h, 0.5 * (1 + np.cos(np.pi * (np.arange(8) - 4) / 4)))
    t = D.kspace_window_1d(16, "tukey", 0.5)
    assert np.all(t[4:13] == 1.0) and t[0] == 0.0  # flat within half of the band, 0 at the Nyquist edge
    m = D.partial_fourier_mask(16, 0.625, "high")  # 5/8: 6 of 16 lines missing on the positive side
    assert m.sum() == 10 and np.all(m[10:] == 0) and m[8] == 1
    assert D.partial_fourier_mask(16, 0.625, "low")[:6].sum() == 0
    assert D.partial_fourier_mask(5, 0.5, "low")[2] == 1  # DC always kept
    with pytest.raises(ValueError, match="partial-Fourier fraction"):
        D.partial_fourier_mask(8, 0.3, "low")


def test_rician_noise_statistics():
    rng = np.random.default_rng(0)
    z = np.full((200, 200, 1), 0.5 + 0j)
    out = D.rician_magnitude(z, 0.02, rng)
    # High SNR: Rician ~ Gaussian around sqrt(A^2 + sigma^2) with std sigma.
    assert abs(out.mean() - np.sqrt(0.25 + 0.02**2)) < 1e-3 and abs(out.std() - 0.02) < 1e-3
    dark = D.rician_magnitude(np.zeros((200, 200, 1), complex), 0.05, rng)
    # Zero signal: Rayleigh, mean sigma sqrt(pi / 2) (noise floor of a magnitude image, never negative).
    assert abs(dark.mean() - 0.05 * np.sqrt(np.pi / 2)) < 2e-3 and dark.min() >= 0
    assert D.snr_sigma(np.full((4, 4), 0.6), 20.0) == pytest.approx(0.03)
    assert D.snr_sigma(np.zeros((4, 4)), 20.0) == 0.0


def test_kspace_preset_logs_every_choice_and_keeps_one_channel():
    x = _mri(64)
    seen = set()
    for k in range(30):
        lr, steps = D.degrade(x, 4, "kspace", D.rng_for(k, "mri.png"))
        assert lr.shape == (16, 16, 1) and lr.dtype == np.float32 and 0 <= lr.min() and lr.max() <= 1
        json.dumps(steps)
        ks = steps[0]
        assert ks["name"] == "kspace" and ks["to"] == [16, 16] and ks["window"] in D.KSPACE_WINDOWS
        seen.add(ks["window"])
        if ks["window"] == "tukey":
            assert 0.2 <= ks["tukey_alpha"] <= 0.8
        if "partial_fourier" in ks:
            pf = ks["partial_fourier"]
            assert 0.625 <= pf["acquired"] <= 0.875 and pf["phase_axis"] in (0, 1) and pf["side"] in ("low", "high")
            seen.add("pf")
        assert steps[1]["name"] == "rician" and 10 <= steps[1]["snr"] <= 60 and steps[1]["sigma"] > 0
    assert seen == {"none", "hann", "tukey", "pf"}
    # Same generator, same LR; the noise-free model is close to the bicubic LR (both low-pass to the LR grid).
    a, _ = D.degrade(x, 4, "kspace", D.rng_for(3, "a"))
    b, _ = D.degrade(x, 4, "kspace", D.rng_for(3, "a"))
    np.testing.assert_array_equal(a, b)
    clean, _ = D.degrade(
        x, 4, replace(NO_NOISE, kspace_window_probs=(1.0, 0.0, 0.0), partial_fourier_prob=0.0), D.rng_for(0, "a")
    )
    bic, _ = D.degrade(x, 4, "bicubic", D.rng_for(0, "a"))
    assert np.sqrt(np.mean((clean - bic) ** 2)) < 0.05


def test_kspace_refuses_colour_with_a_clear_message():
    with pytest.raises(ValueError, match="needs 1 channel, got 3"):
        D.degrade(np.repeat(_mri(32), 3, axis=2), 4, "kspace", D.rng_for(0, "x"))


def test_blind_draws_presets_records_the_choice_and_skips_kspace_on_colour():
    grey, rgb = _mri(32), np.repeat(_mri(32), 3, axis=2)
    grey_choices, rgb_choices = set(), set()
    for k in range(40):
        lr, steps = D.degrade(grey, 4, "blind", D.rng_for(k, "g"))
        assert steps[0]["name"] == "choice" and lr.shape == (8, 8, 1)
        grey_choices.add(steps[0]["preset"])
        lr3, steps3 = D.degrade(rgb, 4, "blind", D.rng_for(k, "c"))
        assert "kspace" not in steps3[0]["weights"] and lr3.shape == (8, 8, 3)
        rgb_choices.add(steps3[0]["preset"])
    assert grey_choices == {"bicubic", "light", "bsrgan", "kspace"}
    assert rgb_choices == {"bicubic", "light", "bsrgan"}
    # Weights: all mass on bicubic gives exactly the bicubic preset's LR.
    only = D.degrade_config("blind", {"bicubic": 1.0, "bsrgan": 0.0})
    lr, steps = D.degrade(rgb, 4, only, D.rng_for(0, "c"))
    np.testing.assert_array_equal(lr, D.degrade(rgb, 4, "bicubic", D.rng_for(0, "c"))[0])
    assert steps[0] == {"name": "choice", "preset": "bicubic", "weights": {"bicubic": 1.0, "bsrgan": 0.0}}
    with pytest.raises(ValueError, match="only apply to the 'blind' preset"):
        D.degrade_config("bsrgan", {"bicubic": 1.0})
    with pytest.raises(ValueError, match="distinct presets"):
        D.degrade_config("blind", {"sharp": 1.0})
    with pytest.raises(ValueError, match="not all 0"):
        D.degrade_config("blind", {"bicubic": 0.0})
    with pytest.raises(ValueError, match="no preset for 3-channel"):
        D.degrade(rgb, 4, D.degrade_config("blind", {"kspace": 1.0}), D.rng_for(0, "c"))


def test_cli_kspace_and_blind_folders(tmp_path):
    from typer.testing import CliRunner

    from ldsr.cli import app

    src = tmp_path / "in"
    src.mkdir()
    g16 = np.round(_mri(64)[:, :, 0] * 65535).astype(np.uint16)
    Image.fromarray(g16).save(src / "grey16.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(src / "rgb.png")
    runner = CliRunner()
    r = runner.invoke(app, ["degrade", str(src), str(tmp_path / "k"), "--preset", "kspace", "--scale", "4"])
    assert r.exit_code == 1, r.output  # the colour file fails, the grey one is written
    assert "rgb.png" in r.output and "needs 1 channel" in r.output
    with Image.open(tmp_path / "k/lr/grey16.png") as im:
        lr = np.asarray(im)
    assert lr.shape == (16, 16) and lr.dtype.itemsize == 2  # 1-channel and 16-bit kept
    rec = json.loads((tmp_path / "k/manifest.jsonl").read_text())
    assert rec["preset"] == "kspace" and rec["steps"][0]["name"] == "kspace" and rec["bit_depth"] == 16
    args = ["degrade", str(src), str(tmp_path / "b"), "--preset", "blind", "--weights", "light=1,kspace=0"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in (tmp_path / "b/manifest.jsonl").read_text().splitlines()]
    for rec in recs:
        assert rec["weights"] == {"light": 1.0, "kspace": 0.0}
        assert rec["steps"][0]["name"] == "choice" and rec["steps"][0]["preset"] == "light"
    r = runner.invoke(app, ["degrade", str(src), str(tmp_path / "x"), "--preset", "blind", "--weights", "light"])
    assert r.exit_code == 2 and "preset=weight" in r.output
