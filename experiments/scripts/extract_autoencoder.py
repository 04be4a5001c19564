"""Write the autoencoder inside a latent SR checkpoint (e.g. a shipped model) as its own autoencoder checkpoint.

A latent SR checkpoint stores its frozen autoencoder's weights under `autoencoder.` and its config section in
`config["autoencoder"]`; a fine-tuning run (`sr.autoencoder: <folder>`, `sr.init_from: <shipped model>`) needs
that autoencoder as an autoencoder checkpoint folder. Weights are copied as float32, unchanged otherwise.

    .venv/bin/python experiments/scripts/extract_autoencoder.py mri-x4 runs/ae/mri-x4
"""

from __future__ import annotations

import argparse

import torch

from ldsr.models.checkpoint import load_weights, save_checkpoint
from ldsr.pipeline import shipped_models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="shipped model name or latent SR checkpoint folder")
    ap.add_argument("out", help="autoencoder checkpoint folder to write")
    a = ap.parse_args()
    src = str(shipped_models().get(a.source, a.source))
    state, run = load_weights(src, ema=True)
    if run.get("task") != "sr" or "autoencoder" not in run:
        raise SystemExit(f"{src}: not a latent SR checkpoint")
    ae = {k.removeprefix("autoencoder."): v.float() for k, v in state.items() if k.startswith("autoencoder.")}
    config = {
        "task": "autoencoder",
        "channels": run["channels"],
        "scale": run["scale"],
        "seed": run.get("seed", 0),
        "autoencoder": run["autoencoder"],
    }
    scale = float(ae["scale_factor"]) if "scale_factor" in ae else 1.0
    save_checkpoint(
        a.out,
        model=ae,
        ema=ae,
        config=config,
        step=0,
        model_config=run["autoencoder"],
        metadata={"scale_factor": scale, "extracted_from": a.source},
        update_latest=False,
    )
    print(
        f"{a.out}: {len(ae)} tensors, {sum(v.numel() for v in ae.values()) / 1e6:.2f}M parameters, "
        f"scale_factor {scale:.4f}"
    )
    torch.set_num_threads(1)


if __name__ == "__main__":
    main()
