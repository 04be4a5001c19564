"""scripts/paired_compare.py: per-image paired differences, their standard error and win counts."""

from __future__ import annotations

import math
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "paired_compare.py"
HEADER = "method,image,height,width,channels,data_range,psnr_y,ssim_y,psnr_rgb,ssim_rgb,lr_psnr,seconds,sr_path\n"


def _module() -> SimpleNamespace:
    return SimpleNamespace(**runpy.run_path(str(SCRIPT)))


def _csv(path: Path, values: dict[str, list[float]]) -> Path:
    lines = ["# gt_dir: somewhere\n", HEADER]
    for method, psnrs in values.items():
        for k, v in enumerate(psnrs):
            name = f"{'cmu' if k < 2 else 'kat'}_{k}.png"
            lines.append(f"{method},{name},8,8,3,255.0,{v},{v / 100},{v - 1},{v / 200},30.0,0.1,sr/{method}/{name}\n")
    path.write_text("".join(lines))
    return path


def test_paired_difference_standard_error_and_wins(tmp_path: Path) -> None:
    m = _module()
    res = m.read_results(_csv(tmp_path / "results.csv", {"a": [20.0, 21.0, 19.0, 22.0], "b": [19.5, 21.5, 18.0, 21.0]}))
    mean, se, wins, n = m.paired(res["a"], res["b"], "psnr_y")
    d = [0.5, -0.5, 1.0, 1.0]  # A - B per image
    sd = math.sqrt(sum((x - 0.5) ** 2 for x in d) / 3)
    assert (mean, wins, n) == (pytest.approx(0.5), 3, 4)
    assert se == pytest.approx(sd / 2)
    assert m.paired(res["a"], res["b"], "ssim_y")[0] == pytest.approx(0.005)  # the same differences / 100
    assert m.paired(res["b"], res["a"], "psnr_y")[2] == 1  # wins are strict: the other way round only one
    with pytest.raises(ValueError, match="at least 2"):
        m.paired(res["a"], res["b"], "psnr_y", ["cmu_0.png"])


def test_cli_table_with_groups_and_unknown_method(tmp_path: Path) -> None:
    csv = _csv(tmp_path / "results.csv", {"a": [20.0, 21.0, 19.0, 22.0], "b": [19.5, 21.5, 18.0, 21.0]})
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(csv), "a", "b", "--group", "cmu_,kat_"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| all (4) | psnr_y | +0.500 |" in out and "| 3/4 |" in out
    assert "| cmu_ (2) | psnr_y | +0.000 |" in out and "| kat_ (2) | psnr_y | +1.000 |" in out
    bad = subprocess.run([sys.executable, str(SCRIPT), str(csv), "a", "c"], capture_output=True, text=True)
    assert bad.returncode != 0 and "no method 'c'" in bad.stderr
