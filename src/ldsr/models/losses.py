"""Differentiable training losses shared by the models.

* ``ssim_torch`` / ``ssim_map_torch``: SSIM (Wang et al. 2004) with the usual Gaussian window
  (11x11, sigma 1.5), K1 = 0.01, K2 = 0.03 and population (not sample) covariances. Only 'valid'
  window positions are kept, which is what ``skimage.metrics.structural_similarity(...,
  gaussian_weights=True, use_sample_covariance=False)`` averages over, so the mean agrees with it.
* ``hinge_d_loss``: the hinge loss of a (PatchGAN) discriminator, as in latent-diffusion / VQGAN.
* ``smooth_l1``: the Huber-style smooth L1 (quadratic below ``beta``, linear above).

All inputs are ``(N, C, H, W)`` tensors; the value range is given by ``data_range`` where it matters
(2.0 for the models' ``[-1, 1]`` tensors, 1.0 for ``[0, 1]``). Note that SSIM's luminance term is not
shift invariant: SSIM of ``[-1, 1]`` tensors with ``data_range=2`` is not SSIM of the same images in
``[0, 1]`` with ``data_range=1`` (both agree with skimage given the same inputs). To log a value that
matches ``ldsr.evaluation.metrics.ssim`` on ``[0, 1]`` arrays, map ``t -> (t + 1) / 2`` first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_window", "ssim_map_torch", "ssim_torch", "hinge_d_loss", "smooth_l1"]

SSIM_WIN = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def gaussian_window(
    size: int = SSIM_WIN, sigma: float = SSIM_SIGMA, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (odd), shape ``(size,)``, summing to 1."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = (size - 1) / 2.0
    t = torch.arange(size, dtype=torch.float64) - r
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return (g / g.sum()).to(dtype)


def _blur_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, 'valid' positions only: (N, C, H, W) -> (N, C, H-k+1, W-k+1)."""
    c = x.shape[1]
    k = g.numel()
    # depthwise conv: one (1, 1, k, 1) and one (1, 1, 1, k) kernel per channel
    gv = g.view(1, 1, k, 1).expand(c, 1, k, 1)
    gh = g.view(1, 1, 1, k).expand(c, 1, 1, k)
    return F.conv2d(F.conv2d(x, gv, groups=c), gh, groups=c)


def _check_pair(x: torch.Tensor, y: torch.Tensor, data_range: float) -> None:
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) tensors, got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < SSIM_WIN:
        raise ValueError(f"SSIM needs H and W >= {SSIM_WIN}, got {tuple(x.shape[-2:])}")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")


def ssim_map_torch(x: torch.Tensor, y: torch.Tensor, *, data_range: float) -> torch.Tensor:
    """Per-pixel SSIM, ``(N, C, H, W)`` x2 -> ``(N, C, H-10, W-10)`` (valid window positions).

    With Gaussian local means mu, variances s^2 = E[x^2] - mu^2 and covariance s_xy,
    SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
    C1 = (K1 L)^2, C2 = (K2 L)^2 with L = ``data_range``. Differentiable in both inputs.
    """
    _check_pair(x, y, data_range)
    # At least fp32, outside autocast: the variances E[x^2] - mu^2 cancel catastrophically in bf16 / fp16, and a
    # denominator rounded to 0 makes the loss infinite (mixed-precision training).
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    with torch.autocast(x.device.type, enabled=False):
        x, y = x.to(dtype), y.to(dtype)
        g = gaussian_window(dtype=dtype).to(x.device)
        c1 = (SSIM_K1 * data_range) ** 2
        c2 = (SSIM_K2 * data_range) ** 2
        n = x.shape[0]
        # one conv pass for the five local moments: stack along the batch axis, (5N, C, H, W)
        moments = _blur_valid(torch.cat([x, y, x * x, y * y, x * y], dim=0), g)
        mu_x, mu_y, e_xx, e_yy, e_xy = moments.split(n, dim=0)
        var_x = e_xx - mu_x * mu_x
        var_y = e_yy - mu_y * mu_y
        cov = e_xy - mu_x * mu_y
        num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
        den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
        return num / den


def ssim_torch(x: torch.Tensor, y: torch.Tensor, *, data_range: float) -> torch.Tensor:
    """Mean SSIM over batch, channels and valid positions (a 0-d tensor); 1 for identical inputs."""
    return ssim_map_torch(x, y, data_range=data_range).mean()


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss 0.5 (E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]); 0 once separated by 1."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def smooth_l1(x: torch.Tensor, y: torch.Tensor, *, beta: float = 0.01) -> torch.Tensor:
    """Mean smooth L1: 0.5 d^2 / beta for |d| < beta, |d| - 0.5 beta otherwise (``beta`` -> 0 gives L1)."""
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    d = (x - y).abs()
    if beta == 0:
        return d.mean()
    return torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta).mean()
