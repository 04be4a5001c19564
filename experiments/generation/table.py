"""One Markdown table from `ldsr evaluate-generation` reports (generation.json), a row per report: the distances
in every feature space (named and versioned in the header), precision / recall, near-copy share, intensity
distance and the sampling cost from the generate run.

    python experiments/generation/table.py runs/gen/eval/mri_*/generation.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def row(r: dict[str, Any], spaces: list[str]) -> str:
    run = r.get("run") or {}
    mem = r.get("memorisation") or {}
    cells = [Path(r["fake"]).parent.name if Path(r["fake"]).name == "samples" else Path(r["fake"]).name]
    cells.append(f"{run.get('sampler') or 'one pass'} {run.get('steps') or ''}".strip())
    for s in spaces:
        d = r["spaces"].get(s)
        cells += [f"{d['frechet']:.4g}", f"{1e3 * d['kid']:.3g}"] if d else ["-", "-"]
    first = r["spaces"][next(iter(r["spaces"]))]
    cells += [f"{first['precision']:.3f}", f"{first['recall']:.3f}"]
    cells.append(f"{mem['near_copy_share']:.3f}" if mem else "-")
    cells.append(", ".join(f"{v:.4f}" for v in r["intensity_w1"]))
    cells.append(f"{run['parameters'] / 1e6:.2f}M" if "parameters" in run else "-")
    cells.append(f"{run['seconds_per_sample']:.3g}" if "seconds_per_sample" in run else "-")
    cells.append(f"{run['peak_memory_mb']:.0f} ({run.get('memory_kind', '?')})" if "peak_memory_mb" in run else "-")
    return "| " + " | ".join(cells) + " |"


def main(paths: list[str]) -> None:
    reports = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    spaces = list(dict.fromkeys(s for r in reports for s in r["spaces"]))
    versions = {s: d["version"] for r in reports for s, d in r["spaces"].items()}
    head = ["model", "sampler"]
    for s in spaces:
        head += [f"Frechet ({s} v{versions[s]})", f"KID x1e3 ({s})"]
    head += ["precision", "recall", "near-copy share", "intensity W1", "params", "s / sample", "peak MB"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in reports:
        print(row(r, spaces))


if __name__ == "__main__":
    main(sys.argv[1:])
