"""`ldsr evaluate` end to end on small fixture crops: files, numbers equal to direct metric calls, provenance."""

from __future__ import annotations

import csv
import dataclasses
import json
import runpy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ldsr.data.degrade import center_crop
from ldsr.data.resize import imresize
from ldsr.evaluation import metrics as M
from ldsr.io import read_image, write_image

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GREY = ["mri/figshare_0_1840.jpg", "mri/colin27_z141.png", "mri/figshare_1_0708.jpg"]
RGB = ["histology/cmu1sr_y2700_x0900.png", "histology/kather2016_86_label_5_150.png"]
PROVENANCE_KEYS = ["gt_dir", "n_images", "lr_source", "scale", "metric_channels", "crop_border", "data_range",
                   "ssim", "ssim_k1", "ssim_k2", "sampler", "steps", "samples", "ldsr_version", "device", "date",
                   "command"]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# inputs


def _crops(tmp: Path, names: list[str], size: int) -> Path:
    gt = tmp / "gt"
    for name in names:
        img, _ = read_image(FIXTURES / name)
        write_image(gt / (Path(name).stem + ".png"), center_crop(img, size), bit_depth=8)
    return gt


@pytest.fixture
def srcnn_run(tmp_path: Path) -> Path:
    """A run dir with a 30-step SRCNN checkpoint (x4, grey) and the log.csv a training run writes."""
    from ldsr.config import config_from_dict, to_dict
    from ldsr.data.tensor import to_tensor
    from ldsr.models.baselines import BaselineConfig, build_model
    from ldsr.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = to_dict(config_from_dict({"task": "baseline", "channels": 1, "scale": 4, "baseline": {"arch": "srcnn"}}))
    model = build_model(BaselineConfig(**cfg["baseline"]), 1, 4)
    img, _ = read_image(FIXTURES / "mri" / "figshare_2_2740.jpg")
    hr = to_tensor(center_crop(img, 64))
    lr = to_tensor(imresize(center_crop(img, 64), 0.25).clip(0, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run = tmp_path / "runs" / "srcnn_tiny"
    rows = ["step,loss,lr"]
    for step in range(1, 31):
        loss, _ = model.training_loss({"hr": hr, "lr": lr})
        opt.zero_grad()
        loss.backward()
        opt.step()
        rows.append(f"{step},{loss.item():.6g},0.001")
    run.mkdir(parents=True)
    (run / "log.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    save_checkpoint(run / "checkpoints" / "step_000030", model=model, ema=None, config=cfg, step=30)
    return run


def _read_results(path: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = dict(line[2:].split(": ", 1) for line in lines if line.startswith("# "))
    return header, list(csv.DictReader(line for line in lines if not line.startswith("# ")))


def _direct(sr_file: Path, gt_file: Path, scale: int) -> dict[str, float]:
    sr, _ = read_image(sr_file)
    gt, _ = read_image(gt_file)
    p, g = M.quantize(sr, 8).astype(float), M.quantize(gt, 8).astype(float)
    kw: dict[str, Any] = {"data_range": 255.0, "crop_border": scale}
    return {"psnr_y": M.psnr(p, g, y_channel=True, **kw), "ssim_y": M.ssim(p, g, y_channel=True, **kw),
            "psnr_rgb": M.psnr(p, g, **kw), "ssim_rgb": M.ssim(p, g, **kw)}  # fmt: skip


def _invoke(*args: str) -> Any:
    from ldsr.cli import app

    return CliRunner().invoke(app, ["evaluate", *args])


# ----------------------------------------------------------------------------------------------------------
# tests


def test_evaluate_grey_end_to_end(tmp_path: Path, srcnn_run: Path) -> None:
    gt = _crops(tmp_path, GREY, 64)
    out = tmp_path / "report"
    ckpt = srcnn_run / "checkpoints" / "step_000030"
    res = _invoke("--gt", str(gt), "--preset", "bicubic", "--seed", "3", "--scale", "4", "--model", "bicubic",
                  "--model", str(ckpt), "--out", str(out), "--heatmaps", "2")  # fmt: skip
    assert res.exit_code == 0, res.output

    header, rows = _read_results(out / "results.csv")
    assert sorted({r["method"] for r in rows}) == ["bicubic", "srcnn_tiny"]
    assert len(rows) == 6
    for r in rows:  # the table's numbers are those of the saved SR files against the GT
        sr_file = out / r["sr_path"]
        assert sr_file.is_file() and read_image(sr_file)[1].bit_depth == 8
        direct = _direct(sr_file, gt / r["image"], 4)
        for key, value in direct.items():
            assert float(r[key]) == pytest.approx(value, abs=1e-9), (r["method"], r["image"], key)
        assert direct["psnr_y"] == direct["psnr_rgb"]  # grey: Y is the single channel
        g, _ = read_image(gt / r["image"])  # LR of the bicubic preset: clip(imresize(HR, 1/4)) on the 8-bit grid
        lr = M.quantize(np.clip(imresize(g, 0.25), 0, 1), 8) / 255.0
        back = np.clip(imresize(read_image(sr_file)[0].astype(np.float64), 0.25), 0, 1)
        assert float(r["lr_psnr"]) == pytest.approx(M.psnr(back, lr, data_range=1.0), rel=1e-6)
        assert float(r["seconds"]) > 0

    doc = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    by_name = {m["method"]: m for m in doc["methods"]}
    for name, m in by_name.items():
        mine = [float(r["psnr_y"]) for r in rows if r["method"] == name]
        assert m["psnr_y"] == pytest.approx(np.mean(mine), abs=1e-9)
        assert m["n_images"] == 3 and m["device"] == "cpu" and m["peak_mb"] >= 0
    assert by_name["bicubic"]["params"] == 0 and by_name["bicubic"]["nfe"] == 0
    assert by_name["srcnn_tiny"]["params"] == 8129 and by_name["srcnn_tiny"]["nfe"] == 1  # SRCNN 9-1-5, C=1
    assert by_name["bicubic"]["steps"] is None
    compare = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "paired_compare.py"))
    res = compare["read_results"](out / "results.csv")  # the paired comparison reads this file as written
    mean, _, _, n = compare["paired"](res["srcnn_tiny"], res["bicubic"], "psnr_y")
    assert n == 3 and mean == pytest.approx(by_name["srcnn_tiny"]["psnr_y"] - by_name["bicubic"]["psnr_y"], abs=1e-9)

    prov = doc["provenance"]
    md = (out / "summary.md").read_text(encoding="utf-8")
    for key in PROVENANCE_KEYS:
        assert key in prov and key in header and f"- {key}: " in md, key
    assert prov["n_images"] == 3 and prov["scale"] == 4 and prov["data_range"] == 255.0
    assert "preset bicubic, seed 3" in prov["lr_source"] and "--seed 3" in prov["command"]
    assert "| Method | Steps (NFE) | PSNR Y | SSIM Y | Params |" in md and "| srcnn_tiny |" in md

    stems = [Path(n).stem for n in GREY]
    for stem in stems:
        assert (out / f"comparison_{stem}.png").stat().st_size > 1000
    heat = sorted(p.name for p in out.glob("ssim_*.png"))
    assert len(heat) == 4 and f"ssim_srcnn_tiny_{sorted(stems)[0]}.png" in heat
    for fig in ("loss_curves.png", "time_memory.png", "params_vs_psnr.png"):
        assert (out / fig).stat().st_size > 1000, fig


def test_evaluate_rgb_paired_with_bad_file(tmp_path: Path) -> None:
    gt = _crops(tmp_path, RGB, 48)
    _crops(tmp_path, GREY[:1], 48)  # a grey image among colour ones: reported, not measured
    lr_dir = tmp_path / "lr"
    for p in sorted(gt.iterdir()):
        img, _ = read_image(p)
        write_image(lr_dir / p.name, np.clip(imresize(img, 0.25), 0, 1), bit_depth=8)
    (gt / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "report"
    res = _invoke("--gt", str(gt), "--lr", str(lr_dir), "--model", "bicubic", "--model", "bicubic", "--out", str(out))
    assert res.exit_code == 1, res.output
    assert "broken.png" in res.output and "evaluate grey and colour images in separate runs" in res.output

    header, rows = _read_results(out / "results.csv")
    assert sorted({r["method"] for r in rows}) == ["bicubic", "bicubic-2"] and len(rows) == 4
    for r in rows:
        direct = _direct(out / r["sr_path"], gt / r["image"], 4)
        assert float(r["psnr_rgb"]) == pytest.approx(direct["psnr_rgb"], abs=1e-9)
        assert float(r["ssim_y"]) == pytest.approx(direct["ssim_y"], abs=1e-9)
        assert direct["psnr_y"] != direct["psnr_rgb"]
        assert 15 < float(r["lr_psnr"]) < 60
    assert header["lr_source"].startswith("dir ") and header["n_images"] == "2"
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "## Failed" in md and "broken.png" in md
    assert "loss_curves.png not written" in md and not (out / "loss_curves.png").exists()
    failed = [f["name"] for f in json.loads((out / "summary.json").read_text(encoding="utf-8"))["failures"]]
    assert failed == ["broken.png", "figshare_0_1840.png"]


def test_diffusion_seeds_mean_and_std(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ldsr import pipeline
    from ldsr.evaluation.report import EvalConfig, evaluate

    seen: list[int] = []

    class FakeDiffusion:  # a seeded "sampler": bicubic plus seed-dependent noise
        name, kind, scale, channels, n_params = "ldm", "latent", 4, 1, 1234

        def nfe(self, steps: int | None = None, sampler: str | None = None) -> int:
            return 2 * int(steps or 0)

        def upscale(self, lr: np.ndarray, **kw: Any) -> pipeline.UpscaleResult:
            assert kw["sampler"] == "ddim" and kw["steps"] == 7
            seen.append(kw["seed"])
            noise = np.random.default_rng(kw["seed"]).normal(0, 0.02, (lr.shape[0] * 4, lr.shape[1] * 4, 1))
            return pipeline.UpscaleResult(np.clip(imresize(lr, 4) + noise, 0, 1).astype(np.float32), None, None)

    monkeypatch.setattr(pipeline, "load", lambda *a, **k: FakeDiffusion())
    monkeypatch.setattr(pipeline, "shipped_models", lambda: {"ldm": tmp_path / "models" / "ldm"})
    gt = _crops(tmp_path, GREY[:2], 48)
    cfg = EvalConfig(gt_dir=gt, models=("ldm",), out_dir=tmp_path / "r", preset="bicubic", seed=10, sampler="ddim",
                     steps=7, samples=3, heatmaps=0)  # fmt: skip
    report = evaluate(cfg)
    assert report.exit_code == 0
    assert seen == [10] + [10, 11, 12] * 2  # warm-up, then seeds seed + k per image
    (s,) = report.summary
    assert s["steps"] == 7 and s["nfe"] == 14 and s["samples"] == 3 and s["sampler"] == "ddim"
    per_seed = np.array(report.runs[0].per_seed)  # [image][seed]
    assert s["psnr_y"] == pytest.approx(per_seed.mean())
    assert s["psnr_y_std"] == pytest.approx(per_seed.mean(axis=0).std()) and s["psnr_y_std"] > 0
    assert s["draws"] == 1  # the model's default (FakeDiffusion has no sr.samples)
    # --draws N: each SR image averages N draws; the NFE counts every draw.
    draws: list[object] = []
    monkeypatch.setattr(
        FakeDiffusion,
        "upscale",
        lambda self, lr, **kw: (
            draws.append(kw["samples"]) or pipeline.UpscaleResult(np.clip(imresize(lr, 4), 0, 1).astype(np.float32))
        ),
    )
    (s4,) = evaluate(dataclasses.replace(cfg, samples=1, draws=4, out_dir=tmp_path / "r4")).summary
    assert set(draws) == {4} and s4["draws"] == 4 and s4["nfe"] == 4 * 14
    assert "7 (56), mean of 4" in (tmp_path / "r4" / "summary.md").read_text()
    assert all(r.psnr_y_std > 0 for r in report.runs[0].rows)
    assert len(list((tmp_path / "r" / "sr" / "ldm").rglob("*.png"))) == 6  # seed 10 + seed_11/ + seed_12/
    assert " ± " in (tmp_path / "r" / "summary.md").read_text(encoding="utf-8")


def test_user_errors_and_names(tmp_path: Path) -> None:
    from ldsr.evaluation.report import PeakMemory, method_names

    gt = _crops(tmp_path, GREY[:1], 32)
    res = _invoke("--gt", str(gt), "--lr", str(gt), "--preset", "light", "--model", "bicubic", "--out", str(tmp_path))
    assert res.exit_code == 2 and "either --lr or --preset" in res.output
    res = _invoke("--gt", str(tmp_path / "nope"), "--model", "bicubic", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "not a folder" in res.output
    res = _invoke("--gt", str(gt), "--model", str(tmp_path / "missing" / "ckpt"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "no such checkpoint" in res.output

    run = tmp_path / "myrun" / "checkpoints" / "step_000010"
    run.mkdir(parents=True)
    assert method_names(["bicubic", str(run), "bicubic", "x4-mri"]) == ["bicubic", "myrun", "bicubic-2", "x4-mri"]

    with PeakMemory("cpu") as mem:
        with mem.track():
            block = np.ones(60 * 2**20, dtype=np.uint8)  # 60 MiB touched, alive when the section ends
        del block
        untracked = np.ones(200 * 2**20, dtype=np.uint8)  # outside track(): not counted
        del untracked
    assert 40 < mem.mb < 150


def test_sixteen_bit_gt_is_measured_on_its_grid(tmp_path: Path) -> None:
    from ldsr.evaluation.report import EvalConfig, evaluate

    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "mri16.png").write_bytes((FIXTURES / "png16" / "mri16.png").read_bytes())
    report = evaluate(EvalConfig(gt_dir=gt, models=("bicubic",), out_dir=tmp_path / "r", preset="light", seed=1,
                                 heatmaps=1))  # fmt: skip
    assert report.exit_code == 0
    (row,) = report.runs[0].rows
    sr, meta = read_image(tmp_path / "r" / row.sr_path)
    assert meta.bit_depth == 16 and row.data_range == 65535.0
    g, _ = read_image(gt / "mri16.png")
    p, q = M.quantize(sr, 16).astype(float), M.quantize(g, 16).astype(float)
    assert row.psnr_y == pytest.approx(M.psnr(p, q, data_range=65535.0, crop_border=4), abs=1e-9)
    assert row.ssim_rgb == pytest.approx(M.ssim(p, q, data_range=65535.0, crop_border=4), abs=1e-12)
    assert (tmp_path / "r" / "ssim_bicubic_mri16.png").is_file()


class _ModalFake:
    """A diffusion 'model' with both output modes: its draws are bicubic plus seeded noise of `sigma`;
    faithful returns their mean, sharp the first; every call records its keyword arguments."""

    name, kind, scale, channels, n_params = "ldm", "latent", 4, None, 99
    default_sampler, default_steps, default_samples, sharp_steps = "ddim", 2, 3, 5
    sigma = 0.03
    calls: list[dict[str, Any]] = []

    def nfe(self, steps: int | None = None, sampler: str | None = None) -> int:
        return int(steps or 0)

    def upscale(self, lr: np.ndarray, **kw: Any) -> Any:
        from ldsr import pipeline

        self.calls.append(kw)
        sharp = kw["mode"] == "sharp"
        n = kw["samples"] or (4 if sharp else self.default_samples)
        up = imresize(lr, 4)
        rng = np.random.default_rng(kw["seed"])
        draws = np.clip(up[None] + rng.normal(0, self.sigma, (n, *up.shape)), 0, 1).astype(np.float32)
        image = draws[0] if sharp else draws.mean(axis=0)
        return pipeline.UpscaleResult(image, draws, draws.std(axis=0), is_sample=sharp, mode=kw["mode"])


def _direct_calibration(sr_file: Path, gt_file: Path, draws: np.ndarray) -> float:
    """Calibration from the saved SR file: |Y(SR) - Y(GT)| > 3 std over draws of Y, 8-bit grid, crop 4."""
    sr, _ = read_image(sr_file)
    gt, _ = read_image(gt_file)
    y = lambda a: M.rgb_to_y(np.asarray(a, dtype=float), data_range=255.0)  # noqa: E731
    p, g = y(M.quantize(sr, 8)), y(M.quantize(gt, 8))
    spread = np.std([y(M.quantize(d, 8)) for d in draws], axis=0)
    return float(M.calibration_map(p, g, spread, data_range=255.0, crop_border=4).mean())


def test_both_modes_of_a_model_in_one_run_with_calibration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ldsr import pipeline
    from ldsr.evaluation import report as report_module

    monkeypatch.setattr(report_module, "_figures", lambda *a, **k: None)  # seconds of matplotlib: test_demo's
    real_load = pipeline.load
    monkeypatch.setattr(pipeline, "load", lambda src, **k: real_load(src, **k) if src == "bicubic" else _ModalFake())
    monkeypatch.setattr(pipeline, "shipped_models", lambda: {"ldm": tmp_path / "models" / "ldm"})
    monkeypatch.setattr(_ModalFake, "calls", [])
    gt = _crops(tmp_path, RGB, 48)
    out = tmp_path / "r"
    res = _invoke("--gt", str(gt), "--preset", "bicubic", "-m", "bicubic", "-m", "ldm", "-m", "ldm:sharp",
                  "-m", "ldm:faithful", "--out", str(out), "--heatmaps", "1")  # fmt: skip
    assert res.exit_code == 0, res.output
    modes = [c["mode"] for c in _ModalFake.calls]
    assert modes == ["faithful"] * 3 + ["sharp"] * 3 + ["faithful"] * 3  # warm-up + 2 images per method
    assert all(c["std"] is True and c["samples"] is None and c["steps"] is None for c in _ModalFake.calls)

    doc = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    by_name = {m["method"]: m for m in doc["methods"]}
    assert list(by_name) == ["bicubic", "ldm", "ldm (sharp)", "ldm (faithful)"]
    assert by_name["bicubic"]["mode"] is None and by_name["bicubic"]["calibration"] is None
    assert by_name["ldm"]["mode"] == by_name["ldm (faithful)"]["mode"] == "faithful"
    sharp = by_name["ldm (sharp)"]
    assert sharp["mode"] == "sharp" and sharp["steps"] == 5 and sharp["draws"] == 4 and sharp["nfe"] == 20
    assert by_name["ldm"]["steps"] == 2 and by_name["ldm"]["draws"] == 3 and by_name["ldm"]["nfe"] == 6
    for key in ("psnr_y", "ssim_y", "lr_psnr", "peak_mb", "seconds_per_image"):  # old keys are all still there
        assert key in sharp

    _, rows = _read_results(out / "results.csv")
    assert {r["method"]: r["sr_path"].split("/")[1] for r in rows} == {
        "bicubic": "bicubic", "ldm": "ldm", "ldm (sharp)": "ldm_sharp", "ldm (faithful)": "ldm_faithful"}  # fmt: skip
    for r in rows:
        if r["method"] == "bicubic":
            assert r["mode"] == "" and r["calibration"] == "nan"
            continue
        sharp_row = r["method"] == "ldm (sharp)"
        assert r["mode"] == ("sharp" if sharp_row else "faithful")
        case_gt, _ = read_image(gt / r["image"])  # the draws the fake made for this image (seed 0)
        lr = M.quantize(np.clip(imresize(case_gt, 0.25), 0, 1), 8) / 255.0
        kw = {"mode": r["mode"], "samples": None, "seed": 0}
        draws = _ModalFake().upscale(lr.astype(np.float32), **kw).samples
        want = _direct_calibration(out / r["sr_path"], gt / r["image"], draws)
        assert float(r["calibration"]) == pytest.approx(want, abs=1e-12)
        assert 0.0 < want < 1.0
    for name in ("ldm", "ldm (sharp)"):
        mine = [float(r["calibration"]) for r in rows if r["method"] == name]
        assert by_name[name]["calibration"] == pytest.approx(np.mean(mine), abs=1e-12)
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "| calib. >3σ |" in md and "| ldm (sharp) | 5 (20), 1 of 4 |" in md
    cells = md.split("\n| bicubic |")[1].split("\n")[0].split("|")
    assert cells[0].strip() == "/" and cells[10].strip() == "/"  # no steps, no calibration
    assert md.split("\n| ldm (sharp) |")[1].split("\n")[0].split("|")[10].strip().endswith("%")
    assert (out / "sr" / "ldm_sharp").is_dir() and (out / "ssim_ldm_sharp_cmu1sr_y2700_x0900.png").is_file()


def test_calibration_of_identical_draws_counts_every_error() -> None:
    """Zero spread: every pixel whose value differs from the GT's is outside the band (grey: its channel)."""
    from ldsr.evaluation.report import Case, calibration

    rng = np.random.default_rng(0)
    gt = np.round(rng.random((24, 24, 1)) * 255) / 255
    sr = gt.copy()
    sr[6:10, 6:14] += 3 / 255  # 32 of the 16 x 16 pixels inside the crop differ
    case = Case(name="a", stem="a", gt=gt.astype(np.float32), lr=gt[::4, ::4].astype(np.float32), bits=8)
    draws = np.stack([sr, sr]).astype(np.float32)
    assert calibration(sr, draws, case, 4) == pytest.approx(32 / 256)
    wide = np.stack([sr - 2 / 255, sr + 2 / 255]).astype(np.float32)  # std 2 grey levels: a 3 error is inside
    assert calibration(sr, wide, case, 4) == 0.0
    assert np.isnan(calibration(sr, None, case, 4))


def test_mode_arguments_are_checked(tmp_path: Path) -> None:
    from ldsr.evaluation.report import method_specs, parse_model

    assert parse_model("mri-x4:sharp") == ("mri-x4", "sharp") and parse_model("mri-x4") == ("mri-x4", None)
    assert parse_model("a/b:c") == ("a/b:c", None)
    specs = method_specs(["mri-x4:sharp", "mri-x4:sharp", "mri-x4"])
    assert [(s.name, s.slug) for s in specs] == [
        ("mri-x4 (sharp)", "mri-x4_sharp"),
        ("mri-x4-2 (sharp)", "mri-x4-2_sharp"),
        ("mri-x4", "mri-x4"),
    ]
    gt = _crops(tmp_path, GREY[:1], 32)
    res = _invoke("--gt", str(gt), "--model", "bicubic:sharp", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "not a diffusion model" in res.output
    res = _invoke("--gt", str(gt), "--model", "mri-x4:sharp", "--draws", "1", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "--draws >= 2" in res.output
    res = _invoke("--gt", str(gt), "--model", "mri-x4:blurry", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "MODEL:sharp" in res.output
    assert not (tmp_path / "o").exists()
