"""The GPU recipe of issue 14 (experiments/gpu/train_shipped.sh), rehearsed on the CPU: LDSR_DRY=1 trains the
three blind fine-tunes a few steps on the bundled fixtures (device-side degradation on) and exports their EMA
weights; each must load and upscale. The non-dry configs must be the GPU ones (bf16, device_degrade, blind)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldsr.config import load_config
from ldsr.pipeline import load

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "gpu" / "train_shipped.sh"
CONFIGS = ROOT / "experiments" / "configs" / "gpu_blind"
MODELS = {"mri-x4": (1, 4), "histology-x4": (3, 4), "histology-x8": (3, 8)}
MAX_BYTES = 16 * 2**20


@pytest.mark.parametrize("model", list(MODELS))
def test_gpu_configs_are_the_gpu_recipe(model: str) -> None:
    cfg = load_config(CONFIGS / f"{model.replace('-', '_')}.yaml")
    channels, scale = MODELS[model]
    assert (cfg.channels, cfg.scale) == (channels, scale)
    assert cfg.train.precision == "bf16" and cfg.train.device == "cuda"
    assert cfg.data.device_degrade and cfg.data.degradation == "blind"
    assert cfg.train.batch_size >= 64 and cfg.train.max_minutes > 0
    assert cfg.sr is not None and cfg.sr.init_from and cfg.sr.init_from.endswith(f"assets/models/{model}")


@pytest.fixture(scope="module")
def dry_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("gpu_recipe")
    out = tmp / "out"
    env = dict(os.environ, LDSR_DRY="1", LDSR_WORK=str(tmp / "work"), OMP_NUM_THREADS="1")
    res = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=tmp, env=env, capture_output=True, text=True, timeout=150)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def _fixture_lr(channels: int) -> np.ndarray:
    path = ROOT / "fixtures" / ("mri/colin27_z141.png" if channels == 1 else "histology/kather2016_86_label_5_150.png")
    img = np.asarray(Image.open(path).convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    img = img[:16, :16]
    return img[..., None] if img.ndim == 2 else img


@pytest.mark.parametrize("model", list(MODELS))
def test_dry_rehearsal_exports_loadable_weights(dry_out: Path, model: str) -> None:
    channels, scale = MODELS[model]
    folder = dry_out / model
    weights = folder / "ema.safetensors"
    assert 0 < weights.stat().st_size <= MAX_BYTES
    assert (folder / "log.csv").read_text().count("\n") >= 2
    run = json.loads((folder / "config.json").read_text())["config"]
    assert run["data"]["device_degrade"] is True and run["data"]["degradation"] == "blind"
    assert run["train"]["steps"] == 2 and run["train"]["device"] == "cpu"  # the dry overrides
    up = load(folder)
    assert (up.scale, up.channels) == (scale, channels)
    sr = up.upscale(_fixture_lr(channels), samples=1).image
    assert sr.shape == (16 * scale, 16 * scale, channels) and np.isfinite(sr).all()
    assert "torch " in (dry_out / "env.txt").read_text()
