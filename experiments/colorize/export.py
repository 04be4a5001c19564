"""Export a colorize run as a shipped model folder: EMA weights in fp16 (buffers kept), config.json with the
run's config (input paths made relative to the repository), and MODEL_CARD.md with the held-out table rows
read from an `ldsr evaluate-colorization` summary.json (no typed numbers).

    .venv/bin/python experiments/colorize/export.py RUN OUT_FOLDER [--summary runs/colorize/eval/summary.json]
        [--row diffusion-latent]

The folder must stay within the 25 MB budget of a shipped model (checked).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ldsr.models.checkpoint import load_weights, read_info, resolve_checkpoint
from ldsr.models.params import count_parameters
from ldsr.pipeline.export import portable, write_half_folder

ROOT = Path(__file__).resolve().parents[2]
LIMIT_MB = 25.0


def _card(info: dict[str, Any], n_params: int, summary: Path | None, row: str) -> str:
    cfg = info["config"]
    col = cfg["colorize"]
    lines = [
        "# histology-colorize",
        "",
        "Colorization of grey H&E histology: `ldsr colorize -i GREY -o OUT -m histology-colorize [--samples N]`.",
        "The output keeps the input's CIELAB L* exactly (predicted chroma recombined with the input's luminance).",
        "",
        f"- method: {col['method']} ({col['space']} space), UNet `{col['unet']}`, {col['schedule']} schedule, "
        f"T = {col['timesteps']}, {col['prediction']}-prediction, sampler {col['sampler']} ({col['steps']} steps)",
        f"- parameters (with the frozen autoencoder): {n_params:,}",
        f"- training: {info['step']} steps, batch {cfg['train']['batch_size']}, {cfg['data']['hr_size']}-pixel crops "
        f"of {', '.join(cfg['data']['train'])} (train split: {', '.join(cfg['data']['split_rules'])})",
        f"- ldsr {info.get('ldsr_version')}",
    ]
    if summary is not None:
        methods = json.loads(summary.read_text(encoding="utf-8"))["methods"]
        lines += ["", f"Held-out table (`{summary}`; row `{row}` is this model):", "",
                  "| method | PSNR (dB) | SSIM | ΔE2000 | colourfulness ratio | params | s / image |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, m in methods.items():
            lines.append(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['delta_e2000']:.2f} | "
                         f"{m['colourfulness_ratio']:.3f} | {int(m['params']):,} | {m['seconds']:.3f} |")  # fmt: skip
        lines += _verdict(summary, methods, row)
    lines += ["", "Data: OpenSlide CMU-1-Small-Region (CC0 1.0); Kather et al. 2016 (CC BY 4.0).", ""]
    return "\n".join(lines)


def _verdict(summary: Path, methods: dict[str, Any], row: str) -> list[str]:
    """Where this model stands among the trained methods (run.json beside the summary names them), in words."""
    run_file = summary.parent / "run.json"
    if not run_file.is_file():
        return []
    run = json.loads(run_file.read_text(encoding="utf-8"))
    closer = [m for m in run["trained"] if methods[m]["delta_e2000"] < methods[row]["delta_e2000"]]
    text = ("Among the trained methods this model has the lowest ΔE2000." if not closer else
            f"At this training budget it is NOT the best colorizer: {', '.join(closer)} came closer to the references "
            f"(lower ΔE2000; the lowest, {min(closer, key=lambda m: methods[m]['delta_e2000'])}, by "
            f"{methods[row]['delta_e2000'] - min(methods[m]['delta_e2000'] for m in closer):.2f}). What it adds: "
            "several plausible colourings per image (`--samples N`) and their spread.")  # fmt: skip
    machine = json.loads((summary.parent / "machine.json").read_text(encoding="utf-8"))
    return ["", text, f"Training: `{run['train_command']}`; table: `{run['eval_command']}`; {machine['cpus']}-core "
            f"{machine['processor']}, {run['device']}, {run['date'][:10]}."]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--summary", type=Path, default=None)
    ap.add_argument("--row", default="diffusion-latent")
    args = ap.parse_args()
    folder = resolve_checkpoint(args.run)
    state, _ = load_weights(folder, ema=True)
    info = read_info(folder)
    if info["config"].get("task") != "colorize":
        raise SystemExit(f"{folder}: not a colorize checkpoint")
    info = portable(info, ROOT)  # config, model_config, ...: no folder of this machine is shipped
    from ldsr.config import config_from_dict
    from ldsr.models.build import build_model

    n_params = count_parameters(build_model(config_from_dict(info["config"]), state))
    try:
        size = write_half_folder(args.out, state, info, _card(info, n_params, args.summary, args.row), max_mb=LIMIT_MB)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    print(f"{args.out}: {size:.1f} MB, {n_params:,} parameters")


if __name__ == "__main__":
    main()
