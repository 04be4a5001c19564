"""Train the offline feature network of `ldsr evaluate-generation --features` (ldsr.evaluation.features.FeatureNet,
contrastive NT-Xent) on a TRAINING split folder, and save it as safetensors with its name, version and training
data in the metadata. Every table that uses it prints that name and version.

    python experiments/generation/train_features.py --images runs/gen/sets/mri/train --name ldsr-feat-mri \
        --version 1 --steps 3000 --out models/features/ldsr-feat-mri-v1.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ldsr.evaluation.features import save_feature_net, train_feature_net
from ldsr.io import list_images, read_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True, help="training-split images (prepare_sets.py train/)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--version", default="1")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    images = [read_image(p)[0] for p in list_images(a.images)]
    net, losses = train_feature_net(images, steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed, device=a.device)
    info = {"trained_on": str(a.images), "images": len(images), "steps": a.steps, "batch": a.batch,
            "seed": a.seed, "final_loss": sum(losses[-50:]) / len(losses[-50:])}  # fmt: skip
    save_feature_net(a.out, net.cpu(), name=a.name, version=a.version, info=info)
    print(f"{a.out}: {a.name} v{a.version}, NT-Xent {losses[0]:.3f} -> {info['final_loss']:.3f}")


if __name__ == "__main__":
    main()
