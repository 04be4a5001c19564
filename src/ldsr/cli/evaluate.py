"""`ldsr evaluate`: compare SR methods on a test set (tables, SR images, figures, provenance)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Literal, Optional

import typer

from ldsr.data.degrade import CLI_SCALES

PresetChoice = Literal["bicubic", "bsrgan", "light"]
SamplerChoice = Literal["ddpm", "ddim", "dpmpp"]
DeviceChoice = Literal["cpu", "cuda"]


def _scale(value: int) -> int:
    if value not in CLI_SCALES:
        raise typer.BadParameter(f"{value} is not one of {', '.join(map(str, CLI_SCALES))}")
    return value


def _command_line(ctx: typer.Context) -> str:
    """The invocation as one shell-quoted line, rebuilt from the parsed options (defaults included)."""
    words = ["ldsr", "evaluate"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None:
                words += [param.opts[0], str(v)]
    return shlex.join(words)


def evaluate_command(
    ctx: typer.Context,
    gt: Path = typer.Option(..., "--gt", help="Folder of HR ground-truth images.", show_default=False),
    lr: Optional[Path] = typer.Option(
        None, "--lr", help="Folder of paired LR images (matched by relative name).", show_default="none: use --preset"
    ),
    preset: Optional[PresetChoice] = typer.Option(
        None, "--preset", help="Degradation that makes LR from HR.", show_default="bicubic unless --lr is given"
    ),
    seed: int = typer.Option(0, "--seed", help="Degradation seed (per file: rng_for(seed, name)); sampling seed."),
    scale: int = typer.Option(4, "--scale", callback=_scale, help="SR factor: 2, 3, 4 or 8; also the crop border."),
    model: list[str] = typer.Option(
        ...,
        "--model",
        help="'bicubic', a shipped model name or a checkpoint path; repeat for several.",
        show_default=False,
    ),  # fmt: skip
    out: Path = typer.Option(Path("report"), "--out", help="Report folder."),
    steps: Optional[int] = typer.Option(
        None, "--steps", min=1, help="Sampler steps (diffusion models).", show_default="each model's sr.steps"
    ),
    sampler: Optional[SamplerChoice] = typer.Option(
        None, "--sampler", help="Sampler (diffusion models).", show_default="each model's sr.sampler"
    ),
    samples: int = typer.Option(1, "--samples", min=1, help="Seeds per image for diffusion models (mean and std)."),
    draws: Optional[int] = typer.Option(
        None,
        "--draws",
        min=1,
        show_default="each model's sr.samples",
        help="Sampler draws averaged into each SR image (posterior-mean estimate; diffusion models).",
    ),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use the first N images.", show_default="all"),
    device: DeviceChoice = typer.Option("cpu", "--device", help="Where the models run."),
    heatmaps: int = typer.Option(3, "--heatmaps", min=0, help="Images per method with an SSIM heat map."),
) -> None:
    """Upscale every GT image's LR with each model; write results.csv, summary.md/.json, sr/ and figures."""
    from ldsr.evaluation.report import EvalConfig, evaluate

    if lr is not None and preset is not None:
        typer.echo("error: give either --lr or --preset, not both", err=True)
        raise typer.Exit(2)
    cfg = EvalConfig(
        gt_dir=gt, models=tuple(model), out_dir=out, scale=scale, lr_dir=lr,
        preset=None if lr is not None else (preset or "bicubic"), seed=seed, sampler=sampler, steps=steps,
        samples=samples, draws=draws, limit=limit, device=device, heatmaps=heatmaps, command=_command_line(ctx),
    )  # fmt: skip
    try:
        report = evaluate(cfg)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    from ldsr.evaluation.report import summary_table

    typer.echo(summary_table(report.summary))
    for name, reason in report.failures:
        typer.echo(f"FAILED {name}: {reason}")
    typer.echo(f"wrote {out / 'results.csv'}, {out / 'summary.md'}, {out / 'summary.json'}")
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
