"""`make demo`'s job (ldsr.cli.demo) on a tiny group: one bundled MRI sample (the one whose bottom rows were
banded in issue 14), an HR crop of 64, the shipped mri-x4
in both output modes beside bicubic, under clean LR (the full demo adds bsrgan LR: the same loop)."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ldsr.cli import demo
from ldsr.data.color import rgb_to_gray
from ldsr.evaluation.colorization import delta_e_map
from ldsr.io import read_image

MODES = ["bicubic", "mri-x4 (faithful)", "mri-x4 (sharp)"]


def test_demo_shows_both_modes_beside_bicubic_and_hr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    samples = tmp_path / "samples"
    (samples / "mri").mkdir(parents=True)
    shutil.copy(demo.SAMPLES_DIR / "mri" / "figshare_1_0708.jpg", samples / "mri")
    monkeypatch.setattr(demo, "FIXTURES", samples)
    out = tmp_path / "demo"
    code = demo.run(out, runs=(("mri", 1, 4),), presets=("bicubic",), hr_size=64, draws=2, heatmaps=0)
    assert code == 0
    printed = capsys.readouterr().out
    run = out / "mri_x4_bicubic"
    summary = json.loads((run / "summary.json").read_text())
    by_name = {m["method"]: m for m in summary["methods"]}
    assert list(by_name) == MODES  # the shipped model joins by itself, in both modes
    assert [by_name[m]["mode"] for m in MODES] == [None, "faithful", "sharp"]
    assert by_name["bicubic"]["calibration"] is None
    for m in MODES[1:]:
        assert by_name[m]["n_images"] == 1 and by_name[m]["draws"] == 2
        assert 0.0 < by_name[m]["calibration"] < 1.0  # measured for both modes
    assert '"preset": "bicubic"' in (run / "pairs" / "manifest.jsonl").read_text()
    lines = [line for line in (run / "results.csv").read_text().splitlines() if not line.startswith("#")]
    rows = list(csv.DictReader(lines))
    assert Counter((r["method"], r["mode"]) for r in rows) == {
        ("bicubic", ""): 1, ("mri-x4 (faithful)", "faithful"): 1, ("mri-x4 (sharp)", "sharp"): 1}  # fmt: skip
    faithful, _ = read_image(run / "sr" / "mri-x4_faithful" / "figshare_1_0708.png")
    sharp, _ = read_image(run / "sr" / "mri-x4_sharp" / "figshare_1_0708.png")
    hr, _ = read_image(run / "pairs" / "hr" / "figshare_1_0708.png")
    assert faithful.shape == sharp.shape == hr.shape == (64, 64, 1)
    assert np.abs(faithful - sharp).mean() > 1 / 255  # a draw is not the mean of the draws
    figure, _ = read_image(run / "comparison_figshare_1_0708.png")
    assert figure.shape[1] == 5 * 240  # LR | bicubic | faithful | sharp | HR, 2.4 in at 100 dpi each
    assert figure.shape[0] > 400  # the full images and, below them, the zoomed crops
    assert "| mri-x4 (sharp) |" in printed and "| mri-x4 (faithful) |" in printed


def test_demo_colorization_panel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    """The shipped histology-colorize on the grey of a bundled held-out H&E tile, beside the grey input and the
    reference: grid.png, the coloured image (L* of the input kept) and a table naming both methods."""
    samples = tmp_path / "samples"
    (samples / "histology").mkdir(parents=True)
    shutil.copy(demo.SAMPLES_DIR / "histology" / "kather2016_82_label_2_150.png", samples / "histology")
    monkeypatch.setattr(demo, "FIXTURES", samples)
    out = tmp_path / "demo" / "histology_colorize"
    assert demo.run_colorize(out) == 0
    summary = json.loads((out / "summary.json").read_text())["methods"]
    assert list(summary) == ["histology-colorize"]
    assert summary["histology-colorize"]["luminance_max_err"] < 1e-6
    coloured, _ = read_image(out / "histology-colorize" / "kather2016_82_label_2_150.png")
    ref, _ = read_image(samples / "histology" / "kather2016_82_label_2_150.png")
    assert coloured.shape == ref.shape == (150, 150, 3)
    grey = np.repeat(rgb_to_gray(ref.astype(np.float64))[..., None], 3, axis=2)  # what a grey scan shows
    assert summary["histology-colorize"]["delta_e2000"] < delta_e_map(grey, ref).mean() / 2
    grid, _ = read_image(out / "grid.png")
    assert grid.shape[1] > grid.shape[0]  # one row: grey input | model | reference
    assert "| histology-colorize |" in capsys.readouterr().out


def test_demo_generation_panel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    """The shipped mri-gen draws 4 samples beside a bundled slice: samples/, generation_run.json and panel.png.
    The samples are brain slices, not noise or a constant: each has structure, they differ from one another, and
    the corners (air around the head) are darker than the centre, as in every real slice."""
    samples = tmp_path / "samples"
    (samples / "mri").mkdir(parents=True)
    shutil.copy(demo.SAMPLES_DIR / "mri" / "figshare_1_0708.jpg", samples / "mri")
    monkeypatch.setattr(demo, "FIXTURES", samples)
    out = tmp_path / "demo" / "mri_gen"
    assert demo.run_generate(out, n=4) == 0
    run = json.loads((out / "generation_run.json").read_text())
    assert run["model"] == "mri-gen" and run["n"] == 4 and run["seconds_per_sample"] > 0
    images = [read_image(p)[0][..., 0] for p in sorted((out / "samples").glob("*.png"))]
    assert len(images) == 4 and images[0].shape == (128, 128)
    for im in images:
        corners = np.concatenate([im[:12, :12].ravel(), im[:12, -12:].ravel(), im[-12:, :12].ravel(),
                                  im[-12:, -12:].ravel()])  # fmt: skip
        assert im.std() > 0.05 and corners.mean() < im[40:88, 40:88].mean() - 0.1
    assert min(np.sqrt(np.mean((a - b) ** 2)) for i, a in enumerate(images) for b in images[i + 1 :]) > 0.05
    panel, _ = read_image(out / "panel.png")
    assert panel.shape[1] > panel.shape[0]
    assert "panel.png" in capsys.readouterr().out
