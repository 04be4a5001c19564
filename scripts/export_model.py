"""Export a trained SR / baseline checkpoint as a shipped model under src/ldsr/assets/models/<NAME>/.

    python scripts/export_model.py RUN_DIR NAME [--no-half] [--card key=value ...] [--default steps=10 ...]
        [--out DIR] [--max-mb 25]

RUN_DIR may be a run dir (its latest checkpoint), a checkpoint folder or a .safetensors file. `--card` entries
(e.g. `--card licence=CC-BY-4.0 --card "Trained on=2-core CPU"`) are prose notes of MODEL_CARD.md; results are
never typed here: `experiments/render_cards.py` renders them from the evaluation summaries. The key ends at the
first `=` that is not part of `>=`, `<=`, `==` or `!=`. Paths in the stored config become relative to the
working directory.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

from ldsr.pipeline import MODELS_DIR
from ldsr.pipeline.export import export_model


def _card_entry(text: str) -> tuple[str, str]:
    m = re.search(r"(?<![<>=!])=(?!=)", text)  # not the `=` of `>=` in "slices z >= 120"
    key, sep, value = (text[: m.start()], "=", text[m.end() :]) if m else (text, "", "")
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
