"""Autoencoders (VAE / VQ-VAE) and their losses; CPU, tiny preset, real fixture crops."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from ldsr.models.autoencoder import (
    AE_PRESETS,
    Autoencoder,
    AutoencoderConfig,
    _diffusers_autoencoder,
    build_model,
    measure_scale_factor,
)
from ldsr.models.losses import hinge_d_loss, smooth_l1, ssim_map_torch, ssim_torch

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0


def _textured_crop(a: np.ndarray, size: int) -> np.ndarray:
    """The size x size tile (on a size-grid) with the largest std: skull edges, not flat background."""
    tiles = [(float(a[i : i + size, j : j + size].std()), i, j)
             for i in range(0, a.shape[0] - size + 1, size) for j in range(0, a.shape[1] - size + 1, size)]  # fmt: skip
    _, i, j = max(tiles)
    return a[i : i + size, j : j + size]


@pytest.fixture(scope="module")
def mri_crops() -> torch.Tensor:
    """(4, 1, 32, 32) in [-1, 1]: one textured crop from each of four real MRI fixtures."""
    files = sorted((FIXTURES / "mri").glob("figshare_*.jpg"))[:4]
    assert len(files) == 4
    crops = np.stack([_textured_crop(_grey(f), 32) for f in files])[:, None]
    return torch.from_numpy(crops) * 2.0 - 1.0


def _psnr01(y: torch.Tensor, x: torch.Tensor) -> float:
    """PSNR on the [0, 1] scale of two [-1, 1] tensors."""
    mse = (((y.clamp(-1, 1) - x) / 2.0) ** 2).mean().item()
    return 10.0 * math.log10(1.0 / mse)


def _tiny(kind: str, **kw) -> AutoencoderConfig:
    return AutoencoderConfig(kind=kind, preset="tiny", codebook_size=kw.pop("codebook_size", 64), **kw)


# ------------------------------------------------------------------------------------------- losses
def test_ssim_matches_skimage_on_real_mri():
    from skimage.metrics import structural_similarity

    im = Image.open(FIXTURES / "mri" / "figshare_0_1840.jpg").convert("L").crop((128, 128, 384, 384))
    a = np.asarray(im, dtype=np.float64) / 255.0
    b = np.asarray(im.filter(ImageFilter.GaussianBlur(2)), dtype=np.float64) / 255.0
    x = torch.from_numpy(a).float()[None, None]
    y = torch.from_numpy(b).float()[None, None]
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    ref01 = structural_similarity(a, b, data_range=1.0, **kw)
    ref11 = structural_similarity(2 * a - 1, 2 * b - 1, data_range=2.0, **kw)
    assert 0.5 < ref01 < 0.99  # the blur is a real, not a trivial, degradation
    assert ssim_torch(x, y, data_range=1.0).item() == pytest.approx(ref01, abs=1e-4)
    # model tensors in [-1, 1] with data_range 2 (SSIM is not shift invariant: a different value)
    assert ssim_torch(2 * x - 1, 2 * y - 1, data_range=2.0).item() == pytest.approx(ref11, abs=1e-4)
    assert ssim_map_torch(x, y, data_range=1.0).shape == (1, 1, 256 - 10, 256 - 10)
    assert ssim_torch(x, x, data_range=1.0).item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_rgb_matches_skimage_and_is_differentiable():
    from skimage.metrics import structural_similarity

    im = Image.open(FIXTURES / "histology" / "kather2016_82_label_2_150.png").convert("RGB")
    a = np.asarray(im, dtype=np.float64) / 255.0
    b = np.clip(a + np.random.default_rng(0).normal(0, 0.05, a.shape), 0, 1)
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=1.0, channel_axis=2)  # fmt: skip
    x = torch.from_numpy(a).float().permute(2, 0, 1)[None]
    y = torch.from_numpy(b).float().permute(2, 0, 1)[None].requires_grad_(True)
    s = ssim_torch(x, y, data_range=1.0)
    assert s.item() == pytest.approx(ref, abs=1e-4)
    s.backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="H and W >= 11"):
        ssim_torch(x[..., :8, :8], x[..., :8, :8], data_range=1.0)
    with pytest.raises(ValueError, match="data_range"):
        ssim_torch(x, x, data_range=0.0)


def test_hinge_and_smooth_l1():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - r) = 0, 0.5, 2 -> mean 5/6
    fake = torch.tensor([-2.0, 0.0])  # relu(1 + f) = 0, 1 -> mean 0.5
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 0.5))
    assert hinge_d_loss(torch.full((4,), 3.0), torch.full((4,), -3.0)).item() == 0.0
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    for beta in (0.01, 0.5, 2.0):
        assert smooth_l1(x, y, beta=beta).item() == pytest.approx(F.smooth_l1_loss(x, y, beta=beta).item(), rel=1e-6)
    assert smooth_l1(x, y, beta=0.0).item() == pytest.approx((x - y).abs().mean().item(), rel=1e-6)


# ------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("field", "value"),
    [("kind", "gan"), ("factor", 2), ("factor", 16), ("preset", "huge"), ("kl_weight", -1.0),
     ("commitment_weight", -0.25), ("l1_weight", -1.0), ("ssim_weight", -0.2), ("disc_weight", -0.5),
     ("latent_channels", 0), ("codebook_size", 1), ("disc_start", -1), ("dead_code_threshold", -5),
     ("usage_decay", 1.0), ("kl_weight", float("nan")), ("discriminator", "yes")],
)  # fmt: skip
def test_bad_config_raises_with_field_and_value(field, value):
    with pytest.raises(ValueError) as err:
        AutoencoderConfig(**{field: value})
    msg = str(err.value)
    assert field in msg and repr(value) in msg


def test_other_user_errors():
    with pytest.raises(ValueError, match="no reconstruction loss"):
        AutoencoderConfig(l1_weight=0.0, ssim_weight=0.0)
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        build_model(_tiny("vae"), 2)
    with pytest.raises(ValueError, match="gives factor 4, not the requested factor 8"):
        _diffusers_autoencoder(kind="vae", channels=1, block_out_channels=(8, 8, 8), factor=8,
                               layers_per_block=1, norm_num_groups=8, latent_channels=3,
                               codebook_size=8, mid_attention=False)  # fmt: skip
    m = build_model(_tiny("vqvae"), 1)
    with pytest.raises(ValueError, match="multiples of factor 4"):
        m.encode(torch.zeros(1, 1, 30, 32))
    with pytest.raises(ValueError, match=r"expected \(N, 1, H, W\)"):
        m.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="discriminator=True"):
        m.discriminator_loss({"hr": torch.zeros(1, 1, 32, 32)})
    assert set(AE_PRESETS) == {"tiny", "small", "base"}


# ------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("kind", ["vae", "vqvae"])
@pytest.mark.parametrize("factor", [4, 8])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(kind, factor, channels):
    torch.manual_seed(0)
    cfg = _tiny(kind, factor=factor, latent_channels=4)
    m = build_model(cfg, channels)
    assert (m.factor, m.latent_channels, m.in_channels) == (factor, 4, channels)
    assert float(m.scale_factor) == 1.0
    x = torch.rand(1, channels, 32, 32) * 2 - 1
    z = m.encode(x)
    assert z.shape == (1, 4, 32 // factor, 32 // factor)
    assert m.decode(z).shape == (1, channels, 32, 32)
    assert m.predict({"hr": x}).shape == (1, channels, 32, 32)
    loss, logs = m.training_loss({"hr": x})
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"rec_l1", "ssim", "loss"} <= set(logs)
    assert ({"kl"} if kind == "vae" else {"vq_codebook", "vq_commit", "perplexity", "codebook_usage"}) <= set(logs)
    assert AutoencoderConfig(**m.config_dict()) == cfg


# ---------------------------------------------------------------------------------------- overfitting
def _overfit(m: Autoencoder, x: torch.Tensor, steps: int) -> tuple[float, float, dict[str, float]]:
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    m.eval()
    with torch.no_grad():
        before = _psnr01(m.predict({"hr": x}), x)
    m.train()
    logs: dict[str, float] = {}
    for _ in range(steps):
        loss, logs = m.training_loss({"hr": x})
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        after = _psnr01(m.predict({"hr": x}), x)
    return before, after, logs


def _mean_baseline(x: torch.Tensor) -> float:
    """PSNR of predicting each crop's mean grey level: what an autoencoder must beat."""
    return _psnr01(x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x), x)


