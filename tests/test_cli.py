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


# --- issue 19: evaluate --precision, train --device ------------------------------------------------------


def _gt_folder(tmp_path: Path) -> Path:
    from ldsr.io import read_image, write_image

    gt = tmp_path / "gt"
    write_image(gt / "a.png", read_image(FIX / "mri" / "colin27_z141.png")[0][64:96, 64:96], bit_depth=8)
    return gt


def test_evaluate_fp16_on_a_cpu_is_one_error_line_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["evaluate", "-i", str(_gt_folder(tmp_path)), "-m", "bicubic", "-o", str(out),
                                   "--device", "cpu", "--precision", "fp16"])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert [line for line in res.output.splitlines() if "error" in line.lower()] == [
        "error: --precision fp16 needs --device cuda (a CPU runs fp32 or bf16)"
    ]
    assert not out.exists()


def test_evaluate_bf16_runs_every_upscale_under_autocast_and_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools
    import json

    import torch

    from ldsr.pipeline.upscaler import Upscaler

    seen: list[tuple[bool, torch.dtype]] = []
    real = Upscaler.upscale_batch

    @functools.wraps(real)
    def spy(self: Upscaler, lrs: list[Any], **kw: Any) -> Any:
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return real(self, lrs, **kw)

    monkeypatch.setattr(Upscaler, "upscale_batch", spy)
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["evaluate", "-i", str(_gt_folder(tmp_path)), "-m", "bicubic", "--scale", "2",
                                   "-o", str(out), "--heatmaps", "0", "--precision", "bf16"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert seen and all(s == (True, torch.bfloat16) for s in seen)  # the warm-up call too
    prov = json.loads((out / "summary.json").read_text(encoding="utf-8"))["provenance"]
    assert prov["precision"] == "bf16" and "--precision bf16" in prov["command"]
    assert "- precision: bf16" in (out / "summary.md").read_text(encoding="utf-8")


def test_train_device_sets_train_device_and_cuda_without_it_fails_before_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import ldsr.data.datasets

    cfg = FIX.parent / "configs" / "tiny" / "srcnn.yaml"
    run = tmp_path / "run"
    dry = CliRunner().invoke(app, ["train", "baseline", "-c", str(cfg), "-o", str(run), "--device", "cpu",
                                   "--dry-run"])  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert "  device: cpu" in dry.output.splitlines()

    def no_data(*_: object, **__: object) -> None:
        raise AssertionError("data loaded before the device was checked")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ldsr.data.datasets, "build_train_dataset", no_data)
    for args in (["--device", "cuda"], ["train.device=cuda"]):  # the option, and a config asking for it
        res = CliRunner().invoke(app, ["train", "baseline", "-c", str(cfg), "-o", str(run), *args])
        assert res.exit_code == 2, res.output
        [line] = [line for line in res.output.splitlines() if line.strip()]
        assert line.startswith("error:") and "device cuda: " in line and "use --device cpu" in line, line
    assert not run.exists()


def test_train_device_cpu_forces_the_cpu_even_where_cuda_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from ldsr.training.config import TrainConfig
    from ldsr.training.loop import _use_cpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert (
        _use_cpu(TrainConfig(device="cpu")) and not _use_cpu(TrainConfig()) and not _use_cpu(TrainConfig(device="cuda"))
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _use_cpu(TrainConfig()) and _use_cpu(TrainConfig(device="cpu"))
    with pytest.raises(ValueError, match="train.device cuda: "):
        _use_cpu(TrainConfig(device="cuda"))
    with pytest.raises(ValueError, match="train.device must be"):
        TrainConfig(device="gpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        TrainConfig(device="cpu", precision="fp16")
