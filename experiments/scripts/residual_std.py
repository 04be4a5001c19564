"""Measure the std of the residual a `sr.residual: true` config diffuses, and print `sr.residual_scale` = 1 / std.

    .venv/bin/python experiments/scripts/residual_std.py experiments/configs/cpu/ldm_sr_x4_res.yaml [--samples 256]

Draws `--samples` training pairs exactly as training does (same crops, degradation preset and seed), forms the
residual target - base of the configured model (latent: z(HR) - z(bicubic(LR)); pixel: HR - bicubic(LR)), and
reports its std. As with the autoencoder's latent scale factor, the residual is scaled to unit variance so that
the noise schedule's signal-to-noise ratios mean what they mean for unit-variance data.
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    a = p.parse_intermixed_args()

    from ldsr.config import load_config
    from ldsr.data.datasets import build_train_dataset
    from ldsr.models.build import build_model as build_from_config

    torch.set_num_threads(1)
    cfg = load_config(a.config, a.overrides)
    if cfg.task != "sr":
        raise SystemExit(f"{a.config}: task is {cfg.task!r}, not 'sr'")
    model = build_from_config(cfg).eval()
    ds = build_train_dataset(cfg.data, channels=cfg.channels, scale=cfg.scale, seed=cfg.seed)
    total, total_sq, n = 0.0, 0.0, 0
    with torch.no_grad():
        for k in range(a.samples):
            item = ds[k]
            hr, lr = item["hr"][None], item["lr"][None]  # (1, C, H, W), (1, C, H/s, W/s)
            x0 = model._target(hr)
            res = (x0 - model._base(lr, (x0.shape[-2], x0.shape[-1]))).double()
            total += float(res.sum())
            total_sq += float((res**2).sum())
            n += res.numel()
    mean = total / n
    std = (total_sq / n - mean**2) ** 0.5
    print(f"residual over {a.samples} training crops: mean {mean:.4f}, std {std:.4f}")
    print(f"sr.residual_scale: {1.0 / std:.3f}")


if __name__ == "__main__":
    main()
