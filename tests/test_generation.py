"""Unconditional generation models (ldsr.models.generation): shapes, seeds, checkpoints, and tiny real-data
training runs through the one training loop that lower the loss."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from ldsr.config import config_from_dict
from ldsr.models import checkpoint as ck
from ldsr.models.build import build_model
from ldsr.models.generation import (
    DCGANDiscriminator,
    DCGANGenerator,
    DiffusionGenerator,
    GANGenerator,
    GenerationConfig,
    load_autoencoder,
)
from ldsr.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
MRI = str(ROOT / "fixtures" / "mri")


def run_config(run_dir: Path, generate: dict, steps: int = 2, **train_over: object) -> dict:
    return {
        "task": "generate",
        "channels": 1,
        "scale": 4,
        "seed": 0,
        "data": {"train": [MRI], "split": "all", "val_split": "all", "hr_size": 32, "degradation": "bicubic",
                 "val_count": 0, "rot90": True},
        "train": {"steps": steps, "batch_size": 4, "lr": 2e-3, "ema_decay": 0.0, "ckpt_every": steps,
                  "val_every": 0, "log_every": 1, "run_dir": str(run_dir), **train_over},
        "generate": generate,
    }  # fmt: skip


PIXEL = {"model": "pixel", "unet": "tiny", "timesteps": 100, "sampler": "ddim", "steps": 3}
GAN = {"model": "gan", "gan_latent": 16, "gan_features": 8}


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny VQ-VAE trained for two steps on the MRI fixtures (the latent space of the latent model)."""
    d = tmp_path_factory.mktemp("gen_ae")
    cfg = run_config(d, {}, steps=2)
    cfg.pop("generate")
    cfg["task"] = "autoencoder"
    cfg["autoencoder"] = {"kind": "vqvae", "factor": 4, "preset": "tiny", "latent_channels": 3, "codebook_size": 32}
    return train(config_from_dict(cfg), progress=False)


def test_dcgan_shapes_and_power_of_two() -> None:
    g, d = DCGANGenerator(3, 64, nz=8, ngf=4), DCGANDiscriminator(3, 64, ndf=4)
    with torch.no_grad():
        x = g(torch.randn(2, 8))
    assert x.shape == (2, 3, 64, 64) and float(x.abs().max()) <= 1.0
    assert d(x).shape == (2,)
    with pytest.raises(ValueError, match="power-of-two"):
        DCGANGenerator(1, 48)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="generate.model"):
        GenerationConfig(model="vae").validate()  # type: ignore[arg-type]  # deliberately invalid
    with pytest.raises(ValueError, match="generate.steps"):
        GenerationConfig(steps=0).validate()
    with pytest.raises(ValueError, match="needs a trained autoencoder"):
        build_model(config_from_dict(run_config(Path("unused"), {"model": "latent"})))


@pytest.mark.parametrize("generate", [PIXEL, GAN], ids=["pixel", "gan"])
def test_same_seed_same_images_any_batch(generate: dict) -> None:
    torch.manual_seed(0)
    model = build_model(config_from_dict(run_config(Path("unused"), generate))).eval()
    a = model.sample_batch(3, seed=7)
    b = torch.cat([model.sample_batch(2, seed=7), model.sample_batch(1, seed=7, start=2)])
    c = model.sample_batch(3, seed=8)
    assert a.shape == (3, 1, 32, 32)
    torch.testing.assert_close(a, b)  # sample i depends on (seed, i) only
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # different samples in one batch


def _fixed_loss(model: DiffusionGenerator, batch: torch.Tensor) -> float:
    """The diffusion loss on a fixed batch with fixed t and noise, averaged over 8 draws."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        return sum(float(model.training_loss({"hr": batch}, generator=g)[0]) for _ in range(8)) / 8


def _fixture_batch() -> torch.Tensor:
    from ldsr.data.datasets import DataConfig, build_train_dataset

    ds = build_train_dataset(DataConfig(train=[MRI], split="all", hr_size=32, degradation="bicubic"),
                             channels=1, scale=4, seed=0)  # fmt: skip
    return torch.stack([ds[k]["hr"] for k in range(8)])  # (8, 1, 32, 32)


@pytest.mark.parametrize("kind", ["pixel", "latent"])
def test_training_lowers_the_diffusion_loss(tmp_path: Path, kind: str, autoencoder_run: Path) -> None:
    gen = dict(PIXEL)
    if kind == "latent":
        gen = {**gen, "model": "latent", "autoencoder": str(autoencoder_run)}
    d = config_from_dict(run_config(tmp_path / kind, gen, steps=40))
    torch.manual_seed(0)
    fresh = build_model(d)
    final = train(d, progress=False)
    state, run = ck.load_weights(final, ema=True)
    trained = build_model(config_from_dict(run), state)  # rebuilt from the checkpoint alone
    assert isinstance(trained, DiffusionGenerator)
    batch = _fixture_batch()
    before, after = _fixed_loss(fresh.eval(), batch), _fixed_loss(trained.eval(), batch)
    assert after < 0.8 * before, (before, after)
    if kind == "latent":
        assert "autoencoder" in run and trained.autoencoder is not None  # self-contained checkpoint
        assert not any(k.startswith("autoencoder.discriminator") for k in state)
    x = trained.sample_batch(2, seed=0, steps=2)
    assert x.shape == (2, 1, 32, 32) and torch.isfinite(x).all()


def test_gan_training_runs_both_players(tmp_path: Path) -> None:
    d = config_from_dict(run_config(tmp_path / "gan", GAN, steps=30))
    final = train(d, progress=False)
    with open(tmp_path / "gan" / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    d_loss = [float(r["d_loss"]) for r in rows]
    # the discriminator learns to tell the fixtures from the untrained generator's output: its loss falls
    # below log 4 = 1.386 (chance) early in the run
    assert min(d_loss[:15]) < 1.2, d_loss
    state, run = ck.load_weights(final)
    model = build_model(config_from_dict(run), state)
    assert isinstance(model, GANGenerator)
    assert any(k.startswith("discriminator.") for k in state)
    assert model.sample_batch(2, seed=0).shape == (2, 1, 32, 32)


def test_load_autoencoder_from_latent_checkpoints(autoencoder_run: Path, tmp_path: Path) -> None:
    ae = load_autoencoder(str(autoencoder_run), 1)
    assert ae.factor == 4 and "discriminator" not in ae._modules
    with pytest.raises(ValueError, match="channels"):
        load_autoencoder(str(autoencoder_run), 3)
    gen = {**PIXEL, "model": "latent", "autoencoder": str(autoencoder_run)}
    final = train(config_from_dict(run_config(tmp_path / "lat", gen, steps=1)), progress=False)
    again = load_autoencoder(str(final), 1)  # the autoencoder inside a latent generation checkpoint
    torch.testing.assert_close(again.state_dict()["scale_factor"], ae.state_dict()["scale_factor"])
