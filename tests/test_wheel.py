"""A wheel that works: built from the project, installed in a fresh virtual environment outside the checkout, it
carries the shipped models and the demo's samples (package data), and upscales a fixture with `mri-x4`.

Offline: `pip wheel --no-deps --no-build-isolation` with this environment's setuptools, `pip install --no-deps`
into a new venv whose only link to this environment is a `.pth` line appending its site-packages (so torch,
diffusers, ... are reused). That line adds the folder as a plain path, so the editable install's own `.pth`
(which points at the checkout's src/) is not processed there: `ldsr` can only come from the wheel, and the test
checks that it does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "fixtures" / "mri" / "figshare_0_1840.jpg"

PROBE = r"""
import json, sys
import numpy as np
import ldsr
from ldsr.assets import MODELS_DIR, SAMPLES_DIR
from ldsr.io import read_image

img, _ = read_image(sys.argv[1])
lr = img[200:224, 200:224]  # (24, 24, 1) grey LR patch in [0, 1]
up = ldsr.load("mri-x4")
out = up.upscale(lr, steps=1, samples=1).image
print(json.dumps({
    "ldsr": ldsr.__file__, "models": str(MODELS_DIR), "samples": sorted(p.name for p in SAMPLES_DIR.iterdir()),
    "shape": list(out.shape), "finite": bool(np.isfinite(out).all()), "std": float(out.std()),
    "mean_abs_diff_to_bicubic": float(np.abs(out - ldsr.load("bicubic", scale=4).upscale(lr).image).mean()),
}))
"""


def _build_wheel(tmp: Path) -> Path:
    """Build the wheel from a copy of the sources (the build writes build/ and *.egg-info beside them)."""
    src = tmp / "src_copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    subprocess.run([*cmd, "-w", str(dist), str(src)], check=True, cwd=tmp, timeout=120)
    (wheel,) = dist.glob("ldsr-*.whl")
    return wheel


def _venv_reusing_packages(where: Path) -> Path:
    """A venv without pip whose site-packages ends with this environment's (a plain path, no .pth processing)."""
    venv.create(where, with_pip=False, symlinks=True)
    py = where / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "reuse_test_env.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    return py


def test_wheel_installs_and_upscales_with_a_shipped_model_outside_the_checkout(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    py = _venv_reusing_packages(tmp_path / "venv")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True, timeout=120,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing relative to the repository resolves here
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    res = subprocess.run(
        [str(py), "-c", PROBE, str(FIXTURE)], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=240
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    installed = (tmp_path / "venv").resolve()
    assert Path(got["ldsr"]).resolve().is_relative_to(installed), got["ldsr"]  # the wheel's ldsr, not the checkout
    assert Path(got["models"]).resolve().is_relative_to(installed)
    assert got["samples"] == ["README.md", "histology", "mri"]
    assert got["shape"] == [96, 96, 1] and got["finite"]
    # A real model: its output is not flat and differs from bicubic (a constant or an identity would fail).
    assert got["std"] > 0.01 and got["mean_abs_diff_to_bicubic"] > 1e-3