def test_vqvae_overfits_real_mri_crops(mri_crops):
    torch.manual_seed(0)
    m = build_model(_tiny("vqvae", dead_code_threshold=25), 1)
    before, after, logs = _overfit(m, mri_crops, steps=100)
    # measured: ~6 dB untrained -> ~27 dB after 100 steps; predicting each crop's mean gives ~11 dB
    assert after >= before + 5.0
    assert after >= _mean_baseline(mri_crops) + 5.0
    assert int(m.train_step) == 100
    assert logs["perplexity"] > 2.0 and 0.0 < logs["codebook_usage"] <= 1.0


def test_vae_overfits_real_mri_crops(mri_crops):
    torch.manual_seed(0)
    m = build_model(_tiny("vae"), 1)
    before, after, logs = _overfit(m, mri_crops, steps=80)  # measured: ~9 dB -> ~27 dB
    assert after >= before + 5.0
    assert after >= _mean_baseline(mri_crops) + 5.0
    assert logs["kl"] > 0.0


# ------------------------------------------------------------------------------------------ dead codes
def test_dead_codes_are_restarted_to_encoder_outputs(mri_crops):
    torch.manual_seed(0)
    k = 16
    m = build_model(_tiny("vqvae", codebook_size=k, dead_code_threshold=2), 1)
    x = mri_crops
    with torch.no_grad():
        z_e = m.net.encode(x).latents  # unscaled (N, c_z, h, w)
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
        # collapsed codebook: code 0 sits on the data, the other 15 are far away and never chosen
        m.codebook.data[0] = flat.mean(0)
        m.codebook.data[1:] = 1e3
    m.train()
    _, logs1 = m.training_loss({"hr": x})
    assert logs1["codes_restarted"] == 0 and logs1["codebook_usage"] == pytest.approx(1 / k)
    assert logs1["perplexity"] == pytest.approx(1.0)
    assert (m.code_idle[1:] == 1).all() and m.code_idle[0] == 0
    _, logs2 = m.training_loss({"hr": x})  # codes 1..15 idle for 2 steps -> restarted before quantising
    assert logs2["codes_restarted"] == k - 1
    assert logs2["codebook_usage"] > 1 / k and logs2["perplexity"] > 1.5
    new = m.codebook.detach()[1:]
    # every revived code is one of this batch's encoder outputs
    assert (new[:, None] - flat[None]).abs().amax(-1).min(dim=1).values.max().item() < 1e-6
    assert (m.code_idle[1:] <= 1).all()

    # control: with the guard off the collapsed codebook stays collapsed
    m2 = build_model(_tiny("vqvae", codebook_size=k, dead_code_threshold=0), 1)
    m2.load_state_dict(m.state_dict())
    with torch.no_grad():
        m2.codebook.data[0] = flat.mean(0)
        m2.codebook.data[1:] = 1e3
    m2.train()
    for _ in range(3):
        _, logs = m2.training_loss({"hr": x})
    assert logs["codes_restarted"] == 0 and logs["codebook_usage"] == pytest.approx(1 / k)


