"""Reverse-process samplers for conditional models net(cat([x_t, cond]), t), through diffusers' schedulers.

Each sampler has the same signature (k-diffusion style) and no hidden state: the scheduler is built from the given
betas on every call (`trained_betas=`, so every schedule of `ldsr.diffusion.schedules` works) and all randomness
comes from the given CPU `torch.Generator`.

Clipping: diffusers clips the predicted x0 to [-1, 1], right for pixels and wrong for latents, so the schedulers
are built with clip_sample=False and `clip_denoised=True` (pixel space) clips x0 here instead, re-expressing the
clipped x0 in the network's parameterisation (improved-diffusion's `_predict_eps_from_xstart`); this is applied
identically for every sampler, including DPM-Solver++ which has no clip option of its own.

Terminal SNR: the cosine schedule clips its last beta at 0.999, so abar at t = T-1 is ~1e-9 (T = 2000). An epsilon
model's x0 estimate there, (x_t - sqrt(1 - abar) eps) / sqrt(abar), multiplies the network's error by ~1e4; in
pixel space the x0 clip hides it, in latent space (no clip) the sample explodes. Every sampler therefore runs
the chain truncated at the last t whose log-SNR lambda(t) = 0.5 log(abar / (1 - abar)) is >= `min_log_snr`
(diffusers' `lambda_min_clipped`, -5.1 for cosine); x_t ~ N(0, I) there is still exact to within abar ~ 4e-5.
Timestep indices below the cut are unchanged, so the network sees the t values it was trained on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# from the defining modules, not `from diffusers import ...`: to a type checker diffusers' top level exports its
# torch-less placeholder classes (dummy_pt_objects), which have no set_timesteps / step / timesteps
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from tqdm import tqdm

from ldsr.diffusion.names import SAMPLERS, SamplerName
from ldsr.diffusion.objective import PREDICTIONS, Net, Prediction

__all__ = ["SAMPLERS", "SamplerName", "sample"]

DEFAULT_MIN_LOG_SNR = -5.1  # diffusers' lambda_min_clipped for the cosine schedule; see the module docstring
_DIFFUSERS_PREDICTION = {"epsilon": "epsilon", "v": "v_prediction", "sample": "sample"}


def _clip_output(out: torch.Tensor, x: torch.Tensor, abar: torch.Tensor, prediction: Prediction) -> torch.Tensor:
    """Clip the x0 implied by the network output to [-1, 1] and return it in the same parameterisation."""
    a, s = abar.sqrt(), (1.0 - abar).sqrt()  # scalars: x_t = a x0 + s eps
    if prediction == "epsilon":
        x0 = (x - s * out) / a
    elif prediction == "v":
        x0 = a * x - s * out  # v = a eps - s x0  =>  x0 = a x_t - s v
    else:
        x0 = out
    x0 = x0.clamp(-1.0, 1.0)
    if prediction == "sample":
        return x0
    eps = (x - a * x0) / s
    return eps if prediction == "epsilon" else a * eps - s * x0


Scheduler = DDPMScheduler | DDIMScheduler | DPMSolverMultistepScheduler


def _step(
    scheduler: Scheduler, out: torch.Tensor, t: int, x: torch.Tensor, eta: float, generator: torch.Generator | None
) -> torch.Tensor:
    """x_{t_prev} from the network output at step t; DDPM draws its noise from `generator`, DDIM also takes `eta`,
    DPM-Solver++(2M) (deterministic) neither."""
    if isinstance(scheduler, DDIMScheduler):
        res = scheduler.step(out, t, x, eta=eta, generator=generator)
    elif isinstance(scheduler, DDPMScheduler):
        res = scheduler.step(out, t, x, generator=generator)
    else:
        res = scheduler.step(out, t, x)
    if isinstance(res, tuple):  # only with return_dict=False, never passed here
        raise TypeError(f"{type(scheduler).__name__}.step returned a tuple, expected an output with prev_sample")
    return res.prev_sample


def _run(
    scheduler: Scheduler,
    net: Net,
    cond: torch.Tensor,
    x: torch.Tensor,
    *,
    prediction: Prediction,
    clip_denoised: bool,
    progress: bool,
    desc: str,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The shared reverse loop: x_{t_prev} = scheduler.step(net(cat([x_t, cond]), t), t, x_t)."""
    abars = scheduler.alphas_cumprod.to(x.device)  # (T,) float32
    for t in tqdm(scheduler.timesteps, desc=desc, disable=not progress, leave=False):
        t_int = int(t)
        t_batch = torch.full((x.shape[0],), t_int, dtype=torch.long, device=x.device)  # (N,)
        out = net(torch.cat([x, cond], dim=1), t_batch)  # (N, C, H, W)
        if clip_denoised:
            out = _clip_output(out, x, abars[t_int], prediction)
        x = _step(scheduler, out, t_int, x, eta, generator)
    return x


