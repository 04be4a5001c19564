"""The models shipped in models/ (issue: trained models that ship with ldsr): size budget, model cards, loading
by name, automatic choice by channels and scale, and an upscale of a bundled fixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ldsr.io import read_image
from ldsr.models.checkpoint import read_config
from ldsr.pipeline import load, shipped_models

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = shipped_models()
EXPECTED = {"mri-x4": (1, 4), "histology-x4": (3, 4), "histology-x8": (3, 8)}  # name -> (channels, scale)
MB = 2**20


def test_expected_models_are_shipped_within_the_size_budget() -> None:
    assert set(EXPECTED) <= set(SHIPPED), f"missing shipped models: {set(EXPECTED) - set(SHIPPED)}"
    total = 0
    for name, folder in SHIPPED.items():
        size = sum(p.stat().st_size for p in folder.iterdir() if p.suffix == ".safetensors")
        assert size <= 25 * MB, f"{name}: {size / MB:.1f} MB of weights, over 25 MB"
        total += size
    assert total <= 80 * MB, f"shipped weights total {total / MB:.1f} MB, over 80 MB"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_card_config_and_upscale(name: str) -> None:
    folder = SHIPPED[name]
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    for needed in ("Training data", "Licence", "Degradation preset: bsrgan", "Sampler", "Results"):
        assert needed in card, f"{name}: MODEL_CARD.md lacks {needed!r}"
    cfg = read_config(folder)
    channels, scale = EXPECTED[name]
    assert (cfg["channels"], cfg["scale"], cfg["task"]) == (channels, scale, "sr")
    assert cfg["sr"]["space"] == "latent"
    up = load(name)
    assert up.kind == "latent" and up.channels == channels and up.scale == scale
    # The card states the defaults the loaded model uses (the weights' metadata and config.json agree).
    assert f"steps: {up.default_steps}," in card and f"draws averaged per image: {up.default_samples}" in card
    lr = np.random.default_rng(0).random((12, 20, channels)).astype(np.float32)  # any size: padded, cropped
    out = up.upscale(lr, steps=2, samples=1).image
    assert out.shape == (12 * scale, 20 * scale, channels) and np.isfinite(out).all()
    assert 0 <= out.min() and out.max() <= 1


def test_upscale_without_a_model_picks_the_shipped_one(tmp_path: Path) -> None:
    from ldsr.cli import app

    src = ROOT / "fixtures" / "mri" / "figshare_0_1840.jpg"
    img, _ = read_image(src)
    lr = img[:32, :32]  # a 32x32 grey LR patch
    from ldsr.io import write_image

    write_image(tmp_path / "lr.png", lr, bit_depth=8)
    res = CliRunner().invoke(app, ["upscale", "-i", str(tmp_path / "lr.png"), "-o", str(tmp_path / "sr.png"),
                                   "--steps", "2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "mri-x4" in res.output
    out, _ = read_image(tmp_path / "sr.png")
    assert out.shape[:2] == (128, 128)
    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 0 and all(n in res.output for n in EXPECTED)
