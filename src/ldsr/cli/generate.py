"""`ldsr generate` (samples of an unconditional generator) and `ldsr evaluate-generation` (their measures).

    ldsr generate -m mri-gen -n 64 -o out/mri --steps 50 --sampler dpmpp --seed 0 [--batch 16]
        -> out/mri/samples/sample_0000.png ..., out/mri/grid.png, out/mri/generation_run.json
    ldsr evaluate-generation --real HELD_OUT --fake out/mri --train TRAIN [--inception pt_inception.safetensors]
        --out out/mri/eval

Torch and the models are imported inside the commands (`ldsr --help` stays light).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Optional

import typer

from ldsr.cli.common import (
    SAMPLER_HELP,
    Device,
    Sampler,
    device_option,
    fail,
    output_option,
    quiet_option,
    resolve_device,
)


class SampleFormat(StrEnum):
    png = "png"
    tif = "tif"
    dcm = "dcm"  # Secondary Capture marked synthetic (ldsr.io.synthetic)
    nii = "nii"  # one-slice NIfTI, grey models only


GRID_MAX = 64  # samples drawn in grid.png


def generators() -> dict[str, Path]:
    """Shipped models whose config trains task `generate` (name -> folder)."""
    from ldsr.pipeline.upscaler import shipped_models

    return shipped_models(("generate",))


def resolve_model(name: str) -> Path:
    """A shipped generator's folder or an existing checkpoint path; ValueError naming the choices otherwise."""
    shipped = generators()
    if name in shipped:
        return shipped[name]
    if Path(name).exists():
        return Path(name)
    names = ", ".join(shipped) or "none installed"
    raise ValueError(f"unknown model {name!r}: not a shipped generator ({names}) nor an existing checkpoint path")


def check_writable(folder: Path) -> None:
    """Create `folder` if needed and prove a file can be written there; ValueError with the reason otherwise."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ldsr-write-test-"):
            pass
    except OSError as e:
        raise ValueError(f"{folder}: cannot write there ({e.strerror or e})") from None


def load_generator(path: Path, device: str) -> tuple[Any, dict[str, Any]]:
    """(model in eval mode on `device`, run config dict) of a `task: generate` checkpoint."""
    from ldsr.config import config_from_dict
    from ldsr.models.build import build_model
    from ldsr.models.checkpoint import load_weights

    state, run = load_weights(path, ema=True)
    if run.get("task") != "generate":
        raise ValueError(f"{path}: a {run.get('task')!r} model, not a generator (task 'generate')")
    model = build_model(config_from_dict(run), state)
    return model.to(device).eval(), run


def _peak_memory_mb(device: str) -> tuple[float, str]:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20, "CUDA max allocated"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"  # Linux: KiB


def _sample_writer(fmt: SampleFormat, bits: int, description: str) -> Any:
    """write(path, (H, W, C) array, index) for the sample format; DICOM samples of one call share a study and
    a series (ldsr.io.synthetic marks them synthetic)."""
    from ldsr.io import write_image
    from ldsr.io.synthetic import write_synthetic_dicom, write_synthetic_nifti

    b: Literal[8, 16] = 16 if bits == 16 else 8
    if fmt is SampleFormat.dcm:
        from pydicom.uid import generate_uid

        study, series = generate_uid(), generate_uid()
        return lambda path, arr, i: write_synthetic_dicom(
            path, arr, bits=b, description=f"{description}, sample {i}", study_uid=study, series_uid=series,
            instance=i + 1)  # fmt: skip
    if fmt is SampleFormat.nii:
        return lambda path, arr, i: write_synthetic_nifti(path, arr, bits=b, description=f"{description} #{i}")
    return lambda path, arr, i: write_image(path, arr, bit_depth=bits)


def sample_to_folder(
    model: Any, out: Path, *, n: int, seed: int, batch: int, sampler: str | None, steps: int | None,
    fmt: SampleFormat, bits: int, quiet: bool, label: str = "model",
) -> tuple[list[Any], float]:  # fmt: skip
    """Write n samples to out/samples/; returns the first GRID_MAX images and the sampling seconds."""
    import torch

    from ldsr.data.tensor import to_array

    seconds = 0.0
    kept: list[Any] = []
    write = _sample_writer(fmt, bits, f"SYNTHETIC: ldsr generate -m {label} --seed {seed}")
    for start in range(0, n, batch):
        k = min(batch, n - start)
        t0 = time.perf_counter()
        with torch.no_grad():
            x = model.sample_batch(k, seed=seed, start=start, sampler=sampler, steps=steps)  # (k, C, S, S)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        for i in range(k):
            arr = to_array(x[i])  # (S, S, C) in [0, 1]
            write(out / "samples" / f"sample_{start + i:04d}.{fmt.value}", arr, start + i)
            if len(kept) < GRID_MAX:
                kept.append(arr)
        if not quiet:
            print(f"{start + k}/{n} samples", file=sys.stderr)
    return kept, seconds


def generate(
    model: str = typer.Option(..., "-m", "--model", help="Shipped generator (mri-gen, histology-gen) or checkpoint."),
    n: int = typer.Option(64, "-n", help="Number of samples (>= 1)."),
    output: Path = output_option("Output folder: samples/, grid.png, generation_run.json."),
    steps: Optional[int] = typer.Option(
        None, "--steps", help="Sampler steps (ddpm walks the whole chain).", show_default="the model's generate.steps"
    ),  # fmt: skip
    sampler: Optional[Sampler] = typer.Option(
        None, "--sampler", help=SAMPLER_HELP, show_default="the model's generate.sampler"
    ),  # fmt: skip
    seed: int = typer.Option(0, "--seed", help="Sample i is drawn from (seed, i): same seed, same images."),
    batch: int = typer.Option(16, "--batch", help="Samples per network batch (>= 1)."),
    fmt: SampleFormat = typer.Option(
        SampleFormat.png,
        "--format",
        help="Sample files: png, tif, dcm (Secondary Capture marked synthetic) or nii (grey).",
    ),
    bits: int = typer.Option(8, "--bits", help="Bit depth of the sample files: 8 or 16."),
    device: Device = device_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Draw samples from an unconditional generator (latent / pixel DDPM or GAN)."""
    if n < 1:
        fail(f"-n must be >= 1, got {n}")
    if batch < 1:
        fail(f"--batch must be >= 1, got {batch}")
    if steps is not None and steps < 1:
        fail(f"--steps must be >= 1, got {steps}")
    if bits not in (8, 16):
        fail(f"--bits must be 8 or 16, got {bits}")
    try:
        path = resolve_model(model)
        check_writable(output)
        dev = resolve_device(device)
        net, run = load_generator(path, dev)
        if fmt is SampleFormat.nii and run.get("channels") != 1:
            raise ValueError(
                f"--format nii: {model} makes {run.get('channels')}-channel images; NIfTI samples are grey"
            )
        kept, seconds = sample_to_folder(net, output, n=n, seed=seed, batch=batch, fmt=fmt, bits=bits, quiet=quiet,
                                         sampler=None if sampler is None else sampler.value, steps=steps,
                                         label=model)  # fmt: skip
    except ValueError as e:
        fail(str(e))
    write_run(output, model, net, run, n=n, seed=seed, batch=batch, sampler=sampler, steps=steps, dev=dev,
              seconds=seconds, grid=kept)  # fmt: skip
    if not quiet:
        print(f"{n} samples in {output / 'samples'}, grid {output / 'grid.png'}", file=sys.stderr)


