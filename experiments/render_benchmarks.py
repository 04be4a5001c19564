"""Render the result tables of docs/BENCHMARKS.md from the evaluation summaries in docs/results/.

Each table sits between `<!-- results:NAME -->` and `<!-- /results -->` in docs/BENCHMARKS.md, where NAME is a
folder of docs/results/ holding an `ldsr evaluate` run's summary.json, results.csv and machine.json (copied there by
experiments/scripts/eval_blind.sh). Paired differences are per image (mean ± standard error std(d)/sqrt(n), and
on how many images the method is higher). Nothing here is typed by hand: rerun this script after an evaluation.

    .venv/bin/python experiments/render_benchmarks.py          # rewrite the tables in place
    .venv/bin/python experiments/render_benchmarks.py --check  # exit 1 if a table differs from its summary
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"(<!-- (?P<kind>results|validation|colorization|bench|generation|tilegap):(?P<name>[\w.-]+) -->\n)"
    r"(?P<body>.*?)(<!-- /(?P=kind) -->)",
    re.S,
)
# Display names of the methods (an evaluate method is named after its model argument).
NAMES = {
    "bicubic": "bicubic",
    "srcnn_x4_mri": "SRCNN (blind)",
    "esrgan_x4_mri": "ESRGAN-small (blind, L1)",
    "srcnn_x4_histo": "SRCNN (blind)",
    "mri-x4": "mri-x4",
    "histology-x4": "histology-x4",
    "histology-x8": "histology-x8",
    "mri_x4": "mri-x4 blind fine-tune",
    "mri-x4-previous": "mri-x4 (previous, bsrgan-trained)",
    "mri-x4-consistency-off": "mri-x4, --consistency off",
    "histology_x4": "histology-x4 blind fine-tune",
}


def display(name: str) -> str:
    """The table label of an evaluate method name (a mode suffix such as ' (sharp)' is kept)."""
    base, sep, mode = name.partition(" (")
    return NAMES.get(base, base) + (f" ({mode}" if sep else "")


def _pct(x: float | None) -> str:
    return "/" if x is None else f"{100 * x:.1f} %"


def per_image(folder: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {image: {metric: value}}} from results.csv (its '#' provenance lines skipped)."""
    with open(folder / "results.csv", newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        out.setdefault(r["method"], {})[r["image"]] = {k: float(r[k]) for k in ("psnr_y", "ssim_y")}
    return out


def paired(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], key: str, digits: int) -> str:
    """Mean ± standard error of a - b over the images both have, and the count of images where a > b."""
    common = sorted(set(a) & set(b))
    d = [a[i][key] - b[i][key] for i in common]
    if len(d) < 2:
        return "/"
    mean = sum(d) / len(d)
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d))
    return f"{mean:+.{digits}f} ± {se:.{digits}f} ({sum(x > 0 for x in d)}/{len(d)})"


