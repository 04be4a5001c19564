"""Export a trained SR / baseline checkpoint as a shipped model under models/<NAME>/.

    python scripts/export_model.py RUN_DIR NAME [--no-half] [--card key=value ...] [--default steps=10 ...]
        [--out models] [--max-mb 25]

RUN_DIR may be a run dir (its latest checkpoint), a checkpoint folder or a .safetensors file. `--card` entries
(e.g. `--card licence=CC-BY-4.0 --card "PSNR (x4, test)=31.2 dB"`) are added to MODEL_CARD.md as given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ldsr.pipeline import MODELS_DIR
from ldsr.pipeline.export import export_model


def _card_entry(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--card expects key=value, got {text!r}")
    return key.strip(), value.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="run dir, checkpoint folder or .safetensors file")
    ap.add_argument("name", help="shipped model name (a plain folder name)")
    ap.add_argument("--no-half", dest="half", action="store_false", help="keep float32 weights (default: float16)")
    ap.add_argument(
        "--card",
        type=_card_entry,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an entry for MODEL_CARD.md (repeatable), e.g. licence=... or measured results",
    )
    ap.add_argument(
        "--default",
        type=_card_entry,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="inference default for a diffusion model (sampler, steps, eta, samples), e.g. steps=10",
    )
    ap.add_argument("--out", type=Path, default=MODELS_DIR, help=f"models folder (default: {MODELS_DIR})")
    ap.add_argument("--max-mb", type=float, default=25.0, help="refuse weights larger than this (MB)")
    args = ap.parse_args(argv)
    try:
        folder = export_model(
            args.run_dir,
            args.name,
            out_root=args.out,
            half=args.half,
            card=dict(args.card),
            max_mb=args.max_mb,
            sampler_defaults={k: yaml.safe_load(v) for k, v in args.default},
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
