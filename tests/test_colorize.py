"""Colorization models (ldsr.models.colorize), `ldsr train colorize`, `ldsr colorize` and
`ldsr evaluate-colorization` on the bundled H&E fixtures (fixtures/histology) and grey fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ldsr.cli import app
from ldsr.data.color import colorization_datasets, gray_to_l, rgb_to_gray, rgb_to_lab
from ldsr.data.config import DataConfig
from ldsr.io import read_image
from ldsr.models.colorize import (
    ClassificationColorizer,
    ColorizeConfig,
    ConstantChroma,
    ModelColorizer,
    build_model,
    colorize_image,
    lab_target,
)

ROOT = Path(__file__).resolve().parents[1]
HISTO = ROOT / "fixtures" / "histology"
BAD = ROOT / "fixtures" / "bad"


def _batch(n: int = 4, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random crops of the H&E fixtures as the colorization dataset yields them."""
    ds, _ = colorization_datasets(DataConfig(train=[str(HISTO)], split="all", hr_size=size, val_count=0), seed=seed)
    items = [ds[k] for k in range(n)]
    return {"hr": torch.stack([i["hr"] for i in items]), "lr": torch.stack([i["lr"] for i in items])}


def test_dataset_mode_yields_colour_and_its_grey() -> None:
    b = _batch(2)
    assert b["hr"].shape == (2, 3, 32, 32) and b["lr"].shape == (2, 1, 32, 32)
    lum_hr = rgb_to_lab((b["hr"].double() + 1) / 2, axis=1)[:, 0]
    lum_lr = gray_to_l((b["lr"][:, 0].double() + 1) / 2)
    assert (lum_hr - lum_lr).abs().max() < 1e-3  # float32 storage of the grey
    assert lab_target(b["hr"])[1].abs().max() <= 1.0  # H&E chroma within ab / AB_SCALE in [-1, 1]


