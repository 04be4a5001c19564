"""`ldsr train autoencoder|sr|baseline|generate|colorize -c CONFIG [--resume] [--dry-run] [KEY=VALUE ...]`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, Optional

import typer

from ldsr.cli.common import DEVICE_HELP, Device, Precision, fail

TaskName = Literal["autoencoder", "sr", "baseline", "generate", "colorize"]

train_app = typer.Typer(
    name="train",
    help="Train a model from a YAML run config (see configs/); one training loop for every model.",
    no_args_is_help=True,
)


def run_command(
    task: TaskName, config: Path, overrides: list[str], *, resume: bool = False, dry_run: bool = False
) -> str:
    """Load and check the config; with `dry_run` return its resolved YAML, else train and return the final
    checkpoint folder. Raises ValueError when the config's task is not `task`."""
    from ldsr.config import load_config, to_yaml

    cfg = load_config(config, overrides)
    if cfg.task != task:
        raise ValueError(f"{config}: the config trains task {cfg.task!r}; run `ldsr train {cfg.task}` (not `{task}`)")
    if dry_run:
        return to_yaml(cfg)
    import torch.distributed as dist

    from ldsr.training.loop import train

    final = train(cfg, resume=resume)
    # Under `accelerate launch` this process owns the group: leave together and close it, so that no process exits
    # while gloo / NCCL threads still run (a C++ abort, exit -6, reported as a failed launch).
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return str(final)


TRAIN_PRECISION = {Precision.fp32: "no", Precision.bf16: "bf16", Precision.fp16: "fp16"}  # -> train.precision


def _command(task: TaskName) -> Callable[..., None]:
    def command(
        config: Path = typer.Option(
            ..., "-c", "--config", help="YAML run config (see configs/).", exists=False, show_default=False
        ),
        overrides: Optional[list[str]] = typer.Argument(
            None,
            metavar="[KEY=VALUE]...",
            help="Config overrides, e.g. train.lr=1e-4 data.hr_size=64.",
            show_default=False,
        ),
        resume: bool = typer.Option(
            False, "--resume/--no-resume", help="Continue from run_dir/checkpoints/latest exactly.", show_default=True
        ),
        dry_run: bool = typer.Option(
            False, "--dry-run/--no-dry-run", help="Print the resolved config as YAML and exit.", show_default=True
        ),
        output: Optional[Path] = typer.Option(
            None, "-o", "--output", help="Run folder (sets train.run_dir).", show_default="the config's train.run_dir"
        ),
        precision: Optional[Precision] = typer.Option(
            None,
            "--precision",
            help="Mixed precision (sets train.precision): fp32, bf16 or fp16 (fp16 needs a GPU).",
            show_default="the config's train.precision",
        ),
        device: Optional[Device] = typer.Option(
            None, "--device", help=f"{DEVICE_HELP} Sets train.device.", show_default="the config's train.device"
        ),
    ) -> None:
        extra = list(overrides or [])
        if output is not None:
            extra.append(f"train.run_dir={output}")
        if device is not None:
            extra.append(f"train.device={device}")
        if not dry_run and (device is not None or precision == Precision.fp16):
            from ldsr.cli.common import check_precision, resolve_device

            chosen = resolve_device(device or Device.auto)  # --device cuda without CUDA: one line, before any data
            if precision is not None:
                check_precision(precision, chosen)
        if precision is not None:
            extra.append(f"train.precision={TRAIN_PRECISION[precision]}")
        try:
            out = run_command(task, config, extra, resume=resume, dry_run=dry_run)
        except ValueError as e:
            fail(str(e))
        typer.echo(out.rstrip("\n") if dry_run else f"final checkpoint: {out}")

    command.__doc__ = {
        "autoencoder": "Train a VAE / VQ-VAE (task: autoencoder); stores the measured latent scale.",
        "sr": "Train a diffusion SR model (task: sr): latent (on a trained autoencoder) or pixel space.",
        "baseline": "Train an SRCNN / FSRCNN / ESRGAN baseline (task: baseline).",
        "generate": "Train an unconditional generator (task: generate): latent / pixel DDPM or a DCGAN.",
        "colorize": "Train a colorizer (task: colorize): diffusion, regression, Zhang et al. 2016 or pix2pix.",
    }[task]
    return command


TASKS: tuple[TaskName, ...] = ("autoencoder", "sr", "baseline", "generate", "colorize")
for _task in TASKS:
    train_app.command(_task)(_command(_task))


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
