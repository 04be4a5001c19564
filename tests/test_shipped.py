"""The models shipped as package data (ldsr/assets/models/): size budget, model cards rendered from evaluation
summaries, portable configs, loading by name, automatic choice by channels and scale, and an upscale of a bundled
fixture; the demo's samples are copies of fixtures/."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from ldsr.assets import SAMPLES_DIR
from ldsr.io import read_image
from ldsr.models.checkpoint import read_config
from ldsr.pipeline import load, shipped_models

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = shipped_models()
# name -> (channels, scale, training degradation)
EXPECTED = {"mri-x4": (1, 4, "blind"), "histology-x4": (3, 4, "bsrgan"), "histology-x8": (3, 8, "bsrgan")}
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
    channels, scale, degradation = EXPECTED[name]
    for needed in ("Training data", "Licence", f"Degradation preset: {degradation}", "Sampler", "Results"):
        assert needed in card, f"{name}: MODEL_CARD.md lacks {needed!r}"
    cfg = read_config(folder)
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


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("name", sorted(shipped_models(None)))
def test_shipped_config_and_metadata_hold_no_absolute_path(name: str) -> None:
    """Every shipped model (upscalers, the colorizer, the generators)."""
    folder = shipped_models(None)[name]
    found = _strings(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    with safe_open(str(folder / "ema.safetensors"), framework="pt") as f:
        for v in (f.metadata() or {}).values():
            try:
                found += _strings(json.loads(v))
            except json.JSONDecodeError:
                found.append(v)
    absolute = [s for s in found if s.startswith(("/", "\\", "~")) or s[1:3] in (":\\", ":/")]
    assert not absolute, f"{name}: absolute paths {absolute}"
    assert str(ROOT) not in json.dumps(found)


def test_cards_are_rendered_from_the_summaries() -> None:
    """Each committed MODEL_CARD.md equals its rendering from experiments/cards.yaml and the stored summaries."""
    spec = importlib.util.spec_from_file_location("render_cards", ROOT / "experiments" / "render_cards.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    entries = mod.load_spec()
    assert set(entries) == set(EXPECTED)
    for name, entry in entries.items():
        card = (SHIPPED[name] / "MODEL_CARD.md").read_text(encoding="utf-8")
        assert card == mod.render(name, entry, SHIPPED[name]), f"{name}: run experiments/render_cards.py"
        assert "z >:" not in card and "## Results" in card


def test_demo_samples_are_the_fixtures() -> None:
    samples = sorted(p.relative_to(SAMPLES_DIR) for p in SAMPLES_DIR.rglob("*") if p.is_file() and p.suffix != ".md")
    assert [p.parts[0] for p in samples].count("mri") == 5 and [p.parts[0] for p in samples].count("histology") == 4
    for rel in samples:
        assert (SAMPLES_DIR / rel).read_bytes() == (ROOT / "fixtures" / rel).read_bytes(), rel


def test_shipped_models_are_the_upscalers_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shipped colorizer or generator is never offered to `ldsr upscale` (model picker, -m names)."""
    import ldsr.pipeline.upscaler as up

    for name, task in (("a-x4", "sr"), ("b-cnn", "baseline"), ("c-colorize", "colorize"), ("d-gen", "generate")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"config": {"task": task}}))
    (tmp_path / "e-broken").mkdir()
    (tmp_path / "e-broken" / "config.json").write_text("{not json")
    (tmp_path / "f-empty").mkdir()
    monkeypatch.setattr(up, "MODELS_DIR", tmp_path)
    assert list(up.shipped_models()) == ["a-x4", "b-cnn"]
    assert list(up.shipped_models(("colorize",))) == ["c-colorize"]
    assert list(up.shipped_models(None)) == ["a-x4", "b-cnn", "c-colorize", "d-gen", "e-broken"]


def test_histology_gen_draws_stained_tissue_texture() -> None:
    """The shipped histology-gen: 128² colour samples with H&E's colour balance (eosin pink and haematoxylin purple
    put red and blue above green on average), texture rather than a flat colour, and different from one another;
    a constant or untrained model fails."""
    import numpy as np
    import torch

    from ldsr.cli.generate import load_generator

    net, run = load_generator(shipped_models(None)["histology-gen"], "cpu")
    assert run["task"] == "generate" and run["channels"] == 3
    with torch.no_grad():
        x = net.sample_batch(2, seed=0, start=0, sampler="dpmpp", steps=10).numpy()  # (2, 3, 128, 128) in [0, 1]
    assert x.shape == (2, 3, 128, 128)
    for im in x:
        r, g, b = im.reshape(3, -1).mean(axis=1)
        assert r > g + 0.05 and b > g + 0.05 and im.std() > 0.05
    assert np.sqrt(np.mean((x[0] - x[1]) ** 2)) > 0.05