@pytest.mark.parametrize("method", ["regression", "classification", "gan", "diffusion"])
def test_training_lowers_the_loss_on_histology(method: str) -> None:
    """Each method's loss on fixed held-out H&E crops falls after a few Adam steps on other crops."""
    torch.manual_seed(0)
    cfg = ColorizeConfig(method=method, space="pixel", unet="tiny", timesteps=100)  # type: ignore[arg-type]
    model = build_model(cfg)
    train, held = _batch(4, seed=1), _batch(4, seed=2)
    gen_params = [p for n, p in model.named_parameters() if not n.startswith("discriminator.")]
    opt = torch.optim.Adam(gen_params, lr=2e-3)

    def held_loss() -> float:
        g = torch.Generator().manual_seed(0)
        kw = {"generator": g} if method == "diffusion" else {}
        with torch.no_grad():
            if method == "gan":  # the generator's L1 (its adversarial term moves with the discriminator)
                return model.training_loss(held)[1]["l1"]
            return float(model.training_loss(held, **kw)[0])

    before = held_loss()
    for _ in range(12):
        loss, _ = model.training_loss(train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_loss() < 0.9 * before


def test_regression_colours_histology_better_than_grey() -> None:
    """A regression colorizer trained for a few seconds on H&E crops colours held-out crops closer to the
    truth (CIEDE2000) than the grey input, and its colours depend on the input (not a constant)."""
    torch.manual_seed(0)
    model = build_model(ColorizeConfig(method="regression", unet="tiny"))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(25):
        loss, _ = model.training_loss(_batch(4, seed=10 + step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    held = _batch(2, size=64, seed=99)
    colour = model.predict(held)  # (N, 3, H, W) in [-1, 1]
    to_np = lambda t: np.moveaxis(((t.double() + 1) / 2).numpy(), 0, -1)  # noqa: E731
    from ldsr.evaluation.colorization import delta_e_map

    for i in range(2):
        ref, out = to_np(held["hr"][i]), to_np(colour[i])
        grey = np.repeat(rgb_to_gray(ref)[..., None], 3, axis=2)
        assert delta_e_map(out, ref).mean() < 0.8 * delta_e_map(grey, ref).mean()
    ab = rgb_to_lab((colour.double() + 1) / 2, axis=1)[:, 1:]
    assert ab.std(dim=(2, 3)).mean() > 0.05  # spatially varying chroma


def test_classification_soft_encoding_and_annealed_mean() -> None:
    model = ClassificationColorizer(ColorizeConfig(method="classification", unet="tiny"))
    ab = torch.tensor([[[[3.0, 40.0]], [[-7.0, 12.0]]]])  # (1, 2, 1, 2): two pixels
    soft, nearest = model.soft_encode(ab)
    assert soft.shape == (1, len(model.centres), 1, 2)
    torch.testing.assert_close(soft.sum(1), torch.ones(1, 1, 2))
    assert int((soft[0, :, 0, 0] > 0).sum()) == 5
    torch.testing.assert_close(model.centres[nearest[0, 0, 0]], torch.tensor([0.0, -10.0]))
    # annealed mean: a one-hot distribution decodes to its centre at any temperature
    logits = torch.full((1, len(model.centres), 1, 1), -1e4)
    k = int(nearest[0, 0, 1])
    logits[0, k] = 0.0
    p = torch.softmax(logits / model.cfg.temperature, dim=1)
    torch.testing.assert_close(torch.einsum("nqhw,qc->nc", p, model.centres)[0], model.centres[k])
    # counting the training chroma makes the common bins weigh less
    model.train()
    model.training_loss(_batch(2))
    w = model.class_weights()
    seen = model.counts > 0
    assert w[seen].mean() < w[~seen].mean()


@pytest.mark.parametrize("method", ["regression", "classification", "gan", "diffusion"])
def test_every_method_keeps_the_input_luminance(method: str) -> None:
    """Arbitrary sizes (padding), several samples: L* of every output equals the grey's (float64)."""
    torch.manual_seed(0)
    model = build_model(ColorizeConfig(method=method, space="pixel", unet="tiny", timesteps=50, steps=2))  # type: ignore[arg-type]
    gray = np.random.default_rng(0).integers(0, 65536, (21, 30)) / 65535.0
    res = colorize_image(ModelColorizer(model, method), gray, samples=2, seed=3)
    assert res.images.shape == (2, 21, 30, 3)
    for img in res.images:
        assert np.abs(rgb_to_lab(img)[..., 0] - gray_to_l(gray)).max() < 1e-9
    assert res.spread is not None and res.spread.shape == (21, 30)
    if method == "diffusion":  # two draws, two colourings
        assert res.spread.mean() > 0.1
    else:
        assert res.spread.max() < 1e-9


def test_latent_diffusion_on_an_rgb_autoencoder() -> None:
    from ldsr.models.autoencoder import AutoencoderConfig
    from ldsr.models.autoencoder import build_model as build_ae

    ae = build_ae(AutoencoderConfig(kind="vae", preset="tiny", factor=4, latent_channels=3), 3)
    model = build_model(ColorizeConfig(unet="tiny", timesteps=50, steps=2), autoencoder=ae)
    assert model.multiple == 8
    loss, _ = model.training_loss(_batch(2))
    loss.backward()
    assert all(p.grad is None for p in model.autoencoder.parameters())  # frozen
    out = model.predict(_batch(1))
    assert out.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="autoencoder"):
        build_model(ColorizeConfig(unet="tiny"))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="colorize.method"):
        ColorizeConfig(method="paint").validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="colorize.rebalance"):
        ColorizeConfig(rebalance=1.5).validate()


