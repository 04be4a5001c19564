"""CNN / GAN super-resolution baselines: SRCNN, FSRCNN and ESRGAN (RRDBNet + VGG-style discriminator).

Every model is a ``BaselineSR`` following the Model protocol of docs/ARCHITECTURE.md: input
``batch["lr"]`` (N, C, H/s, W/s) and target ``batch["hr"]`` (N, C, H, W), both in [-1, 1], C in {1, 3}.
All generators take the LR tensor (SRCNN upsamples bicubically inside its forward).

ESRGAN is trained in two runs through the one training loop: ``gan: false`` (L1 pre-training, the
PSNR-oriented RRDBNet), then ``gan: true, init_from: <pre-trained checkpoint>`` (GAN fine-tuning with
``pixel_weight * L1 + perceptual_weight * VGG + gan_weight * RaGAN``). The perceptual term needs a
user-given VGG19 ImageNet weights file (``vgg_weights``): it cannot be downloaded here, so without it
the GAN stage trains on L1 + RaGAN only (see ``NOTES``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from ldsr.models.params import count_parameters, frozen

from .esrgan import (
    PerceptualLoss,
    RRDBNet,
    VGG19Features,
    VGGDiscriminator,
    load_vgg19_features,
    ragan_d_loss,
    ragan_g_loss,
)
from .srcnn import FSRCNN, SRCNN

__all__ = [
    "BASELINE_PRESETS", "ESRGAN_SIZES", "NOTES", "SUPPORTED_SCALES", "BaselineConfig", "BaselineGAN",
    "BaselineSR", "FSRCNN", "PerceptualLoss", "RRDBNet", "SRCNN", "VGG19Features", "VGGDiscriminator",
    "build_model", "count_parameters", "load_vgg19_features", "ragan_d_loss", "ragan_g_loss",
]  # fmt: skip

Arch = Literal["srcnn", "fsrcnn", "esrgan"]
SUPPORTED_SCALES = (2, 3, 4, 8)

NOTES = (
    "ESRGAN perceptual loss: the VGG19 ImageNet weights are not bundled and cannot be downloaded by "
    "ldsr; the perceptual term is used only when `baseline.vgg_weights` points to a user-given file "
    "(safetensors or a torch state dict with torchvision's 'features.*' keys). Without it the GAN stage "
    "optimises pixel_weight*L1 + gan_weight*RaGAN only, which is not the paper's ESRGAN objective. "
    "SRCNN upsamples its LR input bicubically inside the model and uses 'same' padding (the paper uses "
    "valid convolutions); FSRCNN and RRDBNet work on the LR grid."
)

# ESRGAN sizes: "default" is the paper's RRDBNet (23 RRDBs, 64 feats, growth 32, D with 64 feats).
ESRGAN_SIZES: dict[str, dict[str, int]] = {
    "default": {"num_blocks": 23, "num_feat": 64, "growth": 32, "disc_feat": 64},
    "small": {"num_blocks": 6, "num_feat": 32, "growth": 16, "disc_feat": 32},  # CPU-trainable
    "tiny": {"num_blocks": 1, "num_feat": 8, "growth": 4, "disc_feat": 8},  # tests
}


def _esrgan_factory(size: str) -> Callable[[int, int], nn.Module]:
    def make(channels: int, scale: int) -> nn.Module:
        s = ESRGAN_SIZES[size]
        return RRDBNet(channels, scale, num_feat=s["num_feat"], num_blocks=s["num_blocks"], growth=s["growth"])

    return make


# (channels, scale) -> generator
BASELINE_PRESETS: dict[str, Callable[[int, int], nn.Module]] = {
    "srcnn": SRCNN,
    "fsrcnn": FSRCNN,
    "esrgan-tiny": _esrgan_factory("tiny"),
    "esrgan-small": _esrgan_factory("small"),
    "esrgan": _esrgan_factory("default"),
}


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


@dataclass
class BaselineConfig:
    """Config of a baseline (YAML section ``baseline:``).

    arch: srcnn | fsrcnn | esrgan. preset: "default" for srcnn/fsrcnn; default | small | tiny for esrgan.
    num_blocks, num_feat, growth: ESRGAN sizes; None takes the preset's value.
    gan: False = L1 pre-training; True = GAN fine-tuning (esrgan only).
    init_from: checkpoint of the pre-trained generator (loaded by the training layer, not here).
    pixel_weight, gan_weight, perceptual_weight: GAN-stage loss weights (ESRGAN: 1e-2, 5e-3, 1).
    vgg_weights: path to a user-given VGG19 ImageNet weights file (safetensors, or a torch state dict
    read with ``weights_only=True``); the perceptual loss is used only when it is given, because the
    weights cannot be downloaded here (see ``NOTES``). Only valid with ``gan: true``.
    """

    arch: Arch = "srcnn"
    preset: str = "default"
    num_blocks: int | None = None
    num_feat: int | None = None
    growth: int | None = None
    gan: bool = False
    init_from: str | None = None
    pixel_weight: float = 1e-2
    gan_weight: float = 5e-3
    perceptual_weight: float = 1.0
    vgg_weights: str | None = None

    def __post_init__(self) -> None:
        if self.arch not in get_args(Arch):
            raise ValueError(f"baseline.arch must be one of {list(get_args(Arch))}, got {self.arch!r}")
        if self.arch == "esrgan":
            if self.preset not in ESRGAN_SIZES:
                raise ValueError(f"baseline.preset for esrgan must be one of {list(ESRGAN_SIZES)}, got {self.preset!r}")
        elif self.preset != "default":
            raise ValueError(f"baseline.preset for {self.arch} must be 'default', got {self.preset!r}")
        for name in ("num_blocks", "num_feat", "growth"):
            v = getattr(self, name)
            if v is None:
                continue
            if self.arch != "esrgan":
                raise ValueError(f"baseline.{name} applies only to arch 'esrgan', got it set for {self.arch!r}")
            if not _is_pos_int(v):
                raise ValueError(f"baseline.{name} must be a positive integer, got {v!r}")
        if not isinstance(self.gan, bool):
            raise ValueError(f"baseline.gan must be true or false, got {self.gan!r}")
        if self.gan and self.arch != "esrgan":
            raise ValueError(f"baseline.gan=true needs arch 'esrgan', got {self.arch!r}")
        for name in ("pixel_weight", "gan_weight", "perceptual_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"baseline.{name} must be a finite number >= 0, got {v!r}")
        for name in ("init_from", "vgg_weights"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise ValueError(f"baseline.{name} must be a non-empty path or null, got {v!r}")
        if self.vgg_weights is not None and not self.gan:
            raise ValueError("baseline.vgg_weights is only used in the GAN stage; set baseline.gan=true or remove it")

    def resolved(self) -> BaselineConfig:
        """A copy with the ESRGAN sizes filled in from the preset (unchanged for srcnn/fsrcnn)."""
        if self.arch != "esrgan":
            return dataclasses.replace(self)
        size = ESRGAN_SIZES[self.preset]
        return dataclasses.replace(
            self,
            num_blocks=size["num_blocks"] if self.num_blocks is None else self.num_blocks,
            num_feat=size["num_feat"] if self.num_feat is None else self.num_feat,
            growth=size["growth"] if self.growth is None else self.growth,
        )


class BaselineSR(nn.Module):
    """Model-protocol wrapper of a baseline generator trained with an L1 pixel loss."""

    def __init__(self, cfg: BaselineConfig, generator: nn.Module, channels: int, scale: int) -> None:
        super().__init__()
        self.cfg, self.channels, self.scale = cfg, channels, scale
        self.generator = generator

    def _check(self, batch: dict[str, torch.Tensor], need_hr: bool = True) -> None:
        lr = batch.get("lr")
        if lr is None or lr.ndim != 4 or lr.shape[1] != self.channels:
            got = None if lr is None else tuple(lr.shape)
            raise ValueError(f"batch['lr'] must be (N, {self.channels}, h, w), got {got}")
        if need_hr:
            hr = batch.get("hr")
            want = (lr.shape[0], self.channels, lr.shape[2] * self.scale, lr.shape[3] * self.scale)
            if hr is None or tuple(hr.shape) != want:
                raise ValueError(f"batch['hr'] must be {want} for lr {tuple(lr.shape)} at x{self.scale}, "
                                 f"got {None if hr is None else tuple(hr.shape)}")  # fmt: skip

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 between ``generator(lr)`` and ``hr`` (SRCNN/FSRCNN; ESRGAN's PSNR pre-training stage)."""
        self._check(batch)
        loss = F.l1_loss(self.generator(batch["lr"]), batch["hr"])
        return loss, {"l1": loss.item(), "loss": loss.item()}

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """SR image (N, C, H, W) clamped to [-1, 1]."""
        self._check(batch, need_hr=False)
        return self.generator(batch["lr"]).clamp(-1.0, 1.0)

    def config_dict(self) -> dict[str, Any]:
        """The resolved BaselineConfig as a dict (``BaselineConfig(**d)`` rebuilds it; channels and
        scale live in the run config)."""
        return dataclasses.asdict(self.cfg)


