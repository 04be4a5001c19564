"""Diffusion core: noise schedules, the training objective and samplers (network-agnostic)."""

from ldsr.diffusion.objective import diffusion_loss, q_sample
from ldsr.diffusion.sampling import sample
from ldsr.diffusion.schedules import alphas_cumprod, betas_for

__all__ = ["alphas_cumprod", "betas_for", "diffusion_loss", "q_sample", "sample"]
