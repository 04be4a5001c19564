"""`ldsr bench speed`: latent vs pixel diffusion SR, time and peak memory of one full upscale each.

Each model runs in a fresh subprocess (`python -m ldsr.evaluation.speed '<json spec>'`, no shell) so that the CPU peak
(max resident set size, which only grows) belongs to that model alone. Weights are random: the cost of a sampler
step does not depend on the weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from enum import StrEnum
from typing import Any, Literal

import typer

from ldsr.cli.common import Device, Sampler, device_option
from ldsr.models.unets import UNET_DOWNSAMPLING, UNET_PRESETS

bench = typer.Typer(help="Benchmarks.", no_args_is_help=True)


class PresetName(StrEnum):
    tiny = "tiny"
    compact = "compact"
    small = "small"
    base = "base"


assert set(PresetName) == set(UNET_PRESETS), "PresetName choices must match ldsr.models.unets.UNET_PRESETS"
LATENT_FACTOR = 4  # f of the autoencoder used for the latent model


def _run_isolated(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "ldsr.evaluation.speed", json.dumps(spec)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker for {spec['space']} HR {spec['hr']} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def format_report(rows: list[dict[str, Any]]) -> str:
    """Table of worker results, then the ratio lines (pixel / latent, so > 1 means latent is better)."""
    head = (
        f"{'HR':>5}  {'model':<6}  {'denoiser grid':<13}  {'params (UNet + AE)':<18}  {'steps':>5}  "
        f"{'s/image':>8}  {'peak MB':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        params = _millions(r["unet_params"]) + (f" + {_millions(r['ae_params'])}" if r["ae_params"] else "")
        lines.append(
            f"{r['hr']:>5}  {r['space']:<6}  {r['grid']:<13}  {params:<18}  {r['steps']:>5}  "
            f"{r['seconds']:>8.3f}  {r['peak_mb']:>8.1f}"
        )
    ae = {r["autoencoder"] for r in rows if r["autoencoder"]}
    tile = rows[0].get("decode_tile", 0)
    decoding = f"decoding in {tile}x{tile} latent tiles" if tile else "decoding"
    lines.append(
        f"autoencoder: {', '.join(sorted(ae))}; latent timing includes {decoding}; torch threads: {rows[0]['threads']}"
    )
    lines.append(
        "speed ratio = pixel s/image / latent s/image; memory ratio = pixel peak MB / latent peak MB "
        "(> 1: latent better)"
    )
    hrs = sorted({r["hr"] for r in rows})
    speed, memory = [], []
    for hr in hrs:
        lat = next(r for r in rows if r["hr"] == hr and r["space"] == "latent")
        pix = next(r for r in rows if r["hr"] == hr and r["space"] == "pixel")
        label = f" (HR {hr})" if len(hrs) > 1 else ""
        speed.append(f"{pix['seconds'] / lat['seconds']:.2f}{label}")
        mem = f"{pix['peak_mb'] / lat['peak_mb']:.2f}" if lat["peak_mb"] > 0 else "n/a (latent peak below 1 KiB)"
        memory.append(mem + label)
    lines.append(f"latent/pixel speed ratio: {', '.join(speed)}")
    lines.append(f"latent/pixel memory ratio: {', '.join(memory)}")
    return "\n".join(lines)


@bench.command("speed")
def speed(
    hr: list[int] = typer.Option([256], "--hr", min=8, help="HR side in pixels; repeat for several sizes."),
    steps: int = typer.Option(50, "--steps", min=1, help="Sampler steps (ddpm always runs all T)."),
    preset: PresetName = typer.Option(
        PresetName.small, "--preset", help="UNet preset of both models (and autoencoder preset of the latent one)."
    ),
    scale: int = typer.Option(4, "--scale", min=1, help="SR factor."),
    channels: Literal[1, 3] = typer.Option(1, "--channels", help="Image channels."),
    device: Device = device_option(),
    sampler: Sampler = typer.Option(Sampler.ddim, "--sampler", help="Diffusion sampler of both models."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Timed upscales per model (mean reported)."),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads per worker; 0 = torch's default."),
    decode_tile: int = typer.Option(
        0, "--decode-tile", min=0, help="Latent model: decode in tiles of this many latent positions (0: whole)."
    ),
) -> None:
    """Time one batch-1 upscale of the latent and the pixel (SR3) model, each in a fresh process."""
    n_channels = int(channels)
    levels = UNET_DOWNSAMPLING[preset]
    from ldsr.cli.common import resolve_device

    dev = resolve_device(device)
    for h in hr:
        # HR must split into whole LR pixels and the UNet grid must halve cleanly at every level.
        if h % scale or h % (LATENT_FACTOR * levels):
            raise typer.BadParameter(
                f"--hr {h} must be divisible by --scale {scale} and by "
                f"{LATENT_FACTOR * levels} (autoencoder f x UNet downsampling of {preset})"
            )
    rows = []
    for h in hr:
        for space in ("latent", "pixel"):
            spec = {
                "space": space,
                "hr": h,
                "steps": steps,
                "preset": str(preset),
                "scale": scale,
                "channels": n_channels,
                "device": dev,
                "sampler": str(sampler),
                "repeats": repeats,
                "threads": threads,
                "decode_tile": decode_tile,
            }
            typer.echo(f"running {space} HR {h} ...", err=True)
            try:
                rows.append(_run_isolated(spec))
            except RuntimeError as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(1) from e
    typer.echo(format_report(rows))


def register(app: typer.Typer) -> None:
    app.add_typer(bench, name="bench")