def sample_ddpm(
    net: Net,
    cond: torch.Tensor,
    x: torch.Tensor,
    *,
    betas: torch.Tensor,
    steps: int,
    eta: float,
    prediction: Prediction,
    clip_denoised: bool,
    generator: torch.Generator | None,
    progress: bool,
) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2) over all T training steps; `steps` and `eta` are unused."""
    scheduler = DDPMScheduler(
        num_train_timesteps=len(betas),
        trained_betas=betas.double().cpu().numpy(),
        variance_type="fixed_small",  # sigma_t^2 = posterior variance beta~_t
        clip_sample=False,
        prediction_type=_DIFFUSERS_PREDICTION[prediction],
    )
    scheduler.set_timesteps(len(betas))  # T-1, ..., 0
    return _run(
        scheduler,
        net,
        cond,
        x,
        prediction=prediction,
        clip_denoised=clip_denoised,
        progress=progress,
        desc="ddpm",
        generator=generator,
    )


def sample_ddim(
    net: Net,
    cond: torch.Tensor,
    x: torch.Tensor,
    *,
    betas: torch.Tensor,
    steps: int,
    eta: float,
    prediction: Prediction,
    clip_denoised: bool,
    generator: torch.Generator | None,
    progress: bool,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) on `steps` uniformly strided timesteps; eta = 0 deterministic, 1 ~ DDPM."""
    scheduler = DDIMScheduler(
        num_train_timesteps=len(betas),
        trained_betas=betas.double().cpu().numpy(),
        clip_sample=False,
        set_alpha_to_one=True,
        prediction_type=_DIFFUSERS_PREDICTION[prediction],
        # Uniform stride k = T // steps from t = 0 (Song et al. 2021's schedule): diffusers' DDIM steps from t to
        # t - k, so only this spacing keeps the update on the timesteps the network is evaluated at.
        timestep_spacing="leading",
    )
    scheduler.set_timesteps(steps)
    return _run(
        scheduler,
        net,
        cond,
        x,
        prediction=prediction,
        clip_denoised=clip_denoised,
        progress=progress,
        desc="ddim",
        eta=eta,
        generator=generator,
    )


def sample_dpmpp(
    net: Net,
    cond: torch.Tensor,
    x: torch.Tensor,
    *,
    betas: torch.Tensor,
    steps: int,
    eta: float,
    prediction: Prediction,
    clip_denoised: bool,
    generator: torch.Generator | None,
    progress: bool,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), deterministic; `eta` and `generator` are unused."""
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=len(betas),
        trained_betas=betas.double().cpu().numpy(),
        algorithm_type="dpmsolver++",
        solver_order=2,
        lower_order_final=True,  # first-order last steps: stable for < 15 steps
        prediction_type=_DIFFUSERS_PREDICTION[prediction],
    )
    scheduler.set_timesteps(steps)
    return _run(
        scheduler,
        net,
        cond,
        x,
        prediction=prediction,
        clip_denoised=clip_denoised,
        progress=progress,
        desc="dpm-solver++",
    )


def truncate_betas(betas: torch.Tensor, min_log_snr: float) -> torch.Tensor:
    """betas[: t_max + 1] with t_max the last step whose log-SNR 0.5 log(abar / (1 - abar)) >= min_log_snr."""
    abar = torch.cumprod(1.0 - betas.double(), dim=0)  # (T,)
    log_snr = 0.5 * (torch.log(abar) - torch.log1p(-abar))
    keep = int((log_snr >= min_log_snr).sum())  # log-SNR falls monotonically with t
    if keep < 1:
        raise ValueError(f"min_log_snr={min_log_snr} removes every step (log-SNR at t=0 is {float(log_snr[0]):.2f})")
    return betas[:keep]


Sampler = Callable[..., torch.Tensor]
SAMPLER_FNS: dict[str, Sampler] = {"ddpm": sample_ddpm, "ddim": sample_ddim, "dpmpp": sample_dpmpp}


def sample(
    net: Net,
    cond: torch.Tensor,
    shape: tuple[int, ...],
    *,
    betas: torch.Tensor,
    sampler: SamplerName = "dpmpp",
    steps: int = 50,
    eta: float = 0.0,
    prediction: Prediction = "epsilon",
    clip_denoised: bool = False,
    generator: torch.Generator | None = None,
    progress: bool = False,
    min_log_snr: float | None = DEFAULT_MIN_LOG_SNR,
) -> torch.Tensor:
    """Draw x_0 of `shape` (N, C, H, W) from x_T ~ N(0, I) given `cond` (N, C_cond, H, W) on the same grid.

    `ddpm` runs every ancestral step of the chain (`steps` is ignored); `ddim` and `dpmpp` run `steps`
    evaluations (1 <= steps <= T). The chain is truncated where the log-SNR falls below `min_log_snr`
    (None: never). `eta` is DDIM's stochasticity and must be 0 for the other samplers.
    """
    if sampler not in SAMPLER_FNS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
    T = len(betas)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if sampler != "ddpm" and steps > T:
        raise ValueError(f"steps={steps} exceeds the T={T} training timesteps of the schedule")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if eta != 0 and sampler != "ddim":
        raise ValueError(f"eta={eta} only applies to the ddim sampler, not {sampler!r}")
    if len(shape) != 4 or cond.ndim != 4 or cond.shape[0] != shape[0] or tuple(cond.shape[-2:]) != tuple(shape[-2:]):
        raise ValueError(f"cond must be (N, C_cond, H, W) matching shape {tuple(shape)}, got {tuple(cond.shape)}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            f"generator must be a CPU torch.Generator (got one on {generator.device}); noise is drawn "
            "on the CPU and moved so that a seed gives the same image on every device"
        )
    if min_log_snr is not None:
        betas = truncate_betas(betas, min_log_snr)
        steps = min(steps, len(betas))
    # x_T ~ N(0, I), drawn on the CPU then moved: the same seed gives the same start on CPU and GPU.
    x = torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device=cond.device, dtype=cond.dtype)
    return SAMPLER_FNS[sampler](
        net,
        cond,
        x,
        betas=betas,
        steps=steps,
        eta=eta,
        prediction=prediction,
        clip_denoised=clip_denoised,
        generator=generator,
        progress=progress,
    )
