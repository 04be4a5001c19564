"""Noise schedules: closed-form betas for the forward process q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I).

Every function returns float64 so that alpha_bar = prod(1 - beta) stays accurate for T = 2000 and beyond; callers
cast to float32 on their device.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch

ScheduleName = Literal["cosine", "linear", "quadratic", "sigmoid"]
SCHEDULES: tuple[str, ...] = get_args(ScheduleName)

BETA_START = 1e-4  # Ho et al. 2020, for T = 1000
BETA_END = 0.02
MAX_BETA = 0.999  # Nichol & Dhariwal 2021: keeps beta_T < 1 so that x_T is never exactly pure noise


def _check_T(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"number of diffusion steps T must be an integer >= 1, got {T!r}")


def cosine_betas(T: int, s: float = 0.008) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17): alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2)."""
    _check_T(T)
    t = torch.arange(T + 1, dtype=torch.float64)
    abar = torch.cos(((t / T) + s) / (1 + s) * math.pi / 2) ** 2  # (T+1,), abar[0] ~= 1, abar[T] ~= 0
    # beta_t = 1 - abar(t+1)/abar(t); the normalisation abar(t)/abar(0) of the paper cancels in the ratio.
    return (1.0 - abar[1:] / abar[:-1]).clamp(max=MAX_BETA)  # (T,)


def linear_betas(T: int) -> torch.Tensor:
    """Linear schedule (Ho et al. 2020) with endpoints scaled by 1000/T (improved-diffusion's rule), clipped at
    0.999."""
    _check_T(T)
    # Scaling keeps alpha_bar_T ~= 4e-5 for every T: T = 1000 gives 1e-4..0.02, T = 2000 gives 5e-5..0.01.
    # For T < 50 the scaled end would exceed 1, hence the clip.
    scale = 1000.0 / T
    return torch.linspace(BETA_START * scale, BETA_END * scale, T, dtype=torch.float64).clamp(max=MAX_BETA)


def quadratic_betas(T: int) -> torch.Tensor:
    """Quadratic schedule (Ho et al. 2020 code, latent-diffusion's "linear"): linspace(sqrt(1e-4), sqrt(0.02))^2."""
    _check_T(T)
    return torch.linspace(math.sqrt(BETA_START), math.sqrt(BETA_END), T, dtype=torch.float64) ** 2


def sigmoid_betas(T: int) -> torch.Tensor:
    """Sigmoid schedule (GeoDiff, Xu et al. 2022): sigmoid(linspace(-6, 6)) * (0.02 - 1e-4) + 1e-4."""
    _check_T(T)
    return torch.sigmoid(torch.linspace(-6.0, 6.0, T, dtype=torch.float64)) * (BETA_END - BETA_START) + BETA_START


_BETAS = {"cosine": cosine_betas, "linear": linear_betas, "quadratic": quadratic_betas, "sigmoid": sigmoid_betas}


def betas_for(name: ScheduleName, T: int) -> torch.Tensor:
    """Betas (T,) float64 of the named schedule; see the per-schedule functions for the formulas."""
    if name not in _BETAS:
        raise ValueError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return _BETAS[name](T)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s) (Ho et al. 2020, eq. 4), in the dtype of `betas`."""
    return torch.cumprod(1.0 - betas, dim=0)
