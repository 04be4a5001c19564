"""`make demo`: degrade the bundled sample images, upscale them with bicubic and every shipped model that
fits, and write demo/ with the SR images, comparison figures and a PSNR/SSIM table (also printed).

Runs on a 2-core CPU in a few minutes: HR crops are 128x128 and diffusion models use their own (fast) sampler
defaults. The
default degradation is `bsrgan` (blur, down-sampling, noise and JPEG in random order), the one the shipped
models were trained on; `--preset bicubic` gives the classic benchmark protocol.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldsr.assets import SAMPLES_DIR

FIXTURES = SAMPLES_DIR  # ldsr/assets/samples/{mri,histology}: installed with the wheel
RUNS = (("mri", 1, 4), ("histology", 3, 4), ("histology", 3, 8))  # (fixture folder, channels, scale)


def _models_for(channels: int, scale: int) -> list[str]:
    from ldsr.models.checkpoint import read_config
    from ldsr.pipeline import shipped_models

    out = []
    for name, path in shipped_models().items():
        cfg = read_config(path)
        if cfg["channels"] == channels and cfg["scale"] == scale and cfg["task"] in ("sr", "baseline"):
            out.append(name)
    return out


def run(
    out: Path,
    *,
    hr_size: int = 128,
    preset: str = "bsrgan",
    seed: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    runs: tuple[tuple[str, int, int], ...] = RUNS,
) -> int:
    """Degrade -> upscale -> measure, per (fixture group, scale). Returns the exit code."""
    from ldsr.data.degrade import degrade_folder
    from ldsr.evaluation.report import EvalConfig, evaluate

    code = 0
    for group, channels, scale in runs:
        src = FIXTURES / group
        name = f"{group}_x{scale}"
        pairs = out / name / "pairs"
        print(f"\n== {name}: degrade {src} ({preset}, x{scale}, HR crop {hr_size}) -> {pairs}")
        deg = degrade_folder(src, pairs, scale=scale, preset=preset, seed=seed, hr_size=hr_size)
        code |= deg.exit_code
        models = ("bicubic", *_models_for(channels, scale))
        if len(models) == 1:
            print("(no shipped model for these images yet: bicubic only)")
        cfg = EvalConfig(
            gt_dir=pairs / "hr",
            lr_dir=pairs / "lr",
            models=models,
            out_dir=out / name,
            scale=scale,
            steps=steps,
            sampler=sampler,
            seed=seed,
            command=" ".join(["python -m ldsr.cli.demo", *sys.argv[1:]]),
        )
        report = evaluate(cfg, progress=False)
        print((out / name / "summary.md").read_text(encoding="utf-8").split("\n## ")[0])
        code |= report.exit_code
    print(f"\nwrote {out}/ (SR images in */sr/, figures */*.png, tables */summary.md)")
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ldsr.cli.demo", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default: demo)")
    p.add_argument("--preset", default="bsrgan", help="degradation preset (default: bsrgan, as the shipped models)")
    p.add_argument("--steps", type=int, default=None, help="diffusion sampler steps (default: each model's own)")
    a = p.parse_args(argv)
    return run(a.out, preset=a.preset, steps=a.steps)


if __name__ == "__main__":
    raise SystemExit(main())
