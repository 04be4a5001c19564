"""The denoising training objective. The network is an argument (as in EDM's `training/loss.py`): this module owns
the forward process and the regression target, not the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F

Prediction = Literal["epsilon", "v", "sample"]
LossName = Literal["smooth_l1", "mse", "l1"]
PREDICTIONS: tuple[str, ...] = get_args(Prediction)
LOSSES: tuple[str, ...] = get_args(LossName)

# net(x_in, t) -> prediction; x_in = cat([x_t, cond], dim=1) is (N, C + C_cond, H, W), t is (N,) int64.
Net = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_LOSS_FNS = {"smooth_l1": F.smooth_l1_loss, "mse": F.mse_loss, "l1": F.l1_loss}


def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] reshaped to (N, 1, 1, 1) to broadcast over `like`, in its dtype and on its device."""
    out = values.to(like.device)[t.to(like.device)].to(like.dtype)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Forward process in closed form (Ho et al. 2020, eq. 4): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
    abar = _gather(alphas_cumprod, t, x0)  # (N, 1, 1, 1)
    return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise


def prediction_target(
    x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, prediction: Prediction
) -> torch.Tensor:
    """Regression target: eps (Ho et al. 2020), v = sqrt(abar) eps - sqrt(1-abar) x0 (Salimans & Ho 2022), or x0."""
    if prediction == "epsilon":
        return noise
    if prediction == "sample":
        return x0
    if prediction == "v":
        abar = _gather(alphas_cumprod, t, x0)
        return abar.sqrt() * noise - (1.0 - abar).sqrt() * x0
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")


def diffusion_loss(
    net: Net,
    x0: torch.Tensor,
    cond: torch.Tensor,
    *,
    alphas_cumprod: torch.Tensor,
    prediction: Prediction = "epsilon",
    loss: LossName = "smooth_l1",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Simplified conditional objective (Ho et al. 2020 L_simple; SR3, Saharia et al. 2021): E_t,eps |net - target|."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
    if loss not in _LOSS_FNS:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if x0.ndim != 4 or cond.ndim != 4 or cond.shape[0] != x0.shape[0] or cond.shape[-2:] != x0.shape[-2:]:
        raise ValueError(f"cond must be (N, C_cond, H, W) on the grid of x0 {tuple(x0.shape)}, got {tuple(cond.shape)}")
    n, T = x0.shape[0], alphas_cumprod.shape[0]
    # t ~ Uniform{0, ..., T-1} and eps ~ N(0, I), drawn on the CPU generator so a seed fixes them on any device.
    t = torch.randint(0, T, (n,), generator=generator).to(x0.device)  # (N,)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)  # (N, C, H, W)
    x_t = q_sample(x0, t, noise, alphas_cumprod)
    x_in = torch.cat([x_t, cond.to(x_t.dtype)], dim=1)  # (N, C + C_cond, H, W): SR3 / latent-diffusion concat
    pred = net(x_in, t)
    target = prediction_target(x0, t, noise, alphas_cumprod, prediction)
    return _LOSS_FNS[loss](pred.float(), target.float())
