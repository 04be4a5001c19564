"""Mixed-precision training check (needs a GPU): the same tiny SR3 and VAE runs in fp32, bf16 and fp16.

    python experiments/scripts/precision_check.py OUT_DIR [--steps 300]

Each run trains a real ldsr model through ldsr.training.loop (accelerate's autocast and, for fp16, its gradient
scaler) on the bundled MRI fixtures, then loads its checkpoint and upscales / reconstructs the fixtures in fp32.
It writes OUT_DIR/precision.md and .json: per precision, the mean loss of the first and last 10 % of the steps,
whether every logged loss was finite, steps per second, peak GPU memory, and the validation PSNR at the end.
A precision passes when its losses stay finite and fall and its final validation PSNR is within 1 dB of fp32's.
`--cpu` rehearses the script without a GPU (fp32 and bf16 only: CPU autocast has no fp16 training).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny"
PRECISIONS = ("no", "bf16", "fp16")


def _run(config: str, precision: str, steps: int, run_dir: Path) -> dict[str, float | bool | str]:
    from ldsr.config import load_config
    from ldsr.training.loop import train

    cfg = load_config(TINY / config, [
        f"train.precision={precision}", f"train.steps={steps}", "train.batch_size=16", "data.hr_size=64",
        "train.ckpt_every=0", f"train.val_every={steps}", "train.log_every=1", "train.warmup_steps=20",
        "train.ema_decay=0.99", f"train.run_dir={run_dir}",
    ])  # fmt: skip
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    train(cfg, progress=False)
    seconds = time.perf_counter() - t0
    rows = list(csv.DictReader((run_dir / "log.csv").open()))
    losses = [float(r["loss"]) for r in rows if r.get("loss")]
    k = max(1, len(losses) // 10)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    val = [float(r["val_psnr"]) for r in rows if r.get("val_psnr")]
    return {
        "model": config.removesuffix(".yaml"),
        "precision": precision,
        "loss_first": first,
        "loss_last": last,
        "finite": all(math.isfinite(v) for v in losses),
        "steps_per_s": steps / seconds,
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan"),
        "val_psnr": val[-1] if val else float("nan"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--cpu", action="store_true", help="rehearse on the CPU (fp32 and bf16)")
    a = p.parse_args()
    if not torch.cuda.is_available() and not a.cpu:
        raise SystemExit("precision_check.py: no CUDA device (fp16 training needs a GPU; --cpu rehearses fp32 / bf16)")
    precisions = PRECISIONS if torch.cuda.is_available() else ("no", "bf16")
    a.out.mkdir(parents=True, exist_ok=True)
    results = []
    for config in ("sr3.yaml", "vae.yaml"):
        for precision in precisions:
            r = _run(config, precision, a.steps, a.out / "runs" / f"{config[:-5]}_{precision}")
            results.append(r)
            print(json.dumps(r), flush=True)
    ref = {r["model"]: r["val_psnr"] for r in results if r["precision"] == "no"}
    lines = [
        f"# Mixed-precision check ({torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}, "
        f"torch {torch.__version__}, {a.steps} steps)",
        "",
        "| model | precision | loss first 10% | loss last 10% | finite | steps/s | peak MB | val PSNR | pass |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ok_all = True
    for r in results:
        ok = bool(r["finite"]) and r["loss_last"] < r["loss_first"] and abs(r["val_psnr"] - ref[r["model"]]) <= 1.0
        ok_all &= ok
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['loss_first']:.4f} | {r['loss_last']:.4f} | {r['finite']} | "
            f"{r['steps_per_s']:.1f} | {r['peak_mb']:.0f} | {r['val_psnr']:.2f} | {'yes' if ok else 'NO'} |"
        )
    (a.out / "precision.md").write_text("\n".join(lines) + "\n")
    (a.out / "precision.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    raise SystemExit(0 if ok_all else 1)


if __name__ == "__main__":
    main()