class BaselineGAN(BaselineSR):
    """ESRGAN GAN stage: adds ``discriminator`` and ``discriminator_loss`` (the loop then alternates
    generator and discriminator steps with two optimizers: ``generator`` and ``discriminator`` params).
    ``perceptual`` is a frozen ``PerceptualLoss`` (not in state_dict/parameters) or None."""

    def __init__(self, cfg: BaselineConfig, generator: nn.Module, discriminator: nn.Module,
                 channels: int, scale: int, perceptual: PerceptualLoss | None = None) -> None:  # fmt: skip
        super().__init__(cfg, generator, channels, scale)
        self.discriminator = discriminator
        self.perceptual = perceptual

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """``pixel_weight*L1 + perceptual_weight*VGG (if weights given) + gan_weight*RaGAN_G``.
        D sees HR (no graph) and SR (graph through G only)."""
        self._check(batch)
        cfg, hr = self.cfg, batch["hr"]
        sr = self.generator(batch["lr"])
        l1 = F.l1_loss(sr, hr)
        with frozen(self.discriminator.parameters()):  # no graph edges to D: G's backward skips D's grads
            with torch.no_grad():
                real_logits = self.discriminator(hr)
            fake_logits = self.discriminator(sr)
        g_gan = ragan_g_loss(real_logits, fake_logits)
        loss = cfg.pixel_weight * l1 + cfg.gan_weight * g_gan
        logs = {"l1": l1.item(), "gan_g": g_gan.item()}
        if self.perceptual is not None:
            perc = self.perceptual(sr, hr)
            loss = loss + cfg.perceptual_weight * perc
            logs["perceptual"] = perc.item()
        logs["loss"] = loss.item()
        return loss, logs

    def discriminator_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """RaGAN D loss on HR vs a fresh, detached ``generator(lr)`` (one extra G forward, no graph)."""
        self._check(batch)
        with torch.no_grad():
            sr = self.generator(batch["lr"])
        real_logits = self.discriminator(batch["hr"])
        fake_logits = self.discriminator(sr)
        loss = ragan_d_loss(real_logits, fake_logits)
        return loss, {"d_loss": loss.item(), "d_real": real_logits.mean().item(), "d_fake": fake_logits.mean().item()}


