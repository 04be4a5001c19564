"""`ldsr train autoencoder|sr|baseline -c CONFIG [--resume] [--dry-run] [KEY=VALUE ...]`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, Optional

import typer

TaskName = Literal["autoencoder", "sr", "baseline"]

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
    ) -> None:
        try:
            out = run_command(task, config, list(overrides or []), resume=resume, dry_run=dry_run)
        except ValueError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
        typer.echo(out.rstrip("\n") if dry_run else f"final checkpoint: {out}")

    command.__doc__ = {
        "autoencoder": "Train a VAE / VQ-VAE (task: autoencoder); stores the measured latent scale.",
        "sr": "Train a diffusion SR model (task: sr): latent (on a trained autoencoder) or pixel space.",
        "baseline": "Train an SRCNN / FSRCNN / ESRGAN baseline (task: baseline).",
    }[task]
    return command


for _task in ("autoencoder", "sr", "baseline"):
    train_app.command(_task)(_command(_task))  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
