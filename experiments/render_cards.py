"""Render the shipped models' MODEL_CARD.md from experiments/cards.yaml and the evaluation summaries it names.

    .venv/bin/python experiments/render_cards.py [--check]

Every number of a card's results comes from the `ldsr evaluate` summary of the run that measured it (see
cards.yaml); `--check` writes nothing and exits 1 when a committed card differs from its rendering.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from ldsr.io import atomic_path
from ldsr.pipeline import shipped_models
from ldsr.pipeline.export import CARD_FILE, CardResult, card_result, render_card

ROOT = Path(__file__).resolve().parents[1]  # summaries are named relative to the repository
SPEC = Path(__file__).resolve().with_name("cards.yaml")


def load_spec(path: Path = SPEC) -> dict[str, dict[str, Any]]:
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {k: v for k, v in spec.items() if k != "common_notes"}


def results_of(entry: dict[str, Any], root: Path = ROOT) -> list[CardResult]:
    return [card_result(r["title"], root / r["summary"], r["methods"], shown=r["summary"]) for r in entry["results"]]


def render(name: str, entry: dict[str, Any], folder: Path) -> str:
    return render_card(folder, notes=entry.get("notes") or {}, results=results_of(entry))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed cards, write nothing")
    args = ap.parse_args(argv)
    shipped, code = shipped_models(), 0
    for name, entry in load_spec().items():
        if name not in shipped:
            print(f"error: {name}: not a shipped model ({', '.join(shipped)})", file=sys.stderr)
            code = 1
            continue
        card = shipped[name] / CARD_FILE
        text = render(name, entry, shipped[name])
        if args.check:
            same = card.is_file() and card.read_text(encoding="utf-8") == text
            print(f"{name}: {'up to date' if same else 'differs from its rendering'}")
            code |= 0 if same else 1
            continue
        with atomic_path(card) as tmp:
            tmp.write_text(text, encoding="utf-8")
        print(f"wrote {card.relative_to(ROOT) if card.is_relative_to(ROOT) else card}")
    return code


if __name__ == "__main__":
    sys.exit(main())
