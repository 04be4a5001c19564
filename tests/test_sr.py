"""LatentSR / PixelSR: shapes, conditioning, training signal, errors, and the `ldsr bench speed` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from ldsr.models.sr import LatentSR, PixelSR, SRConfig, build_model

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mri" / "figshare_0_1840.jpg"


class StandInAE(nn.Module):
    """Fixed f=4 autoencoder with the ldsr.models.autoencoder interface: 4x4 average pooling / nearest upsampling,
    plus a 1x1 conv so that it has parameters whose freezing can be checked."""

    factor = 4

    def __init__(self, channels: int, latent_channels: int = 3) -> None:
        super().__init__()
        self.in_channels, self.latent_channels = channels, latent_channels
        self.register_buffer("scale_factor", torch.tensor(1.0))
        self.proj = nn.Conv2d(channels, latent_channels, 1)
        self.back = nn.Conv2d(latent_channels, channels, 1)

    def encode(self, x: torch.Tensor, *, streamed: bool = False) -> torch.Tensor:
        return self.proj(F.avg_pool2d(x, 4)) * self.scale_factor  # (N, c_z, H/4, W/4)

    def decode(self, z: torch.Tensor, *, streamed: bool = False) -> torch.Tensor:
        return self.back(F.interpolate(z / self.scale_factor, scale_factor=4.0, mode="nearest"))


def _tiny(space: str = "latent", channels: int = 1, scale: int = 4, **kw: object) -> LatentSR | PixelSR:
    torch.manual_seed(0)
    cfg = SRConfig(space=space, unet="tiny", timesteps=50, sampler="ddim", steps=2, **kw)  # type: ignore[arg-type]
    return build_model(cfg, channels, scale, StandInAE(channels) if space == "latent" else None)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_latent_shapes(channels: int, scale: int) -> None:
    model = _tiny(channels=channels, scale=scale)
    hr = torch.rand(2, channels, 32, 32) * 2 - 1
    lr = F.avg_pool2d(hr, scale)  # (2, C, 32/s, 32/s)
    cond = model._condition(lr, (8, 8))  # LR on the 8x8 latent grid of f=4
    assert cond.shape == (2, channels, 8, 8)
    if scale == 4:  # s == f: the LR already is on the latent grid
        assert cond is lr
    assert model.unet.config.in_channels == 3 + channels and model.unet.config.out_channels == 3
    loss, logs = model.training_loss({"hr": hr, "lr": lr})
    assert loss.ndim == 0 and logs["loss"] == pytest.approx(loss.item())
    out = model.upscale(lr, samples=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 2, channels, 32, 32) and out.abs().max() <= 1
    assert not torch.equal(out[0], out[1])  # two draws of the same LR differ


@pytest.mark.parametrize("channels", [1, 3])
def test_pixel_shapes_and_bicubic_condition(channels: int) -> None:
    model = _tiny("pixel", channels=channels, scale=4)
    lr = torch.rand(1, channels, 4, 4) * 2 - 1
    cond = model._condition(lr, (16, 16))
    ref = F.interpolate(lr, size=(16, 16), mode="bicubic", align_corners=False).clamp(-1, 1)
    assert torch.equal(cond, ref)
    assert model.unet.config.in_channels == 2 * channels
    assert model.predict({"lr": lr, "hr": torch.zeros(1, channels, 16, 16)}).shape == (1, channels, 16, 16)


class ZeroNet(nn.Module):
    """A denoiser that always predicts x0 = 0 (prediction="sample"): a residual model then returns its base."""

    def forward(self, x_in: torch.Tensor, t: torch.Tensor) -> object:
        return type("Out", (), {"sample": torch.zeros_like(x_in[:, : self.out_channels])})()


@pytest.mark.parametrize("space", ["latent", "pixel"])
@pytest.mark.parametrize("channels", [1, 3])
def test_residual_shapes_and_zero_residual_is_the_base(space: str, channels: int) -> None:
    model = _tiny(space, channels=channels, residual=True, residual_scale=4.0, prediction="sample")
    c_x = 3 if space == "latent" else channels  # denoised channels: c_z or image channels
    c_in = c_x + channels + (3 if space == "latent" else 0)  # x_t ++ LR (on the grid) [++ z(bicubic(LR))]
    assert model.unet.config.in_channels == c_in and model.unet.config.out_channels == c_x
    hr = torch.rand(2, channels, 16, 16) * 2 - 1
    lr = F.avg_pool2d(hr, 4)
    loss, _ = model.training_loss({"hr": hr, "lr": lr})
    assert torch.isfinite(loss)
    # The diffused quantity is (target - base) * residual_scale.
    size = (4, 4) if space == "latent" else (16, 16)
    base = model._base(lr, size)
    target = model._target(hr)
    assert base.shape == target.shape
    zero = ZeroNet()
    zero.out_channels = c_x
    model.unet = zero
    out = model.upscale(lr, generator=torch.Generator().manual_seed(0))[0]
    bicubic = F.interpolate(lr, size=(16, 16), mode="bicubic", align_corners=False).clamp(-1, 1)
    expected = model._to_image(model._base(lr, size)).clamp(-1, 1) if space == "latent" else bicubic
    torch.testing.assert_close(out, expected)


def test_predict_is_deterministic_and_autoencoder_frozen() -> None:
    model = _tiny()
    lr = torch.rand(1, 1, 8, 8) * 2 - 1
    batch = {"lr": lr, "hr": torch.zeros(1, 1, 32, 32)}
    assert torch.equal(model.predict(batch), model.predict(batch))
    assert all(not p.requires_grad for p in model.autoencoder.parameters())
    model.train()
    assert model.unet.training and not model.autoencoder.training
    model.training_loss({"hr": torch.rand(1, 1, 32, 32), "lr": lr})[0].backward()
    assert all(p.grad is None for p in model.autoencoder.parameters())
    assert model.unet.conv_in.weight.grad is not None
    assert model.config_dict()["space"] == "latent" and model.config_dict()["unet"] == "tiny"
    assert "betas" not in model.state_dict()  # recomputed from the config


def _fixture_batch() -> dict[str, torch.Tensor]:
    img = np.asarray(Image.open(FIXTURE).convert("L"), dtype=np.float32) / 255.0  # (512, 512)
    crops = [img[y : y + 32, x : x + 32] for y, x in ((200, 200), (240, 260), (300, 180), (260, 300))]
    hr = torch.from_numpy(np.stack(crops))[:, None] * 2 - 1  # (4, 1, 32, 32) in [-1, 1]
    return {"hr": hr, "lr": F.avg_pool2d(hr, 4)}  # (4, 1, 8, 8)


def test_latent_loss_falls_on_a_fixed_batch() -> None:
    model = _tiny()
    batch = _fixture_batch()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)

    def held_out() -> float:  # the same t and noise every time, so only the network changes
        with torch.no_grad():
            return sum(
                model.training_loss(batch, generator=torch.Generator().manual_seed(100 + k))[0].item() for k in range(4)
            )

    before = held_out()
    g = torch.Generator().manual_seed(0)
    for _ in range(25):
        loss, _ = model.training_loss(batch, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out()
    assert after < 0.6 * before, (before, after)


def test_errors() -> None:
    with pytest.raises(ValueError, match="needs a trained autoencoder"):
        build_model(SRConfig(unet="tiny"), 1, 4)
    with pytest.raises(ValueError, match="sr.unet"):
        build_model(SRConfig(space="pixel", unet="huge"), 1, 4)
    with pytest.raises(ValueError, match="sr.sampler"):
        build_model(SRConfig(space="pixel", unet="tiny", sampler="euler"), 1, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="schedule"):
        build_model(SRConfig(space="pixel", unet="tiny", schedule="cos"), 1, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="autoencoder has 3 image channels"):
        build_model(SRConfig(unet="tiny"), 1, 4, StandInAE(3))
    with pytest.raises(ValueError, match="residual_scale must be > 0"):
        build_model(SRConfig(space="pixel", unet="tiny", residual=True, residual_scale=0.0), 1, 4)
    model = _tiny(scale=4)
    with pytest.raises(ValueError, match="not scale=4 times"):
        model.training_loss({"hr": torch.zeros(1, 1, 32, 32), "lr": torch.zeros(1, 1, 16, 16)})
    with pytest.raises(ValueError, match="divisible by the autoencoder factor 4"):
        _tiny(scale=2).upscale(torch.zeros(1, 1, 3, 3))  # HR 6x6
    with pytest.raises(ValueError, match=r"grid \(3, 3\) must be divisible by 2"):
        model.upscale(torch.zeros(1, 1, 3, 3))  # HR 12 -> latent 3x3, odd for the 2-level tiny UNet
    with pytest.raises(ValueError, match="steps must be"):
        model.upscale(torch.zeros(1, 1, 8, 8), steps=0)


def test_with_the_real_tiny_autoencoder() -> None:
    ae_mod = pytest.importorskip("ldsr.models.autoencoder")
    torch.manual_seed(0)
    ae = ae_mod.build_model(ae_mod.AutoencoderConfig(kind="vae", factor=4, preset="tiny"), 1)
    model = build_model(SRConfig(unet="tiny", timesteps=50, sampler="dpmpp", steps=2), 1, 4, ae)
    hr = torch.rand(1, 1, 32, 32) * 2 - 1
    loss, _ = model.training_loss({"hr": hr, "lr": F.avg_pool2d(hr, 4)})
    assert torch.isfinite(loss)
    assert model.upscale(F.avg_pool2d(hr, 4)).shape == (1, 1, 1, 32, 32)


def test_bench_speed_cli() -> None:
    from ldsr.cli import app

    result = CliRunner().invoke(app, ["bench", "speed", "--hr", "32", "--steps", "2", "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.strip().splitlines() if ln.strip()]
    assert lines[-2].startswith("latent/pixel speed ratio: ")
    assert lines[-1].startswith("latent/pixel memory ratio: ")
    assert float(lines[-2].split(": ")[1]) > 0
    rows = [ln.split() for ln in lines if ln.split()[:1] == ["32"]]
    assert [r[1] for r in rows] == ["latent", "pixel"]
    assert rows[0][2] == "3x8x8" and rows[1][2] == "1x32x32"  # the denoiser grids
    assert all(r[-3] == "2" for r in rows)  # steps
