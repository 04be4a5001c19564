"""`ldsr upscale` and `ldsr models`: super-resolve LR images with a trained or shipped model."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Optional

import numpy as np
import typer


class Sampler(StrEnum):
    ddpm = "ddpm"
    ddim = "ddim"
    dpmpp = "dpmpp"


class ReduceChoice(StrEnum):
    mean = "mean"
    median = "median"
    none = "none"


class Device(StrEnum):
    cpu = "cpu"
    cuda = "cuda"


def _out_path(src: Path, root: Path | None, out: Path, single: bool) -> Path:
    """Output path: OUT itself for one file with a suffix, else OUT/<relative name>.png (.dcm for DICOM)."""
    from ldsr.io import suffix_of

    suffix = ".dcm" if suffix_of(src) in (".dcm", "") else ".png"
    if single and out.suffix:
        return out
    rel = src.relative_to(root) if root is not None else Path(src.name)
    name = rel.name[: -len(suffix_of(src))] if suffix_of(src) else rel.name
    return out / rel.parent / (name + suffix)


def _match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Grey -> RGB by repetition; RGB -> grey by BT.601 luminance weights."""
    if image.shape[2] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=2)
    return (image @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]


def _pick_model(channels: int, scale: int | None) -> str:
    from ldsr.models.checkpoint import read_config
    from ldsr.pipeline import shipped_models

    fits = []
    for name, path in shipped_models().items():
        cfg = read_config(path)
        if cfg["channels"] == channels and (scale is None or cfg["scale"] == scale):
            fits.append((cfg["scale"] != 4, name))  # prefer x4 when no scale is given
    if not fits:
        raise ValueError(
            f"no shipped model for {channels}-channel images at x{scale or 'any'}; pass -m CHECKPOINT "
            "(train one with `ldsr train sr`)"
        )
    return sorted(fits)[0][1]


