"""Validation during training: PSNR / SSIM of `model.predict` on the validation items, with fixed seeds
that leave the training RNG streams untouched."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ldsr.training.rng import isolated_rng


@torch.no_grad()
def validate(
    model: nn.Module, items: Any, *, device: torch.device, batch_size: int, crop_border: int, seed: int
) -> dict[str, float]:
    """Mean PSNR / SSIM (ldsr.evaluation.metrics, data_range 1, Y channel for RGB) of `model.predict` on `items`.

    `items[i]` is {"hr": (C, H, W), "lr": (C, H/s, W/s), "name": str}; `crop_border` pixels are left out at
    each edge unless the image is then smaller than the 11-pixel SSIM window."""
    from ldsr.data.tensor import to_array
    from ldsr.evaluation.metrics import psnr, ssim

    was_training = model.training
    model.eval()
    scores: dict[str, list[float]] = {"val_psnr": [], "val_ssim": []}
    predict: Any = model.predict  # the Model protocol's method (nn.Module's __getattr__ types it as a Tensor)
    try:
        with isolated_rng(seed):
            for i in range(0, len(items), batch_size):
                chunk = [items[j] for j in range(i, min(i + batch_size, len(items)))]
                hr = torch.stack([c["hr"] for c in chunk]).to(device)  # (N, C, H, W)
                batch: dict[str, Any] = {
                    "hr": hr,
                    "lr": torch.stack([c["lr"] for c in chunk]).to(device),  # (N, C, H/s, W/s)
                    "name": [c["name"] for c in chunk],
                }
                pred: torch.Tensor = predict(batch).float()  # (N, C, H, W) in [-1, 1]
                for p, h in zip(pred, hr):
                    a, b = to_array(p), to_array(h)
                    y = a.shape[2] == 3
                    border = crop_border if min(a.shape[:2]) - 2 * crop_border >= 11 else 0
                    scores["val_psnr"].append(psnr(a, b, data_range=1.0, crop_border=border, y_channel=y))
                    scores["val_ssim"].append(ssim(a, b, data_range=1.0, crop_border=border, y_channel=y))
    finally:
        model.train(was_training)
    return {k: float(np.mean(v)) for k, v in scores.items() if v}
