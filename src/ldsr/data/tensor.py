"""Conversions between the I/O layer's arrays and the models' tensors.

Arrays are (H, W, C) float32 in [0, 1]; tensors are (N, C, H, W) float32 in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) or (H, W) array in [0, 1] -> (1, C, H, W) tensor in [-1, 1]."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    return t.unsqueeze(0) * 2.0 - 1.0


def to_array(t: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) tensor in [-1, 1] -> (H, W, C) float32 array in [0, 1], clipped."""
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected a batch of one, got shape {tuple(t.shape)}")
        t = t[0]
    x = ((t.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) * 0.5).permute(1, 2, 0)
    return x.numpy().astype(np.float32, copy=False)
