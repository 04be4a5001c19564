"""Tests of ldsr.models.baselines: SRCNN, FSRCNN, ESRGAN (RRDBNet, VGG discriminator, RaGAN, VGG19 loading)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ldsr.models.baselines import (
    BASELINE_PRESETS,
    FSRCNN,
    SRCNN,
    BaselineConfig,
    BaselineGAN,
    BaselineSR,
    VGG19Features,
    VGGDiscriminator,
    build_model,
    count_parameters,
    load_vgg19_features,
    ragan_d_loss,
    ragan_g_loss,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mri" / "figshare_0_1840.jpg"
TINY = {"srcnn": BaselineConfig("srcnn"), "fsrcnn": BaselineConfig("fsrcnn"),
        "esrgan": BaselineConfig("esrgan", preset="tiny")}  # fmt: skip


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("arch", list(TINY))
@pytest.mark.parametrize("scale", [2, 3, 4, 8])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_exact(arch: str, scale: int, channels: int) -> None:
    model = build_model(TINY[arch], channels, scale)
    lr = torch.rand(2, channels, 5, 7) * 2 - 1  # odd sizes catch off-by-one paddings
    out = model.generator(lr)
    assert out.shape == (2, channels, 5 * scale, 7 * scale)
    pred = model.predict({"lr": lr})
    assert pred.shape == out.shape and pred.min() >= -1 and pred.max() <= 1


@pytest.mark.parametrize("channels", [1, 3])
def test_srcnn_parameter_count_matches_paper(channels: int) -> None:
    c = channels
    expected = 9 * 9 * c * 64 + 64 + 1 * 1 * 64 * 32 + 32 + 5 * 5 * 32 * c + c
    assert count_parameters(SRCNN(c, 4)) == expected
    assert count_parameters(BASELINE_PRESETS["srcnn"](c, 2)) == expected  # independent of the scale
    assert expected == {1: 8129, 3: 20099}[c]


@pytest.mark.parametrize("channels", [1, 3])
def test_fsrcnn_parameter_count_matches_paper(channels: int) -> None:
    c, d, s, m = channels, 56, 12, 4
    weights = 25 * c * d + d * s + m * 9 * s * s + s * d + 81 * d * c
    if c == 1:
        assert weights == 12464  # the paper's FSRCNN(56, 12, 4) count (weights only)
    biases = d + s + m * s + d + c
    prelu = d + s + m * s + d  # one slope per channel
    assert count_parameters(FSRCNN(c, 3)) == weights + biases + prelu


def test_esrgan_default_is_paper_size() -> None:
    # the paper's RRDBNet (23 RRDBs, nf 64, gc 32) x4 RGB has 16,697,987 parameters
    cfg = BaselineConfig("esrgan")
    assert count_parameters(build_model(cfg, 3, 4).generator) == 16_697_987


def test_ragan_properties() -> None:
    hi, lo = torch.full((8, 1), 5.0), torch.full((8, 1), -5.0)
    zero = torch.zeros(8, 1)
    good, even, bad = ragan_d_loss(hi, lo), ragan_d_loss(zero, zero), ragan_d_loss(lo, hi)
    assert good < 0.01 < even < bad
    assert math.isclose(even.item(), math.log(2), rel_tol=1e-6)
    # G loss is the symmetric counterpart: high when D separates real >> fake, low when fooled
    r, f = torch.randn(6, 1), torch.randn(6, 1)
    assert torch.allclose(ragan_g_loss(r, f), ragan_d_loss(f, r))
    assert ragan_g_loss(hi, lo) > ragan_g_loss(zero, zero) > ragan_g_loss(lo, hi)
    # raising a real logit lowers D's loss; raising a fake logit lowers G's loss
    real = torch.zeros(4, 1, requires_grad=True)
    fake = torch.zeros(4, 1, requires_grad=True)
    ragan_d_loss(real, fake.detach()).backward()
    assert (real.grad < 0).all()
    ragan_g_loss(real.detach(), fake).backward()
    assert (fake.grad < 0).all()


@pytest.mark.parametrize("size", [32, 128, 48])
def test_discriminator_sizes(size: int) -> None:
    disc = VGGDiscriminator(3, num_feat=8)
    x = torch.rand(2, 3, size, size) * 2 - 1
    logits = disc(x)
    assert logits.shape == (2, 1) and torch.isfinite(logits).all()
    if size == 128:  # the paper's input: five stride-2 stages give 4x4 before the head
        assert disc.features(x).shape == (2, 64, 4, 4)
    with pytest.raises(ValueError, match="at least 32x32"):
        disc(torch.zeros(2, 3, 16, 16))


def _fixture_pairs(n: int = 2, size: int = 64, scale: int = 4) -> dict[str, torch.Tensor]:
    """n real grey crops of the MRI fixture, LR by PIL bicubic, both in [-1, 1]."""
    img = Image.open(FIXTURE).convert("L")
    hrs, lrs = [], []
    for y, x in [(150, 150), (200, 250), (260, 180), (120, 280)][:n]:
        crop = img.crop((x, y, x + size, y + size))
        lr = crop.resize((size // scale, size // scale), Image.Resampling.BICUBIC)
        hrs.append(np.asarray(crop, np.float32) / 127.5 - 1)
        lrs.append(np.asarray(lr, np.float32) / 127.5 - 1)
    return {"hr": torch.from_numpy(np.stack(hrs))[:, None], "lr": torch.from_numpy(np.stack(lrs))[:, None]}


def test_srcnn_learns_on_real_mri_crop() -> None:
    batch = _fixture_pairs()
    model = build_model(BaselineConfig("srcnn"), 1, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first, _ = model.training_loss(batch)
    losses = []
    for _ in range(100):
        loss, logs = model.training_loss(batch)
        assert set(logs) == {"l1", "loss"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = model.training_loss(batch)[0].item()
    assert final < 0.5 * first.item(), (first.item(), final)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    # and it gets into the range of plain bicubic upsampling (what SRCNN learns to refine)
    bicubic = torch.nn.functional.interpolate(batch["lr"], scale_factor=4, mode="bicubic", align_corners=False)
    assert final < 2.0 * (bicubic - batch["hr"]).abs().mean().item()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"arch": "edsr"}, "arch"),
        ({"arch": "esrgan", "preset": "huge"}, "preset"),
        ({"arch": "srcnn", "preset": "small"}, "preset"),
        ({"arch": "esrgan", "num_blocks": 0}, "num_blocks"),
        ({"arch": "fsrcnn", "num_feat": 16}, "num_feat"),
        ({"arch": "srcnn", "gan": True}, "gan"),
        ({"arch": "esrgan", "gan": True, "gan_weight": -1.0}, "gan_weight"),
        ({"arch": "esrgan", "gan": True, "pixel_weight": float("nan")}, "pixel_weight"),
        ({"arch": "esrgan", "vgg_weights": "vgg.safetensors"}, "vgg_weights"),
        ({"arch": "esrgan", "gan": True, "init_from": ""}, "init_from"),
    ],
)
def test_bad_config_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BaselineConfig(**kwargs)


def test_build_model_rejects_bad_channels_and_scale() -> None:
    with pytest.raises(ValueError, match="channels"):
        build_model(BaselineConfig("srcnn"), 4, 4)
    with pytest.raises(ValueError, match="scale"):
        build_model(BaselineConfig("fsrcnn"), 1, 5)
    model = build_model(BaselineConfig("srcnn"), 1, 4)
    with pytest.raises(ValueError, match=r"batch\['hr'\]"):
        model.training_loss({"lr": torch.zeros(1, 1, 8, 8), "hr": torch.zeros(1, 1, 16, 16)})


def test_config_dict_round_trips_resolved() -> None:
    model = build_model(BaselineConfig("esrgan", preset="small", growth=8), 1, 4)
    d = model.config_dict()
    assert (d["num_blocks"], d["num_feat"], d["growth"]) == (6, 32, 8)
    assert BaselineConfig(**d) == model.cfg


def test_gan_stage_protocol_and_gradient_routing() -> None:
    # L1 stage: no discriminator attribute, so the loop uses one optimizer
    assert not hasattr(build_model(TINY["esrgan"], 1, 2), "discriminator")
    model = build_model(BaselineConfig("esrgan", preset="tiny", gan=True), 1, 2)
    assert isinstance(model, BaselineGAN) and isinstance(model, BaselineSR) and model.perceptual is None
    batch = {"lr": torch.rand(2, 1, 16, 16) * 2 - 1, "hr": torch.rand(2, 1, 32, 32) * 2 - 1}
    loss, logs = model.training_loss(batch)
    assert set(logs) == {"l1", "gan_g", "loss"}
    assert math.isclose(logs["loss"], 1e-2 * logs["l1"] + 5e-3 * logs["gan_g"], rel_tol=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.generator.parameters())
    assert all(p.grad is None for p in model.discriminator.parameters())  # D untouched by the G step
    assert all(p.requires_grad for p in model.discriminator.parameters())  # flags restored
    model.zero_grad(set_to_none=True)
    d_loss, d_logs = model.discriminator_loss(batch)
    assert set(d_logs) == {"d_loss", "d_real", "d_fake"}
    d_loss.backward()
    assert all(p.grad is not None for p in model.discriminator.parameters())
    assert all(p.grad is None for p in model.generator.parameters())


def test_vgg_weights_load_from_safetensors_and_state_dict(tmp_path: Path) -> None:
    vgg = VGG19Features()
    state = {k: v.contiguous() for k, v in vgg.state_dict().items()}
    assert "features.34.weight" in state and len(state) == 32  # 16 convs up to conv5_4
    extra = {"classifier.0.weight": torch.zeros(2, 2)}  # torchvision files carry a classifier too
    st_path = tmp_path / "vgg19.safetensors"
    save_file({**state, **extra}, str(st_path))
    loaded = load_vgg19_features(st_path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    pt_path = tmp_path / "vgg19.pth"
    torch.save(state, pt_path)
    assert torch.equal(load_vgg19_features(pt_path).features[0].weight, vgg.features[0].weight)

    cfg = BaselineConfig("esrgan", preset="tiny", gan=True, vgg_weights=str(st_path))
    model = build_model(cfg, 1, 2)
    assert model.perceptual is not None
    n_gen_disc = count_parameters(model.generator) + count_parameters(model.discriminator)
    assert count_parameters(model) == n_gen_disc  # VGG is frozen buffers, not parameters
    assert not any(k.startswith("perceptual") for k in model.state_dict())  # nor in checkpoints
    batch = {"lr": torch.rand(2, 1, 16, 16) * 2 - 1, "hr": torch.rand(2, 1, 32, 32) * 2 - 1}
    loss, logs = model.training_loss(batch)
    assert logs["perceptual"] > 0 and torch.isfinite(loss)
    expected = 1e-2 * logs["l1"] + 5e-3 * logs["gan_g"] + 1.0 * logs["perceptual"]
    assert math.isclose(logs["loss"], expected, rel_tol=1e-5)
    # the functional frozen copy computes the same features as the module
    x = torch.rand(1, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(model.perceptual.features(x * 2 - 1), vgg((x - mean) / std), atol=1e-5)


def test_vgg_weights_missing_or_wrong_file_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "vgg19.safetensors"
    with pytest.raises(ValueError, match="nope"):
        load_vgg19_features(missing)
    cfg = BaselineConfig("esrgan", preset="tiny", gan=True, vgg_weights=str(missing))
    with pytest.raises(ValueError, match=str(missing).replace("\\", "\\\\")):
        build_model(cfg, 3, 4)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"features.0.weight": torch.zeros(1)}, str(wrong))
    with pytest.raises(ValueError, match="wrong.safetensors.*missing"):
        load_vgg19_features(wrong)
