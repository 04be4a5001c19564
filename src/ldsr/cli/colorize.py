"""`ldsr colorize` (grey images in, colour out, L* kept exactly) and `ldsr evaluate-colorization`.

    ldsr colorize -i IN -o OUT -m MODEL [--samples N --steps K --seed S]
    ldsr evaluate-colorization -i REFERENCES -o OUT -m MODEL [-m MODEL ...]

MODEL: a colorize checkpoint (folder, run dir, .safetensors), a shipped name (histology-colorize), `gray` (the
grey input itself as RGB) or `chroma:A,B` (one CIELAB chroma everywhere, e.g. the training mean).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from ldsr.cli.common import Device, device_option, fail, input_option, output_option, quiet_option

if TYPE_CHECKING:
    from ldsr.cli.common import JobProgress
    from ldsr.models.colorize import AnyColorizer

MIN_SIDE = 8
MODEL_HELP = (
    "Colorize checkpoint (folder, run dir or .safetensors), shipped model name, 'gray' (no colour) or "
    "'chroma:A,B' (a constant CIELAB chroma)."
)


def _inputs(src: Path) -> list[Path]:
    from ldsr.io import list_images

    if src.is_dir():
        files = list_images(src)
        if not files:
            fail(f"{src}: no images found")
        return files
    if not src.exists():
        fail(f"{src}: no such file or folder")
    return [src]


def _targets(src: Path, path: Path, out: Path, samples: int) -> tuple[list[Path], Path | None]:
    """(one output per sample, the spread map or None) for input `path` of job input `src`."""
    from ldsr.io import OUTPUT_SUFFIXES, suffix_of

    if src.is_file() and suffix_of(out) in OUTPUT_SUFFIXES:
        base, suffix = out.parent / out.name[: -len(suffix_of(out))], suffix_of(out)
    else:
        rel = path.relative_to(src).parent if src.is_dir() else Path()
        suffix = suffix_of(path) if suffix_of(path) in (".png", ".tif", ".tiff") else ".png"
        base = out / rel / path.name[: len(path.name) - len(suffix_of(path))]
    if samples == 1:
        return [base.with_name(base.name + suffix)], None
    return [base.with_name(f"{base.name}_s{k}{suffix}") for k in range(samples)], base.with_name(
        base.name + "_spread.png"
    )


def _colorize_file(colorizer: AnyColorizer, src: Path, path: Path, out: Path, opts: dict[str, Any],
                   progress: JobProgress) -> list[Path]:  # fmt: skip
    """Read, check, colorize and write one file; raises ValueError (ImageError) naming it on bad input."""
    import numpy as np

    from ldsr.data.color import gray_of
    from ldsr.io import ImageError, check_size, read_image, write_image
    from ldsr.models.colorize import colorize_image

    image, meta = read_image(path)
    if not np.isfinite(image).all():
        raise ImageError(path, "contains NaN or inf values")
    check_size(image, path, min_side=MIN_SIDE)
    gray, converted = gray_of(image)
    if converted:
        progress.note(f"note: {path}: colour input converted to grey of equal L* before colorizing")
    res = colorize_image(colorizer, gray, samples=opts["samples"], steps=opts["steps"], seed=opts["seed"])
    bits = 16 if meta.bit_depth == 16 else 8
    outputs, spread_path = _targets(src, path, out, opts["samples"])
    written = []
    for target, img in zip(outputs, res.images):
        target.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_image(target, img, bit_depth=bits))
    if spread_path is not None and res.spread is not None:
        # chroma spread in CIELAB units / 100, 16-bit (a value of 1 is a spread of 100)
        written.append(write_image(spread_path, np.clip(res.spread / 100.0, 0.0, 1.0), bit_depth=16))
    return written


def colorize_command(
    input: Path = input_option("Grey image (8/16-bit; colour is converted to its grey) or folder."),
    output: Path = output_option("Output folder (or an image file for a single input)."),
    model: str = typer.Option(..., "-m", "--model", help=MODEL_HELP),
    samples: int = typer.Option(
        1,
        "--samples",
        min=1,
        help="Colourings per image (diffusion); >1 also writes <name>_spread.png, the per-pixel chroma spread / 100.",
    ),  # fmt: skip
    steps: Optional[int] = typer.Option(
        None, "--steps", min=1, help="Sampler steps (diffusion).", show_default="the model's colorize.steps"
    ),  # fmt: skip
    seed: int = typer.Option(0, "--seed", help="Seed of the diffusion noise."),
    device: Device = device_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Colorize grey images; the output's CIELAB L* equals the input's (chroma is predicted, never luminance)."""
    from ldsr.cli.common import JobProgress, resolve_device
    from ldsr.models.colorize import load_colorizer

    files = _inputs(input)
    try:
        colorizer = load_colorizer(model, resolve_device(device))
    except ValueError as e:
        fail(str(e))
    progress = JobProgress(len(files), desc="colorize", quiet=quiet)
    opts = {"samples": samples, "steps": steps, "seed": seed}
    failures = 0
    for path in files:
        try:
            written = _colorize_file(colorizer, input, path, output, opts, progress)
        except (ValueError, OSError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            progress.error(msg if msg.startswith(str(path)) else f"{path}: {msg}")
            failures += 1
            continue
        progress.done(f"{path} -> {written[0]}" + (f" (+{len(written) - 1})" if len(written) > 1 else ""))
    progress.close()
    if failures:
        typer.echo(f"{len(files) - failures} colorized, {failures} failed", err=True)
        raise typer.Exit(1)


def _methods(specs: list[str], device: str) -> dict[str, AnyColorizer]:
    """NAME=MODEL or MODEL (named by its last path part) -> loaded colorizers, in order."""
    from ldsr.models.colorize import load_colorizer

    methods: dict[str, AnyColorizer] = {}
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep:
            name, source = Path(spec.rstrip("/")).name or spec, spec
        if name in methods:
            fail(f"-m {spec}: method name {name!r} given twice (use NAME=MODEL)")
        try:
            methods[name] = load_colorizer(source, device)
        except ValueError as e:
            fail(str(e))
    return methods


def evaluate_command(
    input: Path = input_option("Colour reference image or folder (the grey input is made from it)."),
    output: Path = output_option("Output folder: results.csv, summary.json, summary.md, grid.png."),
    models: list[str] = typer.Option(..., "-m", "--model", help=MODEL_HELP + " Repeat; NAME=MODEL names a row."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Sampler steps (diffusion)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the diffusion noise."),
    grid: int = typer.Option(4, "--grid", min=0, help="References shown in grid.png (0: no grid)."),
    save_images: bool = typer.Option(False, "--save-images", help="Also write OUT/<method>/<name>.png."),
    device: Device = device_option(),
) -> None:
    """Colorize the grey of colour references with each model; PSNR / SSIM on RGB, mean CIEDE2000,
    colourfulness and its ratio to the reference, the luminance check, seconds per image, a comparison grid."""
    from ldsr.cli.common import resolve_device
    from ldsr.evaluation.colorization import evaluate_colorization, format_table

    files = _inputs(input)
    methods = _methods(models, resolve_device(device))
    report = evaluate_colorization(files, methods, output, steps=steps, seed=seed, grid_count=grid,
                                   save_images=save_images)  # fmt: skip
    for line in report.failures:
        typer.echo(f"error: {line}", err=True)
    typer.echo(format_table(report.summary).rstrip("\n"))
    typer.echo(f"wrote {output}")
    if report.failures:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("colorize")(colorize_command)
    app.command("evaluate-colorization")(evaluate_command)