def upscale_command(
    input: Path = typer.Option(..., "-i", "--input", help="An LR image or a folder of them (recursive)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (one input) or folder."),
    model: Optional[str] = typer.Option(
        None,
        "-m",
        "--model",
        show_default="shipped model by channels and scale",
        help="Checkpoint folder / run dir / .safetensors, a shipped model name, or 'bicubic'.",
    ),
    scale: Optional[int] = typer.Option(None, "--scale", show_default="the model's", help="SR factor."),
    sampler: Optional[Sampler] = typer.Option(None, "--sampler", show_default="the model's (dpmpp)"),
    steps: Optional[int] = typer.Option(
        None,
        "--steps",
        min=1,
        show_default="the model's (shipped: 1)",
        help="Sampler steps (ignored by ddpm, which walks all T). 1 gives the "
        "posterior mean E[HR | LR] (one evaluation per sample); 10+ gives a "
        "sharp draw.",
    ),
    eta: Optional[float] = typer.Option(None, "--eta", show_default="the model's (0)", help="DDIM eta."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler noise: the same seed gives the same image."),
    samples: Optional[int] = typer.Option(
        None,
        "--samples",
        min=1,
        show_default="the model's sr.samples (shipped: 8)",
        help="Samples drawn per input, combined by --reduce.",
    ),
    reduce: ReduceChoice = typer.Option(ReduceChoice.mean, "--reduce", help="How samples are combined."),
    std_map: bool = typer.Option(
        False, "--std-map/--no-std-map", help="Also write the per-pixel std over samples (<name>_std.png)."
    ),
    batch: int = typer.Option(1, "--batch", min=1, help="Images of one size upscaled together in one network batch."),
    decode_tile: int = typer.Option(
        0,
        "--decode-tile",
        min=0,
        show_default="0: whole latent",
        help="Latent models: decode in tiles of this many latent positions (plus a halo of "
        "context, image-wide GroupNorm statistics): the memory of one tile, for "
        "images too large even for the default streamed decode; slower "
        "(docs/BENCHMARKS.md).",
    ),
    device: Device = typer.Option(Device.cpu, "--device", help="Where the network runs."),
) -> None:
    """Super-resolve LR images; 1-channel and 16-bit stay so; DICOM in gives DICOM out."""
    from tqdm import tqdm

    from ldsr.io import list_images, read_image, write_image
    from ldsr.io.batch import BatchResult
    from ldsr.pipeline import load

    if not input.exists():
        typer.echo(f"error: {input}: no such file or folder", err=True)
        raise typer.Exit(2)
    single = input.is_file()
    files = [input] if single else list_images(input)
    if not files:
        typer.echo(f"error: {input}: no supported images found", err=True)
        raise typer.Exit(2)
    try:
        if model is None:
            first, _ = read_image(files[0])
            model = _pick_model(first.shape[2], scale)
            typer.echo(f"model: {model} (shipped)")
        up = load(model, scale=scale, device=str(device))
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None

    def write(path: Path, meta, res) -> Path:  # noqa: ANN001 - ImageMeta, UpscaleResult
        dst = _out_path(path, None if single else input, output, single)
        if dst.resolve() == path.resolve():
            raise ValueError(f"{path}: output would overwrite the input")
        sr = res.image if reduce != "none" or res.samples is None else res.samples[0]
        write_image(dst, sr, meta, scale=up.scale)  # keeps bit depth; DICOM: spacing / scale
        if reduce == "none" and res.samples is not None:
            for k, s in enumerate(res.samples[1:], start=1):
                write_image(dst.with_name(f"{dst.stem}_s{k}{dst.suffix}"), s, meta, scale=up.scale)
        if std_map and res.std is not None:
            # std of [0, 1] images is at most 0.5: stretch x2 so the map uses the whole grey range.
            write_image(dst.with_name(f"{dst.stem}_std.png"), np.clip(res.std * 2.0, 0, 1), bit_depth=8)
        return dst

    result: BatchResult[Path] = BatchResult()

    def fail(path: Path, e: Exception) -> None:
        reason = str(e)
        reason = reason[len(str(path)) + 2 :] if reason.startswith(f"{path}: ") else reason
        typer.echo(f"error: {path}: {reason}", err=True)
        result.failures.append((str(path), reason))

    def flush(group: list) -> None:  # noqa: ANN001 - [(path, image, meta)]
        try:
            outs = up.upscale_batch(
                [g[1] for g in group],
                sampler=None if sampler is None else str(sampler),
                steps=steps,
                eta=eta,
                seed=seed,
                samples=samples,
                reduce=str(reduce),
                progress=sys.stderr.isatty(),
                decode_tile=decode_tile,
            )
        except (ValueError, OSError, RuntimeError) as e:
            for path, _, _ in group:
                fail(path, e)
            return
        for (path, _, meta), res in zip(group, outs):
            try:
                result.ok.append(write(path, meta, res))
            except (ValueError, OSError) as e:
                fail(path, e)

    pending: dict[tuple[int, ...], list] = {}
    for path in tqdm(files, desc="upscale", disable=len(files) < 2):
        try:
            image, meta = read_image(path)
        except (ValueError, OSError) as e:
            fail(path, e)
            continue
        if up.channels is not None:
            image = _match_channels(image, up.channels)
        group = pending.setdefault(image.shape, [])
        group.append((path, image, meta))
        if len(group) == batch:
            flush(pending.pop(image.shape))
    for group in pending.values():
        flush(group)
    typer.echo(f"upscale ({up.name}, x{up.scale}): {result.summary().splitlines()[0]} -> {output}")
    raise typer.Exit(result.exit_code)


def models_command() -> None:
    """List the shipped models with their cards."""
    from ldsr.pipeline import shipped_models

    models = shipped_models()
    if not models:
        typer.echo("no shipped models installed (models/ is empty); train one with `ldsr train sr`")
        return
    for name, path in models.items():
        card = path / "MODEL_CARD.md"
        typer.echo(f"== {name} ({path})")
        typer.echo(card.read_text(encoding="utf-8") if card.is_file() else "(no model card)")


def register(app: typer.Typer) -> None:
    app.command("upscale")(upscale_command)
    app.command("models")(models_command)