# ---------------------------------------------------------------------------------------- scale factor
@pytest.mark.parametrize("kind", ["vae", "vqvae"])
def test_scale_factor_gives_unit_std_and_decode_undoes_it(kind, mri_crops):
    torch.manual_seed(0)
    m = build_model(_tiny(kind), 1).eval()
    x = mri_crops
    with torch.no_grad():
        z1 = m.encode(x)
        y1 = m.decode(z1)
    batches = [x[:2], {"hr": x[2:]}]
    s = measure_scale_factor(m, batches)
    assert float(m.scale_factor) == pytest.approx(s)
    assert s == pytest.approx(1.0 / z1.std(unbiased=False).item(), rel=1e-4)
    assert abs(s - 1.0) > 0.05  # an untrained encoder is not already unit-scaled
    with torch.no_grad():
        z2 = m.encode(x)
        y2 = m.decode(z2)
    assert z2.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    torch.testing.assert_close(z2, z1 * s, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y2, y1, rtol=1e-4, atol=1e-5)  # decode(encode(x)) unchanged by the scale
    assert "scale_factor" in m.state_dict()
    with pytest.raises(ValueError, match="no batches"):
        measure_scale_factor(m, [])


# --------------------------------------------------------------------------------------- discriminator
def test_discriminator_switch_and_losses(mri_crops):
    torch.manual_seed(0)
    assert not hasattr(build_model(_tiny("vqvae"), 1), "discriminator")
    m = build_model(_tiny("vae", discriminator=True, disc_start=2), 1)
    assert isinstance(m.discriminator, torch.nn.Module)
    batch = {"hr": mri_crops}
    m.train()
    d0, dlogs0 = m.discriminator_loss(batch)  # before disc_start: inactive zero loss
    assert d0.item() == 0.0 and dlogs0["d_active"] == 0.0
    d0.backward()
    for _ in range(2):
        _, logs = m.training_loss(batch)
        assert "g_adv" not in logs
    m.zero_grad()
    loss, logs = m.training_loss(batch)  # step 2 >= disc_start: adversarial term on
    assert "g_adv" in logs and math.isfinite(logs["g_adv"])
    loss.backward()
    # the generator's adversarial term must not train the discriminator
    assert all(p.grad is None for p in m.discriminator.parameters())
    assert all(p.requires_grad for p in m.discriminator.parameters())
    d, dlogs = m.discriminator_loss(batch)
    assert torch.isfinite(d) and dlogs["d_active"] == 1.0 and d.item() >= 0.0
    m.zero_grad()
    d.backward()
    grads = [p.grad for p in m.discriminator.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in m.net.parameters())  # D step leaves the autoencoder alone


# ------------------------------------------------------------------------------------------- mixed precision
def test_ssim_is_fp32_under_bf16_autocast(mri_crops):
    """Inside autocast the SSIM moments stay fp32: bf16 variances E[x^2] - mu^2 cancel and can divide by 0."""
    x = (mri_crops + 1) * 0.5
    y = (x + 0.02 * torch.randn_like(x)).clamp(0, 1)
    ref = ssim_map_torch(x, y, data_range=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ssim_map_torch(x.bfloat16(), y.bfloat16(), data_range=1.0)
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    assert float((got - ref).abs().mean()) < 0.02  # only the bf16 rounding of the inputs differs


@pytest.mark.parametrize("kind", ["vae", "vqvae"])
def test_training_loss_under_bf16_autocast_is_finite_and_close(kind, mri_crops):
    torch.manual_seed(0)
    m = build_model(_tiny(kind), 1).eval()  # eval: no code restarts, deterministic posterior noise aside
    torch.manual_seed(1)
    ref, _ = m.training_loss({"hr": mri_crops})
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, logs = m.training_loss({"hr": mri_crops})
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert abs(float(got.detach()) - float(ref.detach())) < 0.1 * abs(float(ref.detach()))