def write_run(
    out: Path, name: str, net: Any, run: dict[str, Any], *, n: int, seed: int, batch: int,
    sampler: Sampler | None, steps: int | None, dev: str, seconds: float, grid: list[Any],
) -> None:  # fmt: skip
    """grid.png of the first samples and generation_run.json: sampler, steps, parameters, seconds per sample
    (sampling only, file writing excluded), peak memory."""
    from ldsr.evaluation.generation import image_grid
    from ldsr.io import atomic_path, write_image

    gen = run.get("generate", {})
    used_sampler = sampler.value if sampler is not None else gen.get("sampler")
    used_steps = steps if steps is not None else gen.get("steps")
    if used_sampler == "ddpm":  # ancestral sampling walks the whole (truncated) chain, whatever --steps says
        used_steps = net.nfe(used_sampler, used_steps)
    peak, kind = _peak_memory_mb(dev)
    info = {
        "model": name, "kind": gen.get("model"), "n": n, "seed": seed, "batch": batch,
        "sampler": None if gen.get("model") == "gan" else used_sampler,
        "steps": None if gen.get("model") == "gan" else used_steps,
        "nfe": net.nfe(used_sampler, used_steps), "parameters": sum(p.numel() for p in net.parameters()),
        "seconds_per_sample": seconds / n, "peak_memory_mb": round(peak, 1), "memory_kind": kind, "device": dev,
        "image_size": run.get("data", {}).get("hr_size"), "channels": run.get("channels"),
    }  # fmt: skip
    write_image(out / "grid.png", image_grid(grid), bit_depth=8)
    with atomic_path(out / "generation_run.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def evaluate_generation(
    real: Path = typer.Option(..., "--real", help="Held-out real images (folder)."),
    fake: Path = typer.Option(..., "--fake", help="Samples: an `ldsr generate` output folder or a folder of images."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder: generation.json / .md, nearest.csv, figure."),
    train: Optional[Path] = typer.Option(None, "--train", help="Training images, for the memorisation check."),
    inception: Optional[Path] = typer.Option(
        None,
        "--inception",
        help="FID Inception-v3 weights (pt_inception-2015-12-05 as safetensors): adds FID / KID in its space.",
    ),  # fmt: skip
    features: Optional[Path] = typer.Option(
        None,
        "--features",
        help="ldsr feature network (safetensors, "
        "experiments/generation/train_features.py); else the rpstats space only.",
    ),  # fmt: skip
    copy_threshold: float = typer.Option(
        0.05,
        "--copy-threshold",
        help="Near-copy: pixel RMSE (64x64 grey, [0, 1]) to the nearest training image below this.",
    ),  # fmt: skip
    device: Device = device_option(),
) -> None:
    """Frechet distance, KID, precision / recall, memorisation and intensity distance of generated samples."""
    from ldsr.evaluation.features import StatsProjection, load_feature_net, load_inception
    from ldsr.evaluation.generation import evaluate_generation as run_eval
    from ldsr.evaluation.generation import report_markdown

    samples = fake / "samples" if (fake / "samples").is_dir() else fake
    try:
        check_writable(out)
        spaces: list[Any] = [load_feature_net(features)] if features is not None else []
        spaces.append(StatsProjection())
        if inception is not None:
            spaces.append(load_inception(inception, resolve_device(device)))
        report = run_eval(real, samples, out, train_dir=train, spaces=spaces, copy_threshold=copy_threshold)
    except ValueError as e:
        fail(str(e))
    if report.run is None and (fake / "generation_run.json").is_file():
        from ldsr.evaluation.generation import write_report

        report.run = json.loads((fake / "generation_run.json").read_text(encoding="utf-8"))
        write_report(out, report)
    typer.echo(report_markdown(report).rstrip("\n"))
    for line in report.skipped:
        typer.echo(f"skipped {line}", err=True)
    if report.skipped:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("evaluate-generation")(evaluate_generation)
