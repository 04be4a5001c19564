"""`make demo`: degrade the bundled sample images, upscale them with bicubic and with both output modes of
every shipped model that fits (faithful: the mean of its draws; sharp: one draw, its spread reported), and write
demo/ with the SR images, comparison figures and a table per run (also printed).

Two LR kinds per model: `bicubic` (a clean downscale, the classic benchmark protocol) and `bsrgan` (blur,
down-sampling, noise and JPEG in random order), each a small run on HR crops of 128x128:
demo/<group>_x<scale>_<preset>/ holds the pairs, sr/<method>/, comparison_*.png (LR | bicubic | faithful |
sharp | HR, with zoomed crops) and summary.md. Diffusion models use their own sampler defaults.

Colorization panel: the grey of the bundled histology samples coloured by the shipped `histology-colorize` (one
draw, its own sampler defaults) beside the grey input and the colour reference, in demo/histology_colorize/
(grid.png, summary.md: PSNR, SSIM, CIEDE2000, colourfulness ratio and the luminance check per method).

Generation panel: 16 samples of the shipped `mri-gen` (seed 0, its own sampler defaults) beside the bundled MRI
slices resized to the generator's size, in demo/mri_gen/ (samples/, panel.png, generation_run.json).

Time: `python -m ldsr.cli.demo --out demo` took 2 min 26 s wall (2 min 13 s CPU) on the 2-core CPU with no
other job running, 2026-12-01 (three shipped upscalers, six runs, the colorization and generation panels).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldsr.assets import SAMPLES_DIR

FIXTURES = SAMPLES_DIR  # ldsr/assets/samples/{mri,histology}: installed with the wheel
RUNS = (("mri", 1, 4), ("histology", 3, 4), ("histology", 3, 8))  # (fixture folder, channels, scale)
PRESETS = ("bicubic", "bsrgan")  # LR kinds: clean, and the degradation the shipped models were trained on
COLORIZE_MODEL = "histology-colorize"  # the colorization panel's model
GENERATE_MODEL = "mri-gen"  # the generation panel's model


def _models_for(channels: int, scale: int) -> list[str]:
    """`-m` arguments of the shipped models for these images: MODEL:faithful and MODEL:sharp for diffusion
    models, the plain name for a CNN baseline."""
    from ldsr.models.checkpoint import read_config
    from ldsr.pipeline import shipped_models

    out = []
    for name, path in shipped_models().items():
        cfg = read_config(path)
        if cfg["channels"] != channels or cfg["scale"] != scale:
            continue
        if cfg["task"] == "sr":
            out += [f"{name}:faithful", f"{name}:sharp"]
        elif cfg["task"] == "baseline":
            out.append(name)
    return out


def run(
    out: Path,
    *,
    hr_size: int = 128,
    presets: tuple[str, ...] = PRESETS,
    seed: int = 0,
    steps: int | None = None,
    draws: int | None = None,
    sampler: str | None = None,
    limit: int | None = None,
    heatmaps: int = 1,
    runs: tuple[tuple[str, int, int], ...] = RUNS,
) -> int:
    """Degrade -> upscale -> measure, per (fixture group, scale) and LR preset. Returns the exit code."""
    from ldsr.data.degrade import degrade_folder
    from ldsr.evaluation.report import EvalConfig, evaluate

    code = 0
    for group, channels, scale in runs:
        models = ("bicubic", *_models_for(channels, scale))
        for preset in presets:
            src = FIXTURES / group
            name = f"{group}_x{scale}_{preset}"
            pairs = out / name / "pairs"
            print(f"\n== {name}: degrade {src} ({preset}, x{scale}, HR crop {hr_size}) -> {pairs}")
            deg = degrade_folder(src, pairs, scale=scale, preset=preset, seed=seed, hr_size=hr_size)
            code |= deg.exit_code
            if len(models) == 1:
                print("(no shipped model for these images yet: bicubic only)")
            cfg = EvalConfig(gt_dir=pairs / "hr", lr_dir=pairs / "lr", models=models, out_dir=out / name, scale=scale,
                             steps=steps, draws=draws, sampler=sampler, seed=seed, limit=limit, heatmaps=heatmaps,
                             command=" ".join(["python -m ldsr.cli.demo", *sys.argv[1:]]))  # fmt: skip
            report = evaluate(cfg, progress=False)
            print((out / name / "summary.md").read_text(encoding="utf-8").split("\n## ")[0])
            code |= report.exit_code
    code |= run_colorize(out / "histology_colorize", seed=seed)
    code |= run_generate(out / "mri_gen", seed=seed)
    print(f"\nwrote {out}/ (SR images in */sr/, figures */comparison_*.png, tables */summary.md)")
    return code


def run_colorize(out: Path, *, model: str = COLORIZE_MODEL, seed: int = 0, group: str = "histology") -> int:
    """Grey of the bundled colour samples -> `model` (one draw) beside the grey input and the reference: grid.png
    and summary.md in `out`. Returns the exit code (0 when the model is not shipped: the panel is skipped)."""
    from ldsr.assets import MODELS_DIR

    if not (MODELS_DIR / model / "config.json").is_file() or not (FIXTURES / group).is_dir():
        print(f"\n(no shipped {model} or no {group} samples: no colorization panel)")
        return 0
    from ldsr.evaluation.colorization import evaluate_colorization, format_table
    from ldsr.io import list_images
    from ldsr.models.colorize import load_colorizer

    refs = list_images(FIXTURES / group)
    print(f"\n== colorization: grey of {FIXTURES / group} ({len(refs)} images) -> {model} -> {out}")
    methods = {model: load_colorizer(model)}  # the grid's first column is the grey input itself
    report = evaluate_colorization(refs, methods, out, seed=seed, grid_count=len(refs), save_images=True)
    print(format_table(report.summary).rstrip("\n"))
    for line in report.failures:
        print(f"error: {line}")
    return 1 if report.failures else 0


def run_generate(out: Path, *, model: str = GENERATE_MODEL, n: int = 16, seed: int = 0, group: str = "mri") -> int:
    """n samples of the shipped generator `model` (samples/ and generation_run.json as `ldsr generate` writes
    them) and panel.png: the samples' grid beside the bundled `group` images resized to the samples' size.
    Returns the exit code (0 when the model is not shipped: the panel is skipped)."""
    from ldsr.assets import MODELS_DIR

    if not (MODELS_DIR / model / "config.json").is_file() or not (FIXTURES / group).is_dir():
        print(f"\n(no shipped {model} or no {group} samples: no generation panel)")
        return 0
    from ldsr.cli.generate import SampleFormat, load_generator, sample_to_folder, write_run

    print(f"\n== generation: {n} samples of {model} (seed {seed}) -> {out}")
    net, run = load_generator(MODELS_DIR / model, "cpu")
    kept, seconds = sample_to_folder(net, out, n=n, seed=seed, batch=n, sampler=None, steps=None,
                                     fmt=SampleFormat.png, bits=8, quiet=True, label=model)  # fmt: skip
    write_run(out, model, net, run, n=n, seed=seed, batch=n, sampler=None, steps=None, dev="cpu", seconds=seconds,
              grid=kept)  # fmt: skip
    _generation_panel(out / "panel.png", kept, FIXTURES / group)
    print(f"{n} samples in {seconds:.1f} s; {out / 'panel.png'}: samples (left) beside real slices (right)")
    return 0


def _generation_panel(path: Path, samples: list, real_dir: Path) -> None:  # noqa: ANN001 (arrays)
    """panel.png: the samples' grid | a grid of the real images (centre square, resized to the samples' size)."""
    import numpy as np

    from ldsr.data.resize import imresize
    from ldsr.evaluation.generation import image_grid
    from ldsr.io import list_images, read_image, write_image

    size, ch = samples[0].shape[0], samples[0].shape[2]
    real = []
    for p in list_images(real_dir):
        im, _ = read_image(p)
        s = min(im.shape[:2])
        y, x = (im.shape[0] - s) // 2, (im.shape[1] - s) // 2
        im = im[y : y + s, x : x + s, :ch] if im.shape[2] >= ch else np.repeat(im[y : y + s, x : x + s], ch, 2)
        real.append(np.clip(imresize(im, size=(size, size)), 0, 1))
    cols = int(np.ceil(np.sqrt(len(samples))))
    left, right = image_grid(samples, columns=cols), image_grid(real, columns=max(1, cols // 2))
    h = max(left.shape[0], right.shape[0])
    pad = lambda g: np.pad(g, ((0, h - g.shape[0]), (0, 0), (0, 0)), constant_values=1.0)  # noqa: E731
    gap = np.ones((h, 12, left.shape[2]), np.float32)
    write_image(path, np.concatenate([pad(left), gap, pad(right)], axis=1), bit_depth=8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ldsr.cli.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default: demo)")
    p.add_argument("--preset", action="append", default=None,
                   help=f"LR degradation preset; repeat for several (default: {' and '.join(PRESETS)})")  # fmt: skip
    p.add_argument("--steps", type=int, default=None, help="diffusion sampler steps (default: each model's own)")
    p.add_argument("--draws", type=int, default=None, help="diffusion draws per image (default: each model's own)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1, the fastest here on a loaded 2-core CPU)")  # fmt: skip
    a = p.parse_args(argv)
    import torch

    # The networks see 32x32 latents: on a loaded 2-core machine a second intra-op thread made one upscale 2-20x
    # slower than one thread (mri-x4, one 128x128 image: sharp 1.5 s vs 22 s; the whole demo 2.0 vs 15.7 min).
    torch.set_num_threads(max(1, a.threads))
    return run(a.out, presets=tuple(a.preset or PRESETS), steps=a.steps, draws=a.draws)


if __name__ == "__main__":
    raise SystemExit(main())
