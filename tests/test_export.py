"""Exporting trained checkpoints as shipped models (models/<name>/) and loading them by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import ldsr.pipeline
import ldsr.pipeline.upscaler
from ldsr.data.resize import imresize
from ldsr.io import read_image
from ldsr.pipeline.export import export_model

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "fixtures"


def _lr(h: int = 12, w: int = 10) -> np.ndarray:
    img, _ = read_image(FIX / "mri" / "figshare_0_1840.jpg")
    return imresize(img[200 : 200 + 4 * h, 200 : 200 + 4 * w], 0.25).clip(0, 1).astype(np.float32)


def test_baseline_export_loads_by_name(runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    folder = export_model(runs["baseline"], "srcnn-tiny", out_root=models, card={"PSNR (test)": "12.3 dB"})
    assert folder == models / "srcnn-tiny"
    with safe_open(str(folder / "ema.safetensors"), framework="pt") as f:
        meta = f.metadata()
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert json.loads(meta["dtype"]) == "float16" and json.loads(meta["config"])["task"] == "baseline"
    info = json.loads((folder / "config.json").read_text())
    assert info["dtype"] == "float16" and info["exported_from"] and info["step"] == 2
    card = (folder / "MODEL_CARD.md").read_text()
    assert "Steps: 2" in card and "12.3 dB" in card and "bicubic" in card  # the tiny degradation preset

    monkeypatch.setattr(ldsr.pipeline.upscaler, "MODELS_DIR", models)
    assert ldsr.pipeline.shipped_models() == {"srcnn-tiny": folder}
    up = ldsr.pipeline.load("srcnn-tiny")
    assert up.name == "srcnn-tiny" and up.kind == "baseline"
    assert next(up.model.parameters()).dtype == torch.float32
    lr = _lr()
    ref = ldsr.pipeline.load(runs["baseline"]).upscale(lr).image
    out = up.upscale(lr).image
    assert out.shape == ref.shape == (48, 40, 1)
    assert np.abs(out - ref).max() < 2e-3


def test_latent_export_loads_by_name(runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    folder = export_model(runs["latent"], "ldm-tiny", out_root=models)
    card = (folder / "MODEL_CARD.md").read_text()
    assert "Steps: 2" in card and "Sampler:" in card
    monkeypatch.setattr(ldsr.pipeline.upscaler, "MODELS_DIR", models)
    assert "ldm-tiny" in ldsr.pipeline.shipped_models()
    up = ldsr.pipeline.load("ldm-tiny")
    assert up.kind == "latent"
    res = up.upscale(_lr(8, 8), steps=2)
    assert res.image.shape == (32, 32, 1) and np.isfinite(res.image).all()
    # Inference defaults chosen after training travel with the shipped model (config.json and the metadata).
    folder = export_model(
        runs["latent"], "ldm-avg", out_root=models, sampler_defaults={"sampler": "ddim", "steps": 3, "samples": 2}
    )
    assert json.loads((folder / "config.json").read_text())["config"]["sr"]["samples"] == 2
    up = ldsr.pipeline.load("ldm-avg")
    assert (up.default_sampler, up.default_steps, up.default_samples) == ("ddim", 3, 2)
    assert "Sampler: ddim, steps: 3" in (folder / "MODEL_CARD.md").read_text()
    assert up.upscale(_lr(8, 8)).samples.shape == (2, 32, 32, 1)
    one = export_model(
        runs["latent"], "ldm-one", out_root=models, sampler_defaults={"sampler": "dpmpp", "steps": 1, "samples": 8}
    )
    card = (one / "MODEL_CARD.md").read_text()  # the card says what the one-step default returns
    assert "draws averaged per image: 8" in card and "averaged over 8 draws of x_T" in card and "8 evaluations" in card
    with pytest.raises(ValueError, match="unknown sampler default"):
        export_model(runs["latent"], "bad", out_root=models, sampler_defaults={"timesteps": 10})
    with pytest.raises(ValueError, match="sr.samples must be >= 1"):
        export_model(runs["latent"], "bad", out_root=models, sampler_defaults={"samples": 0})
    with pytest.raises(ValueError, match="only apply to diffusion"):
        export_model(runs["baseline"], "bad", out_root=models, sampler_defaults={"steps": 3})


def test_reexport_keeps_the_weights_file_unless_the_weights_change(runs: dict[str, Path], tmp_path: Path) -> None:
    models = tmp_path / "models"
    weights = export_model(runs["baseline"], "m", out_root=models) / "ema.safetensors"
    first = weights.read_bytes()
    export_model(runs["baseline"], "m", out_root=models, card={"note": "new card text"})
    assert weights.read_bytes() == first  # same tensors and metadata: not rewritten (safetensors' order varies)
    assert "new card text" in (models / "m" / "MODEL_CARD.md").read_text()
    export_model(runs["baseline"], "m", out_root=models, half=False)
    with safe_open(str(weights), framework="pt") as f:  # other weights: rewritten
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    weights.write_bytes(first[:100])  # truncated: rewritten
    export_model(runs["baseline"], "m", out_root=models)
    assert weights.stat().st_size == len(first)


def test_no_half_keeps_float32(runs: dict[str, Path], tmp_path: Path) -> None:
    folder = export_model(runs["baseline"], "srcnn32", out_root=tmp_path, half=False)
    with safe_open(str(folder / "ema.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
        assert json.loads(f.metadata()["dtype"]) == "float32"


@pytest.mark.parametrize("name", ["a/b", "a\\b", "..", ".", "", "bicubic", ".hidden"])
def test_bad_names_are_refused(runs: dict[str, Path], tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        export_model(runs["baseline"], name, out_root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_autoencoder_and_oversize_are_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="autoencoder"):
        export_model(runs["ae"], "ae", out_root=tmp_path)
    with pytest.raises(ValueError, match="limit"):
        export_model(runs["baseline"], "big", out_root=tmp_path, max_mb=1e-4)
    assert not any(tmp_path.iterdir())


def test_script(runs: dict[str, Path], tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "export_model.py"),
        str(runs["baseline"]),
        "cli-model",
        "--out",
        str(tmp_path),
        "--no-half",
        "--card",
        "licence=CC0",
        "--card",
        "note=a=b",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": ""}, timeout=300)
    assert res.returncode == 0, res.stderr
    card = (tmp_path / "cli-model" / "MODEL_CARD.md").read_text()
    assert "CC0" in card and "note: a=b" in card and "float32" in card
    bad = subprocess.run(
        [*cmd[:3], "x/y", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": ""},
        timeout=300,
    )
    assert bad.returncode == 1 and "error:" in bad.stderr
