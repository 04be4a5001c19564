"""One vocabulary across the commands (issue 19): --version, help text on every option, shared names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ldsr import __version__
from ldsr.cli import app

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def _commands() -> dict[str, Any]:
    """Every leaf command of the app by its full name ('upscale', 'train sr', 'bench speed', ...)."""
    root = typer.main.get_command(app)
    out: dict[str, Any] = {}

    def walk(cmd: Any, prefix: str) -> None:
        if hasattr(cmd, "commands"):  # a group (typer's own click types in typer >= 0.2x)
            for name, sub in cmd.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            out[prefix] = cmd

    walk(root, "")
    return out


def test_version_flag() -> None:
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == __version__


def test_every_option_has_help() -> None:
    missing = [
        f"{name} {p.opts[0]}"
        for name, cmd in _commands().items()
        for p in cmd.params
        if p.param_type_name == "option" and not p.hidden and not (p.help or "").strip()
    ]
    assert not missing, missing


@pytest.mark.parametrize("command", ["upscale", "evaluate"])
def test_shared_names(command: str) -> None:
    params = {o for p in _commands()[command].params for o in p.opts}
    assert {"-i", "-o", "-m", "--draws", "--steps", "--sampler", "--device"} <= params
    sampler = next(p for p in _commands()[command].params if "--sampler" in p.opts)
    assert "dpmpp" in (sampler.help or "") and "ddim" in (sampler.help or "")
    device = next(p for p in _commands()[command].params if "--device" in p.opts)
    assert [str(v) for v in device.type_descriptor.annotation] == ["auto", "cpu", "cuda"]


def test_evaluate_seeds_and_old_spellings() -> None:
    params = {o: p for p in _commands()["evaluate"].params for o in p.opts}
    assert params["--seeds"].name == "seeds" and not params["--seeds"].hidden
    assert params["--samples"].hidden and "--out" in params["-o"].opts and "--gt" in params["-i"].opts
    for name in ("train sr", "train autoencoder", "train baseline"):
        opts = {o for p in _commands()[name].params for o in p.opts}
        assert {"-o", "--precision", "--dry-run"} <= opts


def test_train_output_and_precision_set_the_config(tmp_path: Path) -> None:
    cfg = Path(__file__).resolve().parents[1] / "configs" / "tiny" / "srcnn.yaml"
    res = CliRunner().invoke(
        app, ["train", "baseline", "-c", str(cfg), "-o", str(tmp_path / "run"), "--precision", "bf16", "--dry-run"]
    )
    assert res.exit_code == 0, res.output
    assert f"run_dir: {tmp_path / 'run'}" in res.output and "precision: bf16" in res.output


def test_help_imports_no_torch() -> None:
    code = "import sys; from ldsr.cli import app; import ldsr.cli.upscale_plan; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_degrade_takes_i_o_and_the_old_positional_folders(tmp_path: Path) -> None:
    from ldsr.io import read_image, write_image

    src = tmp_path / "hr"
    write_image(src / "a.png", read_image(FIX / "mri" / "colin27_z141.png")[0][:64, :64])
    new = CliRunner().invoke(app, ["degrade", "-i", str(src), "-o", str(tmp_path / "n"), "--preset", "bicubic"])
    old = CliRunner().invoke(app, ["degrade", str(src), str(tmp_path / "p"), "--preset", "bicubic"])
    assert new.exit_code == 0 and old.exit_code == 0, new.output + old.output
    assert (tmp_path / "n" / "lr" / "a.png").read_bytes() == (tmp_path / "p" / "lr" / "a.png").read_bytes()
    both = CliRunner().invoke(app, ["degrade", str(src), str(tmp_path / "p"), "-i", str(src)])
    assert both.exit_code == 2 and both.output.count("error:") == 1
