"""Export a generate run as a shipped generator folder (`ldsr generate -m NAME`): EMA weights in fp16 (the frozen
autoencoder's included), config.json with the run's config (input paths relative to the repository), and
MODEL_CARD.md whose table is rendered from the benchmark's reports (docs/results/generation_<domain>, the same
function as docs/BENCHMARKS.md; no typed numbers).

    .venv/bin/python experiments/generation/export.py runs/gen/mri_vq src/ldsr/assets/models/mri-gen \
        --results docs/results/generation_mri --name mri-gen

The folder must stay within the 25 MB budget of a shipped model (checked). `--card-only` rewrites the card.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LIMIT_MB = 25.0
sys.path.insert(0, str(ROOT / "experiments"))


def card(name: str, info: dict[str, Any], n_params: int, results: Path, note: str = "") -> str:
    """The model card: what the model is, how it was trained, the benchmark table and where it stands."""
    from render_benchmarks import generation_table

    cfg = info["config"]
    gen = cfg["generate"]
    kind = {"latent": "latent DDPM", "pixel": "pixel DDPM", "gan": "DCGAN"}[gen["model"]]
    lines = [
        f"# {name}",
        "",
        f"Unconditional generation: `ldsr generate -m {name} -n 64 -o OUT [--steps N --sampler dpmpp --seed 0]`.",
        "Samples are synthetic images for augmentation and research; they show no real patient and carry no",
        "diagnostic meaning.",
        "",
        f"- {kind}, UNet `{gen.get('unet')}`, {gen.get('schedule')} schedule, T = {gen.get('timesteps')}, "
        f"{gen.get('prediction')}-prediction, {gen.get('loss')} loss; default sampler {gen.get('sampler')} "
        f"({gen.get('steps')} steps)",
        f"- autoencoder: {info.get('autoencoder_config', {}).get('autoencoder', {}).get('kind', '?')} f="
        f"{info.get('autoencoder_config', {}).get('autoencoder', {}).get('factor', '?')} (frozen; weights included)",
        f"- parameters (with the autoencoder): {n_params:,}",
        f"- training: {info['step']} steps, batch {cfg['train']['batch_size']}, {cfg['data']['hr_size']}² images, "
        f"{cfg['channels']} channel(s); data: {', '.join(cfg['data']['train'])}",
        f"- ldsr {info.get('ldsr_version')}",
        "",
        f"Benchmark (`{results.relative_to(ROOT) if results.is_absolute() else results}`; every generator trained",
        "for the same CPU minutes on the same training split; the shipped row was designated before the run):",
        "",
        generation_table(results).rstrip(),
        "",
        *([note, ""] if note else []),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--steps", type=int, default=None, help="shipped default sampler steps (the benchmark's)")
    ap.add_argument("--note", default="", help="what the table does not say (how the samples look, limits)")
    ap.add_argument("--card-only", action="store_true")
    a = ap.parse_args()

    from ldsr.config import config_from_dict
    from ldsr.models.build import build_model
    from ldsr.models.checkpoint import load_weights, read_info, resolve_checkpoint
    from ldsr.models.params import count_parameters
    from ldsr.pipeline.export import portable, write_half_folder

    folder = resolve_checkpoint(a.out if a.card_only else a.run)
    state, _ = load_weights(folder, ema=True)
    info = portable(read_info(folder), ROOT)
    if info["config"].get("task") != "generate":
        raise SystemExit(f"{folder}: not a generate checkpoint")
    if a.steps is not None:
        info["config"]["generate"]["steps"] = a.steps
    n_params = count_parameters(build_model(config_from_dict(info["config"]), {k: v.float() for k, v in state.items()}))
    text = card(a.name, info, n_params, a.results, a.note)
    if a.card_only:
        (a.out / "MODEL_CARD.md").write_text(text, encoding="utf-8")
        return
    try:
        size = write_half_folder(a.out, state, info, text, max_mb=LIMIT_MB, config_extra={"dtype": "float16"})
    except ValueError as e:
        raise SystemExit(str(e)) from None
    print(f"{a.out}: {size:.1f} MB, {n_params:,} parameters")


if __name__ == "__main__":
    main()