def build_model(cfg: BaselineConfig, channels: int, scale: int) -> BaselineSR:
    """Build the baseline for ``channels`` in {1, 3} and ``scale`` in {2, 3, 4, 8}. ESRGAN with
    ``gan=True`` returns a ``BaselineGAN`` (and reads ``vgg_weights`` if given; a missing or invalid
    file raises ValueError naming it). ``init_from`` is not read here (the training layer loads it)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if scale not in SUPPORTED_SCALES:
        raise ValueError(f"scale must be one of {list(SUPPORTED_SCALES)}, got {scale!r}")
    cfg = cfg.resolved()
    if cfg.arch == "srcnn":
        return BaselineSR(cfg, SRCNN(channels, scale), channels, scale)
    if cfg.arch == "fsrcnn":
        return BaselineSR(cfg, FSRCNN(channels, scale), channels, scale)
    assert cfg.num_feat is not None and cfg.num_blocks is not None and cfg.growth is not None
    gen = RRDBNet(channels, scale, num_feat=cfg.num_feat, num_blocks=cfg.num_blocks, growth=cfg.growth)
    if not cfg.gan:
        return BaselineSR(cfg, gen, channels, scale)
    disc = VGGDiscriminator(channels, num_feat=ESRGAN_SIZES[cfg.preset]["disc_feat"])
    perceptual = PerceptualLoss(load_vgg19_features(cfg.vgg_weights)) if cfg.vgg_weights else None
    return BaselineGAN(cfg, gen, disc, channels, scale, perceptual)