# ----------------------------------------------------------------------------------------------------------
# the commands


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`ldsr train colorize` on the fixtures: 4 steps of the tiny pixel diffusion colorizer."""
    run = tmp_path_factory.mktemp("colorize") / "run"
    res = CliRunner().invoke(app, ["train", "colorize", "-c", str(ROOT / "configs" / "colorize_tiny.yaml"),
                                   f"train.run_dir={run}"])  # fmt: skip
    assert res.exit_code == 0, res.output
    log = (run / "log.csv").read_text().splitlines()
    assert len(log) == 5 and "val_psnr" in log[0]
    return run


def test_train_cli_refuses_a_grey_run(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["train", "colorize", "-c", str(ROOT / "configs" / "colorize_tiny.yaml"),
                                   "channels=1", f"train.run_dir={tmp_path}"])  # fmt: skip
    assert res.exit_code != 0 and "channels: 3" in res.output


def test_colorize_cli_folder_with_bad_files(tiny_run: Path, tmp_path: Path) -> None:
    """8- and 16-bit grey and an RGB file are colorized (L* kept); corrupt, too small and NaN files each get
    one line naming them, the others are still written, exit code 1."""
    from ldsr.io import write_image

    src = tmp_path / "in"
    src.mkdir()
    crop = lambda p: read_image(p)[0][20:68, 30:70]  # noqa: E731  # 48x40 crops keep the test fast
    write_image(src / "grey8.png", crop(ROOT / "fixtures" / "mri" / "colin27_z141.png"), bit_depth=8)
    write_image(src / "grey16.png", crop(ROOT / "fixtures" / "png16" / "mri16.png"), bit_depth=16)
    write_image(src / "colour.png", crop(HISTO / "cmu1sr_y2700_x0900.png"), bit_depth=8)
    for name in ("truncated.png", "tiny_4x4.png", "all_nan.tif"):
        shutil.copy(BAD / name, src / name)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["colorize", "-i", str(src), "-o", str(out), "-m", str(tiny_run), "--samples", "2",
                                   "--steps", "2", "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 1, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    for name, reason in (("truncated.png", "corrupt"), ("tiny_4x4.png", "4x4"), ("all_nan.tif", "NaN")):
        assert any(name in e and reason in e for e in errors), errors
    assert "colour.png: colour input converted to grey" in res.output
    for stem, bits in (("grey8", 8), ("grey16", 16), ("colour", 8)):
        grey, _ = read_image(src / f"{stem}.png")
        g = grey[..., 0] if grey.shape[2] == 1 else rgb_to_gray(grey.astype(np.float64))
        outs = [read_image(out / f"{stem}_s{k}.png") for k in range(2)]
        assert all(m.bit_depth == bits and a.shape[2] == 3 for a, m in outs)
        # written files: L* equal up to the file's quantisation (one 16-bit code; half an 8-bit code)
        tol = 0.01 if bits == 16 else 0.5
        for a, _ in outs:
            assert np.abs(rgb_to_lab(a.astype(np.float64))[..., 0] - gray_to_l(g)).max() < tol
        assert (out / f"{stem}_spread.png").is_file()
        assert not np.array_equal(outs[0][0], outs[1][0])  # two draws, two colourings


def test_colorize_cli_single_file_and_bad_model(tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    res = CliRunner().invoke(app, ["colorize", "-i", str(ROOT / "fixtures" / "png16" / "mri16.png"), "-o", str(out),
                                   "-m", "chroma:20,-10"])  # fmt: skip
    assert res.exit_code == 0, res.output
    img, meta = read_image(out)
    assert meta.bit_depth == 16
    lab = rgb_to_lab(img.astype(np.float64))
    assert np.median(lab[..., 1]) == pytest.approx(20, abs=0.5)
    res = CliRunner().invoke(app, ["colorize", "-i", str(HISTO), "-o", str(tmp_path), "-m", str(tmp_path / "none")])
    assert res.exit_code == 2 and "no such checkpoint" in res.output


def test_evaluate_colorization_cli(tiny_run: Path, tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("cmu1sr_y2700_x0900.png", "kather2016_86_label_5_150.png"):
        shutil.copy(HISTO / name, refs / name)
    shutil.copy(BAD / "text.png", refs / "text.png")
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["evaluate-colorization", "-i", str(refs), "-o", str(out), "-m", "gray",
                                   "-m", "mean=chroma:18,-12", "-m", f"tiny={tiny_run}", "--steps", "2",
                                   "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 1, res.output  # text.png fails with one line; the two references are measured
    assert sum("text.png" in line for line in res.output.splitlines() if line.startswith("error:")) == 1
    import json

    summary = json.loads((out / "summary.json").read_text())["methods"]
    assert set(summary) == {"gray", "mean", "tiny"}
    for m in summary.values():
        assert m["images"] == 2 and m["luminance_max_err"] < 1e-9
    assert summary["gray"]["colourfulness_ratio"] == 0.0
    # H&E is pink: a constant pinkish chroma is closer to the truth than grey
    assert summary["mean"]["delta_e2000"] < summary["gray"]["delta_e2000"]
    assert summary["tiny"]["params"] > 0 and summary["gray"]["params"] == 0
    assert (out / "grid.png").is_file() and (out / "results.csv").read_text().count("\n") == 7
    assert isinstance(ConstantChroma((0, 0), "gray").chroma_array(np.zeros((2, 2)), 1, None, 0), np.ndarray)


def test_latent_colorizer_on_the_shipped_autoencoder(tmp_path: Path) -> None:
    """`colorize.autoencoder` may name a latent SR checkpoint (the shipped histology-x4): the run's checkpoint
    carries the autoencoder's config and weights, so `ldsr colorize` rebuilds it from the checkpoint alone."""
    import json

    from ldsr.models.checkpoint import resolve_checkpoint

    ae = ROOT / "src" / "ldsr" / "assets" / "models" / "histology-x4"
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "colorize", "-c", str(ROOT / "configs" / "colorize_tiny.yaml"),
                                   "colorize.space=latent", f"colorize.autoencoder={ae}", "train.steps=1",
                                   "data.val_count=0", f"train.run_dir={run}"])  # fmt: skip
    assert res.exit_code == 0, res.output
    info = json.loads((resolve_checkpoint(run) / "config.json").read_text())
    assert info["config"]["autoencoder"]["kind"] in ("vae", "vqvae")
    out = tmp_path / "c.png"
    res = CliRunner().invoke(app, ["colorize", "-i", str(ROOT / "fixtures" / "png16" / "mri16.png"), "-o", str(out),
                                   "-m", str(run), "--steps", "1", "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    img, meta = read_image(out)
    grey, _ = read_image(ROOT / "fixtures" / "png16" / "mri16.png")
    assert meta.bit_depth == 16 and img.shape == (96, 96, 3)
    assert np.abs(rgb_to_lab(img.astype(np.float64))[..., 0] - gray_to_l(grey[..., 0].astype(np.float64))).max() < 0.01


def test_shipped_histology_colorize_on_held_out_fixtures(tmp_path: Path) -> None:
    """The shipped model (loaded by name) on the bundled held-out H&E tiles (CMU-1 y >= 2400, Kather index >= 80):
    L* kept, chroma that varies with the tissue (a constant colouring fails), closer to the reference than the
    training split's mean chroma (ΔE2000) on every tile."""
    from ldsr.evaluation.colorization import evaluate_colorization
    from ldsr.models.colorize import load_colorizer

    refs = sorted(HISTO.glob("*.png"))
    methods = {"model": load_colorizer("histology-colorize"), "mean": load_colorizer("chroma:23.574,-10.839")}
    report = evaluate_colorization(refs, methods, tmp_path, seed=0, grid_count=0, save_images=True)
    assert not report.failures
    de = {(r["image"], r["method"]): r["delta_e2000"] for r in report.rows}
    for ref in refs:
        assert de[(ref.name, "model")] < de[(ref.name, "mean")], ref.name
        out, _ = read_image(tmp_path / "model" / ref.name)
        ab = rgb_to_lab(out.astype(np.float64))[..., 1:]  # (H, W, 2)
        assert ab.reshape(-1, 2).std(axis=0).min() > 2.0  # not one colour everywhere
    assert report.summary["model"]["luminance_max_err"] < 1e-6
