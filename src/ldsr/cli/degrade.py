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
    kspace = "kspace"
    blind = "blind"


assert set(Preset) == set(PRESETS), "Preset choices must match ldsr.data.degrade.PRESETS"


def _scale(value: int) -> int:
    if value not in CLI_SCALES:
        raise typer.BadParameter(f"{value} is not one of {', '.join(map(str, CLI_SCALES))}")
    return value


def _weights(text: str | None) -> dict[str, float] | None:
    """'bicubic=0.3,light=0.2,...' -> {'bicubic': 0.3, ...}; None stays None."""
    if text is None:
        return None
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise typer.BadParameter(f"{part!r} is not preset=weight (e.g. bicubic=0.3,light=0.3,bsrgan=0.4)")
    return out


def degrade_command(
    input: Optional[Path] = typer.Option(
        None, "-i", "--input", help="Folder of HR images (searched recursively).", show_default=False
    ),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Output folder: hr/, lr/ and manifest.jsonl.", show_default=False
    ),
    folders: Optional[list[Path]] = typer.Argument(
        None, metavar="[INPUT OUTPUT]", help="The older spelling: the two folders as arguments.", show_default=False
    ),
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
    weights: Optional[str] = typer.Option(
        None,
        "--weights",
        show_default="equal weights",
        help="Mixture of --preset blind, e.g. bicubic=0.3,light=0.2,bsrgan=0.3,kspace=0.2 "
        "(kspace is drawn for 1-channel images only).",
    ),
) -> None:
    """Degrade every image of -i INPUT into a paired HR/LR folder -o OUTPUT (bit depth and channels kept).

    kspace (MRI acquisition: central k-space, window, partial Fourier, Rician noise) needs 1-channel images;
    blind draws one preset per image and records the choice in manifest.jsonl.
    """
    from ldsr.data.degrade import degrade_folder

    if folders:  # `ldsr degrade IN OUT`, kept working beside -i/-o (one vocabulary: ldsr.cli.common)
        if len(folders) != 2 or input is not None or output is not None:
            typer.echo("error: give the folders as -i INPUT -o OUTPUT (or as the two arguments INPUT OUTPUT)", err=True)
            raise typer.Exit(2)
        input, output = folders
    if input is None or output is None:
        typer.echo("error: give -i INPUT (HR folder) and -o OUTPUT (paired folder)", err=True)
        raise typer.Exit(2)
    mixture = _weights(weights)
    try:
        result = degrade_folder(
            input,
            output,
            scale=scale,
            preset=str(preset),
            seed=seed,
            hr_size=hr_size,
            workers=workers,
            weights=mixture,
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
