"""`ldsr evaluate`: compare SR methods on a test set (tables, SR images, figures, provenance).

`-m mri-x4:faithful -m mri-x4:sharp` puts both output modes of one model in one run (see ldsr.evaluation.report).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Optional, cast

import typer

from ldsr.cli.common import (
    Device,
    Precision,
    Sampler,
    device_option,
    draws_option,
    fail,
    precision_option,
    sampler_option,
    seeds_option,
    steps_option,
)
from ldsr.data.degrade import CLI_SCALES, PRESETS

if TYPE_CHECKING:
    from ldsr.evaluation.report import PrecisionName, Preset


def _preset(value: str | None) -> str | None:
    if value is not None and value not in PRESETS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(PRESETS)}")
    return value


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
    gt: Path = typer.Option(..., "-i", "--gt", "--input", help="Folder of HR ground-truth images.", show_default=False),
    lr: Optional[Path] = typer.Option(
        None, "--lr", help="Folder of paired LR images (matched by relative name).", show_default="none: use --preset"
    ),
    preset: Optional[str] = typer.Option(
        None,
        "--preset",
        callback=_preset,
        help=f"Degradation that makes LR from HR: {', '.join(PRESETS)}.",
        show_default="bicubic unless --lr is given",
    ),
    seed: int = typer.Option(0, "--seed", help="Degradation seed (per file: rng_for(seed, name)); sampling seed."),
    scale: int = typer.Option(4, "--scale", callback=_scale, help="SR factor: 2, 3, 4 or 8; also the crop border."),
    model: list[str] = typer.Option(
        ...,
        "-m",
        "--model",
        help="'bicubic', a shipped model name or a checkpoint path; repeat for several. A diffusion model takes a "
        "mode: MODEL:faithful (the default, the mean of its draws) or MODEL:sharp (one draw, named 'MODEL (sharp)'); "
        "both report calibration (share of pixels with |error| > 3x the draws' spread).",
        show_default=False,
    ),  # fmt: skip
    out: Path = typer.Option(Path("report"), "-o", "--output", "--out", help="Report folder."),
    steps: Optional[int] = steps_option("each model's sr.steps"),
    sampler: Optional[Sampler] = sampler_option("each model's sr.sampler"),
    seeds: int = seeds_option(),
    samples: Optional[int] = typer.Option(None, "--samples", min=1, hidden=True, help="Old name of --seeds."),
    draws: Optional[int] = draws_option(show_default="each model's sr.samples"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use the first N images.", show_default="all"),
    device: Device = device_option(),
    precision: Precision = precision_option(),
    heatmaps: int = typer.Option(3, "--heatmaps", min=0, help="Images per method with an SSIM heat map."),
) -> None:
    """Upscale every GT image's LR with each model; write results.csv, summary.md/.json, sr/ and figures."""
    from ldsr.cli.common import check_precision, resolve_device
    from ldsr.evaluation.report import EvalConfig, evaluate

    if lr is not None and preset is not None:
        fail("give either --lr or --preset, not both")
    if samples is not None and samples != seeds and seeds != 1:
        fail("--samples is the old name of --seeds; give one of them")
    seeds = samples if samples is not None else seeds
    dev = resolve_device(device)
    check_precision(precision, dev)  # fp16 on a CPU: refused before any work
    cfg = EvalConfig(
        gt_dir=gt, models=tuple(model), out_dir=out, scale=scale, lr_dir=lr,
        preset=None if lr is not None else cast("Preset", preset or "bicubic"), seed=seed,
        sampler=None if sampler is None else str(sampler), steps=steps, samples=seeds, draws=draws, limit=limit,
        device=dev, precision=cast("PrecisionName", str(precision)), heatmaps=heatmaps, command=_command_line(ctx),
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
