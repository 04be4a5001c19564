"""Table (steps_sweep.md) and plot (steps_sweep.png) of a `experiments/scripts/steps_sweep.sh` output folder.

    .venv/bin/python experiments/scripts/plot_steps_sweep.py runs/cpu/steps_sweep/mri-x4

Reads every `<sampler>_<steps>/summary.json` below the folder (one method each) and writes PSNR / SSIM (Y) and
seconds per image against the number of network evaluations.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    a = p.parse_args()
    rows = []
    for f in sorted(a.folder.glob("*/summary.json")):
        s = json.loads(f.read_text())
        m = s["methods"][0]
        rows.append(
            {
                "run": f.parent.name,
                "sampler": m["sampler"],
                "draws": m.get("draws", 1),
                "nfe": m["nfe"] // m.get("draws", 1),
                "psnr": m["psnr_y"],
                "ssim": m["ssim_y"],
                "sec": m["seconds_per_image"],
                "n": m["n_images"],
                "date": s["provenance"]["date"],
            }
        )
    if not rows:
        raise SystemExit(f"no */summary.json under {a.folder}")
    rows.sort(key=lambda r: (r["draws"], r["sampler"] != "dpmpp", r["nfe"]))
    lines = [
        "| sampler | steps (NFE per draw) | draws averaged | PSNR (Y) | SSIM (Y) | s / image |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['sampler']} | {r['nfe']} | {r['draws']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['sec']:.2f} |"
        for r in rows
    ]
    lines.append(f"\n{rows[0]['n']} images; from {a.folder}/*/summary.json ({rows[0]['date'][:10]}).")
    (a.folder / "steps_sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, label in zip(axes, ("psnr", "ssim", "sec"), ("PSNR (dB, Y)", "SSIM (Y)", "seconds / image")):
        for draws in sorted({r["draws"] for r in rows}):
            for sampler, marker in (("dpmpp", "o-"), ("ddpm", "s")):
                pts = [(r["nfe"], r[key]) for r in rows if r["sampler"] == sampler and r["draws"] == draws]
                if pts:
                    xs, ys = zip(*pts)
                    name = "DPM-Solver++" if sampler == "dpmpp" else "DDPM (full chain)"
                    ax.plot(xs, ys, marker, label=f"{name}, " + ("1 draw" if draws == 1 else f"mean of {draws}"))
        ax.set_xscale("log")
        ax.set_xlabel("steps (network evaluations per draw)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"{a.folder.name}: quality and time against sampling steps")
    fig.tight_layout()
    fig.savefig(a.folder / "steps_sweep.png", dpi=120)


if __name__ == "__main__":
    main()
