"""Exporting trained checkpoints as shipped models (ldsr/assets/models/<name>/), loading them by name, portable
configs, and model cards rendered from evaluation summaries."""

from __future__ import annotations

import json
import re
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
from ldsr.pipeline.export import CardResult, card_result, export_model, portable, read_summary, render_card

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
    assert not _absolute_paths(info) and not _absolute_paths({k: _json_or(v) for k, v in meta.items()})
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
    assert up.upscale(_lr(8, 8), std=True).samples.shape == (2, 32, 32, 1)  # the draws come with their spread
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


def _json_or(v: str) -> object:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def _absolute_paths(value: object) -> list[str]:
    if isinstance(value, dict):
        return [p for v in value.values() for p in _absolute_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _absolute_paths(v)]
    return [value] if isinstance(value, str) and (value.startswith("/") or value[1:3] == ":\\") else []


def test_portable_paths() -> None:
    cfg = {"a": "/work/main/runs/x", "b": ["/work/shared/data/mri", "rel/p"], "c": 3, "d": {"e": "/work/main"}}
    assert portable(cfg, "/work/main") == {"a": "runs/x", "b": ["../shared/data/mri", "rel/p"], "c": 3, "d": {"e": "."}}


SUMMARY_MD = ROOT / "docs" / "figures" / "mri_bsrgan" / "summary_1x8.md"


def _md_cells(path: Path, method: str) -> list[str]:
    """The cells of `method`'s row, read independently of ldsr's parser."""
    (line,) = [x for x in path.read_text().splitlines() if x.startswith(f"| {method} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_card_results_equal_the_stored_summary() -> None:
    """The shipped mri-x4 card rendered from a stored evaluate summary quotes exactly the summary's numbers."""
    res = card_result("Test", SUMMARY_MD, {"mri-x4": "mri-x4", "bicubic": "bicubic", "SRCNN": "srcnn_x4_bsrgan"})
    card = render_card(ldsr.pipeline.shipped_models()["mri-x4"], notes={"note": "n"}, results=[res])
    (line,) = [x for x in card.splitlines() if x.startswith("- Test, ")]
    assert "50 images" in line and "1 step x mean of 8 draws, 8 evaluations" in line
    found = re.findall(r"(mri-x4|bicubic|SRCNN) ([\d.]+)(?: dB)? / ([\d.]+)", line)
    quoted = {label: (psnr, ssim) for label, psnr, ssim in found}
    for label, method in (("mri-x4", "mri-x4"), ("bicubic", "bicubic"), ("SRCNN", "srcnn_x4_bsrgan")):
        cells = _md_cells(SUMMARY_MD, method)
        assert quoted[label] == (cells[2], cells[3]), (label, quoted[label], cells)
    # A summary row of another model (other parameter count) is refused: it is not this model's result.
    wrong = card_result("Wrong", SUMMARY_MD, {"mri-x4": "mri_x4"})  # the 398K-parameter tiny-UNet run
    with pytest.raises(ValueError, match="not this model"):
        render_card(ldsr.pipeline.shipped_models()["mri-x4"], results=[wrong])
    with pytest.raises(ValueError, match="no row for"):
        card_result("Missing", SUMMARY_MD, {"x": "no-such-method"})


def test_summary_json_and_md_read_alike(tmp_path: Path) -> None:
    summary = {
        "provenance": {"n_images": 7, "seed": 0},
        "methods": [
            {"method": "m", "psnr_y": 27.0912, "ssim_y": 0.75987, "params": 2970159, "steps": 1, "nfe": 8,
             "draws": 8, "kind": "latent"},
            {"method": "bicubic", "psnr_y": 26.1234, "ssim_y": 0.65811, "params": 0, "steps": None, "nfe": 0,
             "draws": 1},
        ],
    }  # fmt: skip
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    prov, rows = read_summary(tmp_path / "summary.json")
    assert prov["n_images"] == 7 and rows["m"].psnr_y == 27.0912 and rows["bicubic"].steps is None
    line = CardResult("T", "s.json", 7, (("model", rows["m"]), ("bicubic", rows["bicubic"]))).line()
    assert "model 27.09 dB / 0.7599 (1 step x mean of 8 draws, 8 evaluations); bicubic 26.12 / 0.6581" in line
    prov, md = read_summary(SUMMARY_MD)
    assert prov["n_images"] == 50 and md["mri-x4"].params == pytest.approx(2.97e6)
    assert (md["mri-x4"].steps, md["mri-x4"].nfe, md["mri-x4"].draws) == (1, 8, 8) and md["bicubic"].steps is None
