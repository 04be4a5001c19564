"""Unconditional image generation on the SR building blocks (`task: generate`).

Three models follow the Model protocol of docs/ARCHITECTURE.md, where a training batch holds only the image
`batch["hr"]` (N, C, H, W) in [-1, 1] (the loop's `batch["lr"]` is ignored):

- `DiffusionGenerator` with `model: latent`: a DDPM on the latent of a frozen autoencoder (VAE or VQ-VAE; the
  "VAE-DDPM" / "VQ-DDPM" of the thesis, Rombach et al. 2022 unconditional mode);
- `DiffusionGenerator` with `model: pixel`: a DDPM on the pixels (Ho et al. 2020);
- `GANGenerator` (`model: gan`): a DCGAN (Radford et al. 2016) generator / discriminator pair, the baseline.

The diffusion models use the same UNet presets (`ldsr.models.unets`), schedules, objective
(`ldsr.diffusion.objective.diffusion_loss`) and samplers (`ldsr.diffusion.sampling`) as SR: the condition is
an empty (N, 0, h, w) tensor, so `cat([x_t, cond])` is just `x_t`.

Seeds: sample `i` of a call with seed `s` starts from its own x_T (or z for the GAN), drawn from a CPU generator
seeded with `sample_seed(s, i)`, so the deterministic samplers (ddim at eta 0, dpmpp) and the GAN give the same
image for the same (seed, index) whatever the batch size. DDPM (and DDIM with eta > 0) also draw noise at every
step, from one generator per batch seeded with the seed of the batch's first sample: those images depend on the
batch size too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from ldsr.diffusion.objective import LOSSES, PREDICTIONS, LossName, Prediction, diffusion_loss
from ldsr.diffusion.sampling import DEFAULT_MIN_LOG_SNR, SAMPLER_FNS, SAMPLERS, SamplerName, truncate_betas
from ldsr.diffusion.schedules import ScheduleName, alphas_cumprod, betas_for
from ldsr.models.unets import UNET_DOWNSAMPLING, UNET_PRESETS

GenModel = Literal["latent", "pixel", "gan"]
GEN_MODELS: tuple[str, ...] = get_args(GenModel)
VALIDATION_SEED = 0  # predict() samples from a fixed seed so validation images are comparable across steps


@dataclass
class GenerationConfig:
    """The `generate:` section of a run config. The image side is the run's `data.hr_size`."""

    model: GenModel = "latent"
    unet: str = "compact"  # key of ldsr.models.unets.UNET_PRESETS (diffusion models)
    schedule: ScheduleName = "cosine"
    timesteps: int = 1000  # T; the thesis's generation models use T = 1000 with the cosine schedule
    prediction: Prediction = "v"  # as the shipped SR models (v samples well from the cosine schedule's end)
    loss: LossName = "smooth_l1"
    # latent model: a trained autoencoder checkpoint, or a latent SR / latent generation checkpoint whose
    # autoencoder is reused (e.g. a shipped SR model's folder)
    autoencoder: str | None = None
    sampler: SamplerName = "dpmpp"  # default of `predict()` and `ldsr generate`
    steps: int = 50
    eta: float = 0.0
    gan_latent: int = 100  # DCGAN: length of z
    gan_features: int = 64  # DCGAN: ngf = ndf, the widest layers have 8x this (capped)

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        choices = {"model": GEN_MODELS, "unet": tuple(UNET_PRESETS), "prediction": PREDICTIONS,
                   "loss": LOSSES, "sampler": SAMPLERS}  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"generate.{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        betas_for(self.schedule, self.timesteps)  # raises on an unknown schedule or T < 1
        for name in ("steps", "gan_latent", "gan_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"generate.{name} must be >= 1, got {getattr(self, name)}")
        if self.eta < 0 or (self.eta != 0 and self.sampler != "ddim"):
            raise ValueError(f"generate.eta={self.eta} must be 0 (or > 0 with sampler ddim)")
        if self.model == "latent" and self.autoencoder is not None and not self.autoencoder.strip():
            raise ValueError("generate.autoencoder must be a checkpoint path or null")


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a run with `seed` (a 63-bit mix, so neighbouring seeds do not overlap)."""
    return (int(seed) * 1_000_003 + int(index) * 7919 + 12345) % (2**63 - 1)


def _noise(shape: tuple[int, ...], seed: int, start: int) -> torch.Tensor:
    """(N, *shape[1:]) standard normal, row i drawn from its own CPU generator seeded sample_seed(seed, start + i)."""
    rows = [torch.randn(shape[1:], generator=torch.Generator().manual_seed(sample_seed(seed, start + i)))
            for i in range(shape[0])]  # fmt: skip
    return torch.stack(rows)


# ----------------------------------------------------------------------------------------------------------
# diffusion


class DiffusionGenerator(nn.Module):
    """Unconditional DDPM on pixels or on a frozen autoencoder's latent (`autoencoder` given)."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    # ldsr.models.autoencoder.Autoencoder (factor, latent_channels, encode, decode) or None; Any because
    # nn.Module's __getattr__ would type its attributes as Tensor | Module
    autoencoder: Any

    def __init__(
        self, cfg: GenerationConfig, unet: nn.Module, channels: int, size: int, autoencoder: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.cfg, self.channels, self.size = cfg, channels, size
        self.unet = unet
        self.autoencoder = autoencoder.eval().requires_grad_(False) if autoencoder is not None else None
        self.factor = int(self.autoencoder.factor) if autoencoder is not None else 1
        self.grid_channels = int(self.autoencoder.latent_channels) if autoencoder is not None else channels
        betas = betas_for(cfg.schedule, cfg.timesteps)  # (T,) float64, recomputed from the config
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod(betas).float(), persistent=False)

    def train(self, mode: bool = True) -> DiffusionGenerator:
        """Train mode for the UNet only; the autoencoder stays in eval mode."""
        super().train(mode)
        if self.autoencoder is not None:
            self.autoencoder.eval()
        return self

    @property
    def grid(self) -> int:
        """Side of the denoiser's grid: size / f for a latent model, the image side for a pixel model."""
        return self.size // self.factor

    def net(self, x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(N, C_x, h, w), (N,) -> (N, C_x, h, w): the objective's and samplers' view of the UNet."""
        out: torch.Tensor = self.unet(x_in, t).sample
        return out

    def _target(self, hr: torch.Tensor) -> torch.Tensor:
        if hr.ndim != 4 or hr.shape[1] != self.channels:
            raise ValueError(f"batch['hr'] must be (N, {self.channels}, H, W), got {tuple(hr.shape)}")
        if self.autoencoder is None:
            return hr
        with torch.no_grad():
            return self.autoencoder.encode(hr)  # (N, c_z, H/f, W/f), already times scale_factor

    def training_loss(
        self, batch: dict[str, torch.Tensor], *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Diffusion loss (same objective as SR) on batch["hr"] or its latent; no condition. `generator` fixes
        t and the noise (the loop passes none: the seeded global RNG)."""
        x0 = self._target(batch["hr"])
        d = UNET_DOWNSAMPLING.get(self.cfg.unet, 1)
        if x0.shape[-2] % d or x0.shape[-1] % d:
            raise ValueError(f"denoiser grid {tuple(x0.shape[-2:])} must be divisible by {d} (unet={self.cfg.unet})")
        cond = x0.new_zeros((x0.shape[0], 0, *x0.shape[-2:]))  # (N, 0, h, w): unconditional
        loss = diffusion_loss(self.net, x0, cond, alphas_cumprod=self.alphas_cumprod,
                              prediction=self.cfg.prediction, loss=self.cfg.loss, generator=generator)  # fmt: skip
        return loss, {"loss": float(loss.detach())}

    def nfe(self, sampler: SamplerName | None = None, steps: int | None = None) -> int:
        """Network evaluations per sample: every step of the truncated chain for ddpm, else min(steps, that)."""
        n = len(truncate_betas(self.betas, DEFAULT_MIN_LOG_SNR))
        return n if (sampler or self.cfg.sampler) == "ddpm" else min(steps or self.cfg.steps, n)

    @torch.no_grad()
    def sample_batch(
        self, n: int, *, seed: int, start: int = 0, sampler: SamplerName | None = None,
        steps: int | None = None, eta: float | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Samples start .. start + n - 1 of `seed`: (n, C, S, S) images in [-1, 1]."""
        sampler = sampler or self.cfg.sampler
        steps = self.cfg.steps if steps is None else steps
        eta = self.cfg.eta if eta is None else eta
        if sampler not in SAMPLER_FNS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if steps < 1 or (eta != 0 and sampler != "ddim") or eta < 0:
            raise ValueError(f"need steps >= 1 and eta 0 (or > 0 with ddim), got steps={steps}, eta={eta}")
        device = self.betas.device
        shape = (n, self.grid_channels, self.grid, self.grid)
        x_t = _noise(shape, seed, start).to(device)  # x_T ~ N(0, I), one generator per sample
        betas = truncate_betas(self.betas, DEFAULT_MIN_LOG_SNR)  # as ldsr.diffusion.sampling.sample
        cond = x_t.new_zeros((n, 0, self.grid, self.grid))
        x0 = SAMPLER_FNS[sampler](
            self.net, cond, x_t, betas=betas, steps=min(steps, len(betas)), eta=eta,
            prediction=self.cfg.prediction, clip_denoised=self.autoencoder is None,
            generator=torch.Generator().manual_seed(sample_seed(seed, start)), progress=False,
        )  # fmt: skip
        if self.autoencoder is not None:
            x0 = self.autoencoder.decode(x0, streamed=True)  # (n, C, S, S); exact, less memory
        return x0.clamp(-1.0, 1.0)

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """As many samples as batch["hr"] has images, from VALIDATION_SEED with the configured sampler."""
        return self.sample_batch(int(batch["hr"].shape[0]), seed=VALIDATION_SEED)

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cfg)


# ----------------------------------------------------------------------------------------------------------
# DCGAN


def _gan_levels(size: int) -> int:
    """Up-sampling layers of the DCGAN generator: 4 x 4 -> size, one doubling each."""
    levels = round(math.log2(size)) - 2
    if size < 8 or 4 * 2**levels != size:
        raise ValueError(f"the DCGAN needs a power-of-two image side >= 8 (data.hr_size), got {size}")
    return levels


class DCGANGenerator(nn.Module):
    """z (N, nz) -> (N, C, S, S) in [-1, 1]: ConvTranspose 4x4 stride 2 + BatchNorm + ReLU per doubling, tanh."""

    def __init__(self, channels: int, size: int, nz: int = 100, ngf: int = 64) -> None:
        super().__init__()
        levels = _gan_levels(size)
        widths = [ngf * min(8, 2 ** (levels - 1 - i)) for i in range(levels)]  # widest first, e.g. 512 .. 64
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False),  # (N, nz, 1, 1) -> (N, w0, 4, 4)
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]  # last doubling
        self.nz = nz
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """(N, C, S, S) -> (N,) logits: Conv 4x4 stride 2 + BatchNorm + LeakyReLU(0.2) per halving down to 4 x 4."""

    def __init__(self, channels: int, size: int, ndf: int = 64) -> None:
        super().__init__()
        levels = _gan_levels(size)
        widths = [ndf * min(8, 2**i) for i in range(levels)]  # e.g. 64 .. 512
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False))  # (N, w, 4, 4) -> (N, 1, 1, 1)
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def _dcgan_init(m: nn.Module) -> None:
    """DCGAN's initialisation: conv weights ~ N(0, 0.02), BatchNorm scale ~ N(1, 0.02), shift 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class GANGenerator(nn.Module):
    """DCGAN with the non-saturating loss; `discriminator` + `discriminator_loss` make the loop alternate steps."""

    def __init__(self, cfg: GenerationConfig, channels: int, size: int) -> None:
        super().__init__()
        self.cfg, self.channels, self.size = cfg, channels, size
        self.generator = DCGANGenerator(channels, size, cfg.gan_latent, cfg.gan_features)
        self.discriminator = DCGANDiscriminator(channels, size, cfg.gan_features)

    def _z(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randn(n, self.cfg.gan_latent, device=device)  # the training RNG (seeded by the loop)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Generator step: softplus(-D(G(z))) = -log sigmoid(D(G(z))) (non-saturating), D's weights frozen
        by the loop."""
        hr = batch["hr"]
        fake = self.generator(self._z(hr.shape[0], hr.device))
        loss = F.softplus(-self.discriminator(fake)).mean()
        return loss, {"loss": float(loss.detach()), "g_loss": float(loss.detach())}

    def discriminator_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """-log sigmoid(D(real)) - log(1 - sigmoid(D(G(z)))), G detached."""
        hr = batch["hr"]
        with torch.no_grad():
            fake = self.generator(self._z(hr.shape[0], hr.device))
        real_logits, fake_logits = self.discriminator(hr), self.discriminator(fake)
        loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        return loss, {"d_loss": float(loss.detach()), "d_real": float(real_logits.detach().mean()),
                      "d_fake": float(fake_logits.detach().mean())}  # fmt: skip

    def nfe(self, sampler: SamplerName | None = None, steps: int | None = None) -> int:
        return 1

    @torch.no_grad()
    def sample_batch(self, n: int, *, seed: int, start: int = 0, **_: Any) -> torch.Tensor:
        """Samples start .. start + n - 1 of `seed` (z per sample): (n, C, S, S) in [-1, 1]; sampler options
        do not apply."""
        device = next(self.generator.parameters()).device
        z = _noise((n, self.cfg.gan_latent), seed, start).to(device)
        return self.generator(z).clamp(-1.0, 1.0)

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.sample_batch(int(batch["hr"].shape[0]), seed=VALIDATION_SEED)

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cfg)


# ----------------------------------------------------------------------------------------------------------
# building and loading


def strip_discriminator(autoencoder: nn.Module) -> nn.Module:
    """Drop an autoencoder's PatchGAN discriminator (only its training used it): smaller checkpoints."""
    if "discriminator" in autoencoder._modules:
        del autoencoder._modules["discriminator"]
    return autoencoder


def load_autoencoder(path: str, channels: int) -> nn.Module:
    """The frozen autoencoder (EMA weights, discriminator dropped) of an autoencoder checkpoint, or the one
    inside a latent SR / latent generation checkpoint (its `autoencoder.*` weights and config section)."""
    from ldsr.config import from_dict
    from ldsr.models.autoencoder import AutoencoderConfig
    from ldsr.models.autoencoder import build_model as build_ae
    from ldsr.models.checkpoint import load_weights

    state, run = load_weights(path, ema=True)
    task = run.get("task")
    if "autoencoder" not in run or task not in ("autoencoder", "sr", "generate"):
        raise ValueError(f"generate.autoencoder {path}: no autoencoder in this checkpoint (task {task!r})")
    if run.get("channels") != channels:
        raise ValueError(f"generate.autoencoder {path}: has {run.get('channels')} channels, the run has {channels}")
    if task != "autoencoder":  # the autoencoder inside a latent model
        state = {k[len("autoencoder.") :]: v for k, v in state.items() if k.startswith("autoencoder.")}
        if not state:
            raise ValueError(f"generate.autoencoder {path}: a {task} checkpoint without autoencoder weights")
    ae = strip_discriminator(build_ae(from_dict(AutoencoderConfig, run["autoencoder"], "autoencoder"), channels))
    state = {k: v for k, v in state.items() if not k.startswith("discriminator.")}
    ae.load_state_dict(state)
    return ae


def build_model(
    cfg: GenerationConfig, channels: int, size: int, autoencoder: nn.Module | None = None
) -> DiffusionGenerator | GANGenerator:
    """A fresh generator of `cfg.model` for (channels, size, size) images; the latent model needs the trained
    `autoencoder` (frozen here)."""
    cfg.validate()
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if cfg.model == "gan":
        return GANGenerator(cfg, channels, size)
    make_unet = UNET_PRESETS[cfg.unet]
    d = UNET_DOWNSAMPLING.get(cfg.unet, 1)
    if cfg.model == "pixel":
        if size % d:
            raise ValueError(f"data.hr_size {size} must be a multiple of {d} (unet {cfg.unet!r} halves {d}x)")
        return DiffusionGenerator(cfg, make_unet(channels, channels, size), channels, size)
    if autoencoder is None:
        raise ValueError("generate.model='latent' needs a trained autoencoder (generate.autoencoder: a checkpoint)")
    ae: Any = autoencoder  # an Autoencoder: its int attributes, not nn.Module's Tensor | Module
    if int(ae.in_channels) != channels:
        raise ValueError(f"autoencoder has {ae.in_channels} image channels, the data has {channels}")
    factor, c_z = int(ae.factor), int(ae.latent_channels)
    if size % (factor * d):
        raise ValueError(f"data.hr_size {size} must be a multiple of {factor * d} (autoencoder f={factor}, "
                         f"unet {cfg.unet!r} halves {d}x)")  # fmt: skip
    return DiffusionGenerator(cfg, make_unet(c_z, c_z, size // factor), channels, size, autoencoder)