def table(folder: Path) -> str:
    s = json.loads((folder / "summary.json").read_text())
    machine = json.loads((folder / "machine.json").read_text())
    imgs = per_image(folder)
    ref = "bicubic"
    head = (
        "| Method | PSNR Y | SSIM Y | PSNR vs bicubic | SSIM vs bicubic | LR-PSNR | HFEN | HF ratio "
        "| calibration | s/image |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for m in s["methods"]:
        name = m["method"]
        vs = name != ref and ref in imgs and name in imgs
        lines.append(
            f"| {display(name)} | {m['psnr_y']:.2f} | {m['ssim_y']:.4f} | "
            f"{paired(imgs[name], imgs[ref], 'psnr_y', 2) if vs else '/'} | "
            f"{paired(imgs[name], imgs[ref], 'ssim_y', 4) if vs else '/'} | {m['lr_psnr']:.2f} | "
            f"{m['hfen_y']:.3f} | {m['hf_ratio_y']:.2f} | {_pct(m.get('calibration'))} | "
            f"{m['seconds_per_image']:.3f} |"
        )
    p = s["provenance"]
    lines.append("")
    lines.append(
        f"{p['n_images']} images, x{p['scale']}; `{p['command']}`; "
        f"{machine['cpus']}-core {machine['processor']}, {p['device']}, {p['date'][:10]}."
    )
    return "\n".join(lines) + "\n"


def validation_table(path: Path) -> str:
    """PSNR / SSIM (Y) per method and LR kind from experiments/scripts/validate_consistency.py --out."""
    v = json.loads(path.read_text())
    kinds = [k for k in v["rows"][0] if k != "method"]
    lines = ["| Method | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for r in v["rows"]:
        name = r["method"]
        base = name.removesuffix(" + back-projection")
        label = NAMES.get(Path(base).name, base) + (" + back-projection" if base != name else "")
        lines.append(f"| {label} | " + " | ".join(f"{r[k][0]:.2f} / {r[k][1]:.4f}" for k in kinds) + " |")
    lines += [
        "",
        f"PSNR / SSIM on Y, x{v['scale']}; `{v.get('command', 'validate_consistency.py')}`; {v['date'][:10]}.",
    ]
    return "\n".join(lines) + "\n"


def colorization_table(folder: Path) -> str:
    """The colorization table from an `ldsr evaluate-colorization` run copied to `folder` (summary.json,
    results.csv, machine.json, run.json: the shipped method's row name, the trained methods, commands and date).
    ΔE2000 differences are paired per image against the shipped model (negative: the method is closer)."""
    s = json.loads((folder / "summary.json").read_text())["methods"]
    run = json.loads((folder / "run.json").read_text())
    machine = json.loads((folder / "machine.json").read_text())
    with open(folder / "results.csv", newline="") as f:
        imgs: dict[str, dict[str, dict[str, float]]] = {}
        for r in csv.DictReader(f):
            imgs.setdefault(r["method"], {})[r["image"]] = {"delta_e2000": float(r["delta_e2000"])}
    ship = run["shipped"]
    lines = ["| Method | PSNR (dB) | SSIM | ΔE2000 | ΔE2000 vs shipped | colourfulness ratio | max ΔL* | params "
             "| s / image |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, m in s.items():
        vs = paired(imgs[name], imgs[ship], "delta_e2000", 2) if name != ship else "/"
        label = f"**{name}** (shipped)" if name == ship else name
        lines.append(f"| {label} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['delta_e2000']:.2f} | {vs} | "
                     f"{m['colourfulness_ratio']:.3f} | {m['luminance_max_err']:.1e} | {int(m['params']):,} | "
                     f"{m['seconds']:.3f} |")  # fmt: skip
    best = min(run["trained"], key=lambda k: s[k]["delta_e2000"])
    gap = s[ship]["delta_e2000"] - s[best]["delta_e2000"]
    verdict = ("the shipped model has the lowest ΔE2000 of the trained methods" if best == ship else
               f"the shipped model misses the lowest ΔE2000 of the trained methods ({best}) by {gap:.2f}")  # fmt: skip
    n = int(next(iter(s.values()))["images"])
    lines += ["", f"{n} held-out tiles; {verdict}. Training: `{run['train_command']}`; table: "
              f"`{run['eval_command']}`; {machine['cpus']}-core {machine['processor']}, {run['device']}, "
              f"{run['date'][:10]}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def bench_table(folder: Path) -> str:
    """Seconds and peak RSS of a default upscale per output size (experiments/tiling/upscale_bench.py)."""
    v = json.loads((folder / "summary.json").read_text())
    lines = ["| Output | Seconds | s / output megapixel | Peak RSS (MB) | Measured with |", "|---:|---:|---:|---:|---|"]
    for r in v["rows"]:
        lines.append(f"| {r['output']}² | {r['seconds']:.1f} | {r['seconds_per_mp']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"`{r['source']}` |")  # fmt: skip
    lines += ["", f"{v['model']}, its defaults; `{v['command']}`; {v['machine']}; {v['date']}."]
    big = [r["seconds_per_mp"] for r in v["rows"] if r["output"] >= 1024]
    if len(big) > 1:
        lo, hi = min(big), max(big)
        mid = (lo + hi) / 2
        verdict = "within" if hi <= 1.25 * mid and lo >= 0.75 * mid else "NOT within"
        lines += ["", f"Time per output megapixel from 1024² up: {lo:.1f}-{hi:.1f} s, {100 * (hi - mid) / mid:.0f} % "
                  f"either side of their midpoint ({verdict} ±25 %); largest over smallest {hi / lo:.2f}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def tile_gap_table(folder: Path) -> str:
    """Automatic tiles vs untiled, PSNR against the HR per held-out image (experiments/tiling/auto_tile_gap.py)."""
    v = json.loads((folder / "summary.json").read_text())
    lines = ["| Model | Image | tile (LR px) | PSNR, automatic tiles | PSNR, untiled | difference (dB) | "
             "tiled vs untiled output (dB) |", "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in v["rows"]:
        lines.append(f"| {r['model']} | {r['image']} | {r['tile']} | {r['psnr_auto']:.3f} | {r['psnr_untiled']:.3f} | "
                     f"{r['gap_db']:+.3f} | {r['auto_vs_untiled_db']:.1f} |")  # fmt: skip
    worst = v["worst_gap_db"]
    verdict = "within" if worst <= 0.05 else "NOT within"
    lines += ["", f"Largest difference {worst:.3f} dB ({verdict} 0.05 dB). `{v['command']}`; {v['machine']}; "
              f"{v['date']}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def generation_table(folder: Path) -> str:
    """The generation table from `ldsr evaluate-generation` reports copied to `folder` (ROW.json each) and run.json:
    the rows in order with their label, training steps and minutes, the commands, the date, the shipped row."""
    run = json.loads((folder / "run.json").read_text())
    machine = json.loads((folder / "machine.json").read_text())
    reports = {k: json.loads((folder / f"{k}.json").read_text()) for k in run["rows"]}
    spaces = list(dict.fromkeys(s for r in reports.values() for s in r["spaces"]))
    head = ["Model", "trained", "sampler (NFE)", "n"]
    for s in spaces:
        v = next(r["spaces"][s]["version"] for r in reports.values() if s in r["spaces"])
        head += [f"Fréchet ({s} v{v})", f"KID ×1e3 ({s})"]
    head += ["precision", "recall", "near-copy share", "intensity W1", "params", "s / sample", "peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]  # n onwards: numbers
    for key, meta in run["rows"].items():
        r, g = reports[key], reports[key].get("run") or {}
        label = f"**{meta['label']}** (shipped)" if key == run.get("shipped") else meta["label"]
        trained = f"{meta['steps']} steps, {meta['minutes']:g} min" if "steps" in meta else "/"
        sampler = f"{g['sampler']} {g['steps']} ({g['nfe']})" if g.get("sampler") else ("one pass" if g else "/")
        cells = [label, trained, sampler, str(r.get("n_fake", "?"))]
        for s in spaces:
            d = r["spaces"].get(s)
            cells += [f"{d['frechet']:.3g}", f"{1e3 * d['kid']:.3g}"] if d else ["/", "/"]
        first = r["spaces"][spaces[0]]
        mem = r.get("memorisation") or {}
        cells += [f"{first['precision']:.2f}", f"{first['recall']:.2f}",
                  _pct(mem["near_copy_share"]) if mem else "/", ", ".join(f"{v:.4f}" for v in r["intensity_w1"]),
                  f"{g['parameters'] / 1e6:.2f}M" if g else "/", f"{g['seconds_per_sample']:.3g}" if g else "/",
                  f"{g['peak_memory_mb']:.0f}" if g else "/"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    n_real = {r["n_real"] for r in reports.values() if "n_real" in r}
    lines += ["", _generation_verdict(run, reports, spaces)]
    lines += ["", f"Samples against {', '.join(map(str, sorted(n_real))) or '?'} held-out images. Training: "
              f"`{run['train_command']}`; samples and measures: `{run['eval_command']}`; {machine['cpus']}-core "
              f"{machine['processor']}, {run['device']}, {run['date'][:10]}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _generation_verdict(run: dict[str, Any], reports: dict[str, Any], spaces: list[str]) -> str:
    """Where the shipped generator stands against the GAN row (run["baseline"]) in each space, in words:
    closer only when both its Fréchet distance and its KID are lower."""
    ship, base = run.get("shipped"), run.get("baseline")
    if ship not in reports or base not in reports:
        return "No shipped generator in this table."
    label, base_label = run["rows"][ship]["label"], run["rows"][base]["label"]
    parts = []
    for space in spaces:
        a, b = reports[ship]["spaces"].get(space), reports[base]["spaces"].get(space)
        if a is None or b is None:
            continue
        closer = a["frechet"] < b["frechet"] and a["kid"] < b["kid"]
        parts.append(f"{'closer to' if closer else 'NOT closer to'} the held-out images than the {base_label} in "
                     f"{space} (Fréchet {a['frechet']:.3g} vs {b['frechet']:.3g}, KID ×1e3 {1e3 * a['kid']:.3g} vs "
                     f"{1e3 * b['kid']:.3g})")  # fmt: skip
    copies = (reports[ship].get("memorisation") or {}).get("near_copy_share")
    return (f"The shipped {label} is " + "; ".join(parts) + f". Near-copies of training images among its samples: "
            f"{_pct(copies)}.")  # fmt: skip


def _block(m: re.Match[str], results: Path) -> str:
    name, kind = m.group("name"), m.group("kind")
    if kind == "results":
        body = table(results / name)
    elif kind == "colorization":
        body = colorization_table(results / name)
    elif kind == "bench":
        body = bench_table(results / name)
    elif kind == "generation":
        body = generation_table(results / name)
    elif kind == "tilegap":
        body = tile_gap_table(results / name)
    else:
        body = validation_table(results / f"{name}.json")
    return m.group(1) + body + m.group(5)


def render(text: str, results: Path) -> str:
    return BLOCK.sub(lambda m: _block(m, results), text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "results")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    old = a.doc.read_text()
    new = render(old, a.results)
    if a.check:
        sys.exit(0 if new == old else 1)
    if new != old:
        a.doc.write_text(new)


if __name__ == "__main__":
    main()
