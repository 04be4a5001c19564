"""`make demo`'s job (ldsr.cli.demo) on the bundled MRI fixtures with the shipped mri-x4 model."""

from __future__ import annotations

import json
from pathlib import Path

from ldsr.cli import demo


def test_demo_writes_table_figures_and_sr_images(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    code = demo.run(tmp_path, runs=(("mri", 1, 4),), steps=2)
    assert code == 0
    out = tmp_path / "mri_x4"
    summary = json.loads((out / "summary.json").read_text())
    methods = [m["method"] for m in summary["methods"]]
    assert methods[0] == "bicubic" and "mri-x4" in methods  # the shipped model joins the table by itself
    assert summary["provenance"]["n_images"] == len(list((out / "pairs" / "hr").iterdir())) == 5
    assert all(m["n_images"] == 5 for m in summary["methods"])
    assert len(list((out / "sr" / "mri-x4").glob("*.png"))) == 5
    assert list(out.glob("comparison_*.png")) and (out / "summary.md").is_file()
    printed = capsys.readouterr().out
    assert "| mri-x4 |" in printed and "bsrgan" in printed
