"""Copy the generation benchmark's reports to docs/results/generation_<domain>/ for docs/BENCHMARKS.md and the cards:
ROW.json (the `ldsr evaluate-generation` report of each row), run.json (row labels; training steps read from each
run's newest checkpoint and its minutes from the run's config; commands; shipped and baseline rows; date) and
machine.json.

    python experiments/generation/collect.py --domain mri --shipped vq \
        --rows gan="GAN (DCGAN)" pixel="DDPM (pixel)" vae=VAE-DDPM vae_ddpm="VAE-DDPM, 1000-step DDPM" \
               vq=VQ-DDPM vq_ddpm="VQ-DDPM, 1000-step DDPM" real_train="real training images (reference)"

A row KEY reads runs/gen/eval/<domain>_KEY/generation.json; its training run is runs/gen/<domain>_<KEY without
_ddpm> (none for real_train).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "runs" / "gen"


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split()[:2])  # e.g. "AMD EPYC"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _training(domain: str, key: str) -> dict[str, object]:
    """steps (newest checkpoint) and minutes (train.max_minutes) of the run behind a row; {} for references."""
    run = GEN / f"{domain}_{key.removesuffix('_ddpm')}"
    steps = sorted((run / "checkpoints").glob("step_*")) if run.is_dir() else []
    if not steps:
        return {}
    cfg = json.loads((steps[-1] / "config.json").read_text())
    return {"steps": int(cfg["step"]), "minutes": cfg["config"]["train"]["max_minutes"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--domain", required=True)
    ap.add_argument("--rows", nargs="+", required=True, help="KEY=label, in table order")
    ap.add_argument("--shipped", default=None, help="the row of the shipped generator")
    ap.add_argument("--baseline", default="gan", help="the row it is compared with in words")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    out = a.out or ROOT / "docs" / "results" / f"generation_{a.domain}"
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for item in a.rows:
        key, label = item.split("=", 1)
        shutil.copyfile(GEN / "eval" / f"{a.domain}_{key}" / "generation.json", out / f"{key}.json")
        rows[key] = {"label": label, **_training(a.domain, key)}
    env = f"DOMAIN={a.domain} " if a.domain != "mri" else ""
    run = {
        "rows": rows, "shipped": a.shipped, "baseline": a.baseline, "device": "cpu",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "train_command": f"{env}bash experiments/generation/cpu.sh train MODEL MINUTES (one torch thread, two jobs "
                         "at once)",
        "eval_command": f"{env}bash experiments/generation/cpu.sh sample MODEL && {env}bash "
                        "experiments/generation/cpu.sh eval MODEL",
    }  # fmt: skip
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    machine = {"cpus": os.cpu_count(), "machine": platform.machine(), "processor": _processor()}
    (out / "machine.json").write_text(json.dumps(machine) + "\n")
    print(out)


if __name__ == "__main__":
    main()
