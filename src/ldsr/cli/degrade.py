"""`ldsr degrade`: make a paired HR/LR folder with a synthetic degradation model."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Optional

import typer

from ldsr.data.degrade import CLI_SCALES, PRESETS


class Preset(StrEnum):
    bsrgan = "bsrgan"
    light = "light"
    bicubic = "bicubic"


assert set(Preset) == set(PRESETS), "Preset choices must match ldsr.data.degrade.PRESETS"


def _scale(value: int) -> int:
    if value not in CLI_SCALES:
        raise typer.BadParameter(f"{value} is not one of {', '.join(map(str, CLI_SCALES))}")
    return value


def degrade_command(
    input: Path = typer.Argument(..., help="Folder of HR images (searched recursively)."),
    output: Path = typer.Argument(..., help="Output folder: hr/, lr/ and manifest.jsonl."),
    scale: int = typer.Option(4, "--scale", callback=_scale, help="Down-sampling factor: 2, 3, 4 or 8."),
    preset: Preset = typer.Option(Preset.bsrgan, "--preset", help="Degradation model."),
    seed: int = typer.Option(0, "--seed", help="Base seed; each file's randomness depends on (seed, name)."),
    hr_size: Optional[int] = typer.Option(
        None,
        "--hr-size",
        show_default="no crop",
        help="Centre-crop HR to this square size first (a multiple of --scale).",
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes."),
) -> None:
    """Degrade every image of INPUT into a paired HR/LR folder OUTPUT (bit depth and channels kept)."""
    from ldsr.data.degrade import degrade_folder

    try:
        result = degrade_folder(
            input, output, scale=scale, preset=str(preset), seed=seed, hr_size=hr_size, workers=workers
        )
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    # Each failure was already printed once, as it happened, by ldsr.io.batch.run_batch
    # ("error: <path>: <reason>" on stderr); only the totals are added here.
    typer.echo(f"degrade: {result.summary().splitlines()[0]} -> {output}")
    raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    app.command("degrade")(degrade_command)
