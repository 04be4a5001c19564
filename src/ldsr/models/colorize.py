"""Colorization: a grey image in, its colours out, its luminance kept exactly.

Every model predicts chroma only. The output is `ldsr.data.color.recombine(L_in, ab)`: the input's CIELAB
luminance with the predicted ab (shortened along its hue where it leaves the sRGB gamut), so no structure is
invented and L* of the output equals L* of the input. Networks see the input as L* / 50 - 1 (N, 1, H, W) and
chroma as ab / AB_SCALE (N, 2, H, W), both about [-1, 1]. Batches follow the Model protocol of
docs/ARCHITECTURE.md with the colorization dataset mode (`ldsr.data.color.colorization_datasets`):
batch["hr"] is the colour image (N, 3, H, W) and batch["lr"] its grey (N, 1, H, W), both in [-1, 1].

Methods (`colorize.method`):
- `diffusion`: a conditional diffusion model (the SR building blocks: UNet presets, schedules, objective,
  samplers). `space: latent` diffuses the latent of a frozen RGB autoencoder (`colorize.autoencoder`, a
  trained checkpoint) with the grey concatenated on the latent grid (pixel-unshuffled: every grey pixel of a
  latent cell becomes a channel, (N, f*f, H/f, W/f)), as SR concatenates its LR; the decoded RGB gives the ab.
  `space: pixel` diffuses ab itself at full resolution, conditioned on L (Palette-style).
- `regression`: a UNet L -> ab with an L1 loss on chroma.
- `classification`: Zhang et al. 2016: a UNet L -> logits over the quantised ab bins, multinomial
  cross-entropy against soft-encoded targets (5 nearest bins, sigma 5) with class rebalancing
  (lambda = `rebalance`, prior = the smoothed bin frequencies of the training chroma, counted over the
  batches seen, a persistent buffer), decoded by the annealed mean (T = `temperature`).
- `gan`: pix2pix (Isola et al. 2017): a UNet generator L -> ab (tanh), a PatchGAN discriminator on
  cat(L, ab), loss `l1_weight` * L1 + `gan_weight` * BCE (the loop alternates generator and discriminator).
The non-diffusion UNets are the same presets called at the fixed time step 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ldsr.data.color import (
    AB_SCALE,
    BIN_SIZE,
    SOFT_NEIGHBOURS,
    SOFT_SIGMA,
    TEMPERATURE,
    ab_bins,
    gray_to_l,
    rebalance_weights,
    recombine,
    rgb_to_lab,
    smooth_prior,
)
from ldsr.diffusion.names import SAMPLERS, SamplerName
from ldsr.diffusion.objective import LOSSES, PREDICTIONS, LossName, Prediction, diffusion_loss
from ldsr.diffusion.schedules import ScheduleName, alphas_cumprod, betas_for
from ldsr.models.unets import UNET_DOWNSAMPLING, UNET_PRESETS

Method = Literal["diffusion", "regression", "classification", "gan"]
METHODS: tuple[str, ...] = get_args(Method)
Space = Literal["latent", "pixel"]
SPACES: tuple[str, ...] = get_args(Space)
VALIDATION_SEED = 0


@dataclass
class ColorizeConfig:
    """The `colorize:` section of a run config (task: colorize)."""

    method: Method = "diffusion"
    space: Space = "latent"  # diffusion only
    unet: str = "compact"  # key of ldsr.models.unets.UNET_PRESETS
    autoencoder: str | None = None  # diffusion, latent: checkpoint of a trained 3-channel autoencoder
    schedule: ScheduleName = "cosine"
    timesteps: int = 1000
    prediction: Prediction = "epsilon"
    loss: LossName = "smooth_l1"
    sampler: SamplerName = "dpmpp"
    steps: int = 20
    eta: float = 0.0
    rebalance: float = 0.5  # classification: lambda of the rebalancing weights (0: none)
    temperature: float = TEMPERATURE  # classification: annealed-mean temperature
    bin_size: float = BIN_SIZE  # classification: side of the ab bins
    l1_weight: float = 100.0  # gan: pix2pix's lambda
    gan_weight: float = 1.0  # gan
    disc_channels: int = 64  # gan: PatchGAN width
    disc_layers: int = 3  # gan: PatchGAN depth (70x70 receptive field at 3)
    init_from: str | None = None  # start from this colorize checkpoint's EMA weights (fine-tuning)

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        choices = {"method": METHODS, "space": SPACES, "unet": tuple(UNET_PRESETS), "prediction": PREDICTIONS,
                   "loss": LOSSES, "sampler": SAMPLERS}  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"colorize.{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        betas_for(self.schedule, self.timesteps)  # raises on an unknown schedule or T < 1
        for name in ("steps", "disc_channels", "disc_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"colorize.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.rebalance <= 1.0:
            raise ValueError(f"colorize.rebalance must be in [0, 1], got {self.rebalance}")
        for name in ("temperature", "bin_size"):
            if not getattr(self, name) > 0:
                raise ValueError(f"colorize.{name} must be > 0, got {getattr(self, name)}")
        for name in ("l1_weight", "gan_weight", "eta"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"colorize.{name} must be >= 0, got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------------------------
# shared pieces


def lum_input(gray: torch.Tensor) -> torch.Tensor:
    """Grey (N, 1, H, W) in [-1, 1] -> L* / 50 - 1 (N, 1, H, W), float32 (the networks' input)."""
    return (gray_to_l((gray.float() + 1.0) * 0.5) / 50.0 - 1.0).float()


def lab_target(hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour (N, 3, H, W) in [-1, 1] -> (L* / 50 - 1 (N, 1, H, W), ab / AB_SCALE (N, 2, H, W))."""
    lab = rgb_to_lab((hr.float() + 1.0) * 0.5, axis=1).float()
    return lab[:, :1] / 50.0 - 1.0, lab[:, 1:] / AB_SCALE


def _check_batch(batch: Mapping[str, torch.Tensor], need_hr: bool = True) -> None:
    lr = batch["lr"]
    if lr.ndim != 4 or lr.shape[1] != 1:
        raise ValueError(f"colorization needs batch['lr'] = the grey (N, 1, H, W), got {tuple(lr.shape)}")
    if need_hr:
        hr = batch["hr"]
        if hr.ndim != 4 or hr.shape[1] != 3 or hr.shape[0] != lr.shape[0] or hr.shape[-2:] != lr.shape[-2:]:
            raise ValueError(f"colorization needs batch['hr'] (N, 3, H, W) on the grey's grid {tuple(lr.shape)}, "
                             f"got {tuple(hr.shape)}")  # fmt: skip


class Colorizer(nn.Module):
    """Base: `chroma(gray)` is the method; `colorize` recombines it with the input's L*; `predict` for
    validation; `multiple` is what H and W must be divisible by."""

    multiple: int = 1

    def __init__(self, cfg: ColorizeConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def chroma(self, gray: torch.Tensor, *, samples: int = 1, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        """`samples` chroma predictions ab / AB_SCALE (S, N, 2, H, W) for grey (N, 1, H, W) in [-1, 1]."""
        raise NotImplementedError

    def _check_size(self, gray: torch.Tensor) -> None:
        h, w = gray.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"image size {(h, w)} must be divisible by {self.multiple} for this model "
                             "(ldsr.models.colorize.colorize_image pads)")  # fmt: skip

    @torch.no_grad()
    def colorize(self, gray: torch.Tensor, *, samples: int = 1, steps: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        """(S, N, 3, H, W) colour in [-1, 1] whose L* is the grey's (float32 recombination)."""
        ab = self.chroma(gray, samples=samples, steps=steps, generator=generator) * AB_SCALE  # (S, N, 2, H, W)
        lum = gray_to_l((gray.float() + 1.0) * 0.5)[:, 0]  # (N, H, W)
        s, n = ab.shape[:2]
        rgb = recombine(lum.repeat(s, 1, 1), ab.reshape(s * n, *ab.shape[2:]).float(), axis=1)
        return (rgb * 2.0 - 1.0).reshape(s, n, 3, *rgb.shape[-2:])

    @torch.no_grad()
    def predict(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Colorization of batch["lr"] (one draw, fixed seed): (N, 3, H, W) in [-1, 1]."""
        _check_batch(batch, need_hr=False)
        return self.colorize(batch["lr"], generator=torch.Generator().manual_seed(VALIDATION_SEED))[0]

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cfg)

    def nfe(self, steps: int | None = None) -> int:
        """Network evaluations per sample."""
        return 1


def _ae_int(autoencoder: nn.Module, name: str) -> int:
    """An integer attribute of the Autoencoder interface (docs/ARCHITECTURE.md): factor, latent_channels, ..."""
    return int(getattr(autoencoder, name))


def _unet(cfg: ColorizeConfig, c_in: int, c_out: int) -> nn.Module:
    return UNET_PRESETS[cfg.unet](c_in, c_out, 64)


def _t0(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)


# ----------------------------------------------------------------------------------------------------------
# regression and pix2pix


class RegressionColorizer(Colorizer):
    """UNet L -> ab with an L1 loss on chroma."""

    generator: nn.Module

    def __init__(self, cfg: ColorizeConfig) -> None:
        super().__init__(cfg)
        self.generator = _unet(cfg, 1, 2)
        self.multiple = UNET_DOWNSAMPLING[cfg.unet]

    def forward_ab(self, lum: torch.Tensor) -> torch.Tensor:
        return self.generator(lum, _t0(lum)).sample  # (N, 2, H, W)

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        _check_batch(batch)
        _, ab = lab_target(batch["hr"])
        loss = F.l1_loss(self.forward_ab(lum_input(batch["lr"])), ab)
        return loss, {"loss": float(loss.detach())}

    def chroma(self, gray: torch.Tensor, *, samples: int = 1, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        self._check_size(gray)
        ab = self.forward_ab(lum_input(gray)).clamp(-1.0, 1.0)
        return ab[None].expand(samples, *ab.shape)  # deterministic: every sample is the same


class GANColorizer(RegressionColorizer):
    """pix2pix: UNet generator (tanh) + PatchGAN on cat(L, ab); L1 + BCE."""

    def __init__(self, cfg: ColorizeConfig) -> None:
        super().__init__(cfg)
        from ldsr.models.autoencoder import PatchDiscriminator

        self.discriminator = PatchDiscriminator(3, cfg.disc_channels, cfg.disc_layers)

    def forward_ab(self, lum: torch.Tensor) -> torch.Tensor:
        return torch.tanh(super().forward_ab(lum))

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        _check_batch(batch)
        _, ab = lab_target(batch["hr"])
        lum = lum_input(batch["lr"])
        fake = self.forward_ab(lum)
        l1 = F.l1_loss(fake, ab)
        logits = self.discriminator(torch.cat([lum, fake], dim=1))
        adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        loss = self.cfg.l1_weight * l1 + self.cfg.gan_weight * adv
        return loss, {"loss": float(loss.detach()), "l1": float(l1.detach()), "g_adv": float(adv.detach())}

    def discriminator_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """BCE of real pairs (L, ab) against 1 and generated ones against 0, halved (pix2pix)."""
        _check_batch(batch)
        _, ab = lab_target(batch["hr"])
        lum = lum_input(batch["lr"])
        with torch.no_grad():
            fake = self.forward_ab(lum)
        real_logits = self.discriminator(torch.cat([lum, ab], dim=1))
        fake_logits = self.discriminator(torch.cat([lum, fake], dim=1))
        loss = 0.5 * (
            F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        )
        return loss, {"d_loss": float(loss.detach())}


# ----------------------------------------------------------------------------------------------------------
# classification (Zhang et al. 2016)


class ClassificationColorizer(Colorizer):
    """UNet L -> logits over the Q ab bins; rebalanced soft-encoded cross-entropy; annealed-mean decoding."""

    generator: nn.Module
    centres: torch.Tensor  # (Q, 2) bin centres in ab units
    counts: torch.Tensor  # (Q,) training pixels per nearest bin so far

    def __init__(self, cfg: ColorizeConfig) -> None:
        super().__init__(cfg)
        centres = torch.from_numpy(ab_bins(cfg.bin_size)).float()  # (Q, 2) in ab units
        self.register_buffer("centres", centres, persistent=False)  # recomputed from bin_size
        self.register_buffer("counts", torch.zeros(len(centres), dtype=torch.float64))  # training chroma per bin
        self.generator = _unet(cfg, 1, len(centres))
        self.multiple = UNET_DOWNSAMPLING[cfg.unet]

    def soft_encode(self, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ab (N, 2, H, W) in ab units -> (soft targets (N, Q, H, W): Gaussian (sigma 5) weights of the 5
        nearest centres, normalised; nearest bin (N, H, W))."""
        flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)  # (P, 2)
        d2 = torch.cdist(flat, self.centres) ** 2  # (P, Q)
        near_d2, near = d2.topk(SOFT_NEIGHBOURS, dim=1, largest=False)  # (P, 5)
        w = torch.exp(-near_d2 / (2 * SOFT_SIGMA**2))
        soft = torch.zeros_like(d2).scatter_(1, near, w / w.sum(1, keepdim=True))
        n, _, h, wd = ab.shape
        return soft.reshape(n, h, wd, -1).permute(0, 3, 1, 2), near[:, 0].reshape(n, h, wd)

    def class_weights(self) -> torch.Tensor:
        """Rebalancing weights (Q,) from the counts so far (all ones before any)."""
        counts = self.counts.detach().cpu().numpy()
        if counts.sum() == 0 or self.cfg.rebalance == 0:
            return torch.ones(len(counts), device=self.centres.device)
        prior = smooth_prior(counts, self.centres.cpu().double().numpy())
        return torch.from_numpy(rebalance_weights(prior, self.cfg.rebalance)).float().to(self.centres.device)

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        _check_batch(batch)
        _, ab = lab_target(batch["hr"])
        soft, nearest = self.soft_encode(ab * AB_SCALE)
        if self.training:
            with torch.no_grad():
                self.counts += torch.bincount(nearest.flatten(), minlength=len(self.centres)).to(self.counts)
        logits = self.generator(lum_input(batch["lr"]), _t0(ab)).sample  # (N, Q, H, W)
        ce = -(soft * F.log_softmax(logits.float(), dim=1)).sum(1)  # (N, H, W)
        loss = (self.class_weights()[nearest] * ce).mean()
        return loss, {"loss": float(loss.detach()), "ce": float(ce.mean().detach())}

    def chroma(self, gray: torch.Tensor, *, samples: int = 1, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        self._check_size(gray)
        lum = lum_input(gray)
        logits = self.generator(lum, _t0(lum)).sample.float()  # (N, Q, H, W)
        # annealed mean: softmax(log p / T) = softmax(logits / T), then the expected bin centre
        p = F.softmax(logits / self.cfg.temperature, dim=1)
        ab = torch.einsum("nqhw,qc->nchw", p, self.centres) / AB_SCALE  # (N, 2, H, W)
        return ab[None].expand(samples, *ab.shape)


# ----------------------------------------------------------------------------------------------------------
# diffusion


class DiffusionColorizer(Colorizer):
    """Conditional diffusion on ab (pixel space) or on an RGB autoencoder's latent (latent space)."""

    unet: nn.Module
    autoencoder: Any  # ldsr.models.autoencoder.Autoencoder (frozen) or None
    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    def __init__(self, cfg: ColorizeConfig, unet: nn.Module, autoencoder: nn.Module | None) -> None:
        super().__init__(cfg)
        self.unet = unet
        self.autoencoder = autoencoder.eval().requires_grad_(False) if autoencoder is not None else None
        self.factor = _ae_int(autoencoder, "factor") if autoencoder is not None else 1
        self.multiple = self.factor * UNET_DOWNSAMPLING[cfg.unet]
        betas = betas_for(cfg.schedule, cfg.timesteps)
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod(betas).float(), persistent=False)

    def train(self, mode: bool = True) -> DiffusionColorizer:
        super().train(mode)
        if self.autoencoder is not None:
            self.autoencoder.eval()
        return self

    def net(self, x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x_in, t).sample

    def _condition(self, gray: torch.Tensor) -> torch.Tensor:
        lum = lum_input(gray)  # (N, 1, H, W)
        # latent: each f x f cell's grey pixels become channels on the latent grid, (N, f*f, H/f, W/f)
        return F.pixel_unshuffle(lum, self.factor) if self.factor > 1 else lum

    def training_loss(self, batch: Mapping[str, torch.Tensor], *, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
        _check_batch(batch)
        self._check_size(batch["lr"])
        if self.autoencoder is not None:
            with torch.no_grad():
                x0 = self.autoencoder.encode(batch["hr"])  # (N, c_z, H/f, W/f), times its scale factor
        else:
            x0 = lab_target(batch["hr"])[1]  # (N, 2, H, W)
        loss = diffusion_loss(self.net, x0, self._condition(batch["lr"]), alphas_cumprod=self.alphas_cumprod,
                              prediction=self.cfg.prediction, loss=self.cfg.loss, generator=generator)  # fmt: skip
        return loss, {"loss": float(loss.detach())}

    def nfe(self, steps: int | None = None) -> int:
        from ldsr.diffusion.sampling import DEFAULT_MIN_LOG_SNR, truncate_betas

        n = len(truncate_betas(self.betas, DEFAULT_MIN_LOG_SNR))
        return n if self.cfg.sampler == "ddpm" else min(self.cfg.steps if steps is None else steps, n)

    def chroma(self, gray: torch.Tensor, *, samples: int = 1, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        from ldsr.diffusion.sampling import sample

        self._check_size(gray)
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        cond = self._condition(gray)
        n, (h, w) = gray.shape[0], cond.shape[-2:]
        c = int(self.autoencoder.latent_channels) if self.autoencoder is not None else 2
        x0 = sample(self.net, cond.repeat(samples, 1, 1, 1), (samples * n, c, h, w), betas=self.betas,
                    sampler=self.cfg.sampler, steps=self.cfg.steps if steps is None else steps, eta=self.cfg.eta,
                    prediction=self.cfg.prediction, clip_denoised=self.autoencoder is None,
                    generator=generator)  # fmt: skip  # (S N, c, h, w), draw-major
        if self.autoencoder is None:
            return x0.reshape(samples, n, 2, h, w)
        rgb = torch.cat([self.autoencoder.decode(z[None]) for z in x0]).clamp(-1.0, 1.0)  # (S N, 3, H, W)
        ab = lab_target(rgb)[1]
        return ab.reshape(samples, n, 2, *ab.shape[-2:])

    def autoencoder_config(self) -> dict[str, Any] | None:
        fn = getattr(self.autoencoder, "config_dict", None)
        return fn() if callable(fn) else None


# ----------------------------------------------------------------------------------------------------------
# builders


def build_model(cfg: ColorizeConfig, autoencoder: nn.Module | None = None) -> Colorizer:
    """The colorizer of `cfg.method` with fresh weights; latent diffusion needs the trained `autoencoder`."""
    cfg.validate()
    if cfg.method == "regression":
        return RegressionColorizer(cfg)
    if cfg.method == "gan":
        return GANColorizer(cfg)
    if cfg.method == "classification":
        return ClassificationColorizer(cfg)
    make_unet = UNET_PRESETS[cfg.unet]
    if cfg.space == "pixel":
        return DiffusionColorizer(cfg, make_unet(2 + 1, 2, 64), None)
    if autoencoder is None:
        raise ValueError("colorize.space='latent' needs a trained 3-channel autoencoder (colorize.autoencoder)")
    if _ae_int(autoencoder, "in_channels") != 3:
        raise ValueError(f"colorize.autoencoder has {_ae_int(autoencoder, 'in_channels')} channels; colour needs 3")
    c_z, f = _ae_int(autoencoder, "latent_channels"), _ae_int(autoencoder, "factor")
    # UNet input: noisy latent (c_z) ++ the grey pixel-unshuffled onto the latent grid (f*f); output: c_z.
    return DiffusionColorizer(cfg, make_unet(c_z + f * f, c_z, 64), autoencoder)


# ----------------------------------------------------------------------------------------------------------
# inference on arrays


class ConstantChroma:
    """Reference rows: one ab for every pixel ((0, 0): the grey input itself; the training mean: the constant
    mean-chroma baseline)."""

    def __init__(self, ab: tuple[float, float], name: str) -> None:
        self.ab = (float(ab[0]), float(ab[1]))
        self.name = name
        self.n_params = 0
        self.stochastic = False

    def chroma_array(self, gray: np.ndarray, samples: int, steps: int | None, seed: int) -> np.ndarray:
        """(S, H, W, 2) ab in CIELAB units."""
        return np.broadcast_to(np.array(self.ab), (samples, *gray.shape, 2)).astype(np.float64)


@dataclass
class ColorizeResult:
    """`images` (S, H, W, 3) float64 in [0, 1], L* of each equal to the input's; `spread` (H, W) the per-pixel
    chroma spread over the samples, sqrt(var(a) + var(b)) in CIELAB units (None for one sample)."""

    images: np.ndarray
    spread: np.ndarray | None


class ModelColorizer:
    """A trained colorizer behind the array interface of `colorize_image`."""

    def __init__(self, model: Colorizer, name: str, device: str = "cpu") -> None:
        from ldsr.models.params import count_parameters

        self.model = model.to(device).eval()
        self.name = name
        self.device = device
        # the colorizer's own weights (a latent model's frozen autoencoder is counted too: it runs at inference)
        self.n_params = count_parameters(model) - (
            count_parameters(model.discriminator) if isinstance(model, GANColorizer) else 0
        )
        self.stochastic = isinstance(model, DiffusionColorizer)

    @torch.no_grad()
    def chroma_array(self, gray: np.ndarray, samples: int, steps: int | None, seed: int) -> np.ndarray:
        """(S, H, W, 2) ab for an (H, W) grey in [0, 1]: reflect-padded to the model's multiple, cropped back."""
        h, w = gray.shape
        m = self.model.multiple
        ph, pw = (-h) % m, (-w) % m
        g = np.pad(gray, ((0, ph), (0, pw)), mode="reflect" if min(h, w) > max(ph, pw) else "edge")
        t = torch.from_numpy(np.ascontiguousarray(g, dtype=np.float32))[None, None].to(self.device) * 2.0 - 1.0
        gen = torch.Generator().manual_seed(int(seed))
        ab = self.model.chroma(t, samples=samples, steps=steps, generator=gen)[:, 0]  # (S, 2, H', W')
        return ab[:, :, :h, :w].permute(0, 2, 3, 1).double().cpu().numpy() * AB_SCALE


AnyColorizer = ModelColorizer | ConstantChroma


def colorize_image(colorizer: AnyColorizer, gray: np.ndarray, *, samples: int = 1, steps: int | None = None,
                   seed: int = 0) -> ColorizeResult:  # fmt: skip
    """Colour versions of an (H, W) grey in [0, 1]: the method's chroma recombined (float64) with the grey's
    exact L* (`ldsr.data.color.recombine`)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if gray.ndim != 2:
        raise ValueError(f"expected an (H, W) grey image, got shape {gray.shape}")
    if not np.isfinite(gray).all():
        raise ValueError("image has NaN or infinite values")
    gray = np.asarray(gray, dtype=np.float64)
    ab = colorizer.chroma_array(gray, samples, steps, seed)  # (S, H, W, 2)
    lum = gray_to_l(gray)
    images = np.stack([recombine(lum, a, axis=-1) for a in ab])
    spread = None
    if samples > 1:
        # spread of the chroma actually shown (after the gamut mapping), in CIELAB units
        shown = rgb_to_lab(images, axis=-1)[..., 1:]  # (S, H, W, 2)
        spread = np.sqrt(shown.var(axis=0).sum(axis=-1))
    return ColorizeResult(images, spread)


def parse_constant(spec: str) -> ConstantChroma | None:
    """`gray` -> ab (0, 0); `chroma:A,B` -> constant ab (A, B); anything else None (a checkpoint)."""
    if spec == "gray":
        return ConstantChroma((0.0, 0.0), "gray")
    if spec.startswith("chroma:"):
        try:
            a, b = (float(v) for v in spec[len("chroma:") :].split(","))
        except ValueError:
            raise ValueError(f"-m {spec}: expected chroma:A,B with two numbers (CIELAB a and b)") from None
        return ConstantChroma((a, b), spec)
    return None


def load_colorizer(source: str, device: str = "cpu") -> AnyColorizer:
    """`gray`, `chroma:A,B`, a shipped model name (ldsr/assets/models/<name>) or a colorize checkpoint (folder,
    run dir, .safetensors), EMA weights."""
    const = parse_constant(source)
    if const is not None:
        return const
    from ldsr.assets import MODELS_DIR
    from ldsr.config import config_from_dict
    from ldsr.models.build import build_model as build_run_model
    from ldsr.models.checkpoint import load_weights

    path = MODELS_DIR / source if (MODELS_DIR / source / "config.json").is_file() else Path(source)
    if not path.exists():
        raise ValueError(f"-m {source}: no such checkpoint or shipped model (or gray, chroma:A,B)")
    state, run = load_weights(path, ema=True)
    if run.get("task") != "colorize":
        raise ValueError(f"-m {source}: not a colorization model (task {run.get('task')!r})")
    model = build_run_model(config_from_dict(run), state)
    if not isinstance(model, Colorizer):
        raise TypeError(f"{source}: built {type(model).__name__}, not a Colorizer")
    return ModelColorizer(model, path.name if path.name != "" else source, device)
