"""First-stage autoencoders for latent diffusion: a KL-regularised VAE and a VQ-VAE.

Both compress an image ``x`` of shape ``(N, C, H, W)`` in ``[-1, 1]`` to a latent ``(N, c_z, H/f, W/f)``
with ``f`` in {4, 8}; the diffusion model then works on that grid (ARCHITECTURE.md, "Autoencoder
interface"). The networks are diffusers' ``AutoencoderKL`` and ``VQModel`` built from repeated
``DownEncoderBlock2D`` / ``UpDecoderBlock2D``; one block per level, ``f = 2 ** (levels - 1)``.

Training objective (``Autoencoder.training_loss``), all terms are means, never sums:

* reconstruction: ``l1_weight * |x - x_rec|`` + ``ssim_weight * (1 - SSIM(x_rec, x))``; SSIM is taken on
  ``[0, 1]`` (``(t + 1) / 2``, data_range 1) so the logged ``ssim`` matches ``ldsr.evaluation.metrics``. No
  pretrained perceptual (LPIPS) network is available here, SSIM stands in for it.
* VAE: ``z = mu + sigma * eps`` (reparameterisation trick) and the closed-form KL to N(0, I),
  ``0.5 (mu^2 + sigma^2 - 1 - log sigma^2)``, averaged over every latent element. latent-diffusion sums
  both the reconstruction and the KL per image instead; its ``kl_weight`` ``w`` is equivalent to
  ``w * c_z / (C f^2)`` here (the KL is relatively ``C f^2 / c_z`` times stronger at the same weight).
* VQ-VAE: nearest-code quantisation ``e = E[argmin_k ||z_e - E_k||]``, codebook loss
  ``||sg[z_e] - e||^2`` + ``commitment_weight * ||z_e - sg[e]||^2`` (van den Oord et al. 2017, beta =
  ``commitment_weight``; built here rather than taken from diffusers' ``VectorQuantizer``, whose legacy
  mode puts beta on the other term), straight-through gradient ``z_q = z_e + sg[e - z_e]``.
* optional PatchGAN (latent-diffusion / pix2pix ``NLayerDiscriminator``) with hinge loss: after
  ``disc_start`` generator steps the generator adds ``-disc_weight * E[D(x_rec)]``. The adaptive weight
  of latent-diffusion (ratio of gradient norms at the last decoder layer) is omitted: ``disc_weight``
  is fixed.

Dead codes (VQ): buffers ``code_usage`` (EMA of each code's share of the batch's assignments, decay
``usage_decay``) and ``code_idle`` (consecutive training steps without a single assignment). Before
quantising a training batch, every code idle for ``dead_code_threshold`` steps or more is re-initialised
to a randomly chosen encoder output of the current batch (detached), and its counters are reset; so a
revived code is immediately used by the vector it was copied from. ``dead_code_threshold=0`` turns this
off. The optimiser's moments for revived rows are left as they are. Under ``torch.distributed`` the
counts are all-reduced and the new codes broadcast from rank 0, so every rank keeps the same codebook.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

# from the defining modules, not `from diffusers import ...`: to a type checker diffusers' top level exports its
# torch-less placeholder classes (dummy_pt_objects), which have no encode / decoder / quantize
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.autoencoders.vq_model import VQModel
from torch import nn

from ldsr.models import streaming
from ldsr.models.losses import hinge_d_loss, ssim_torch

__all__ = [
    "AE_PRESETS",
    "AutoencoderConfig",
    "Autoencoder",
    "PatchDiscriminator",
    "build_model",
    "measure_scale_factor",
]

Kind = Literal["vae", "vqvae"]


def quantize_blocks(quantizer: nn.Module, z: torch.Tensor, block: int = 1 << 14) -> torch.Tensor:
    """diffusers' VectorQuantizer forward (eval: z + (z_q - z)) for z (N, c, h, w), `block` positions at a time:
    each position's nearest code by Euclidean distance, with a (block, codebook) distance matrix at most."""
    embedding = quantizer.embedding
    if not isinstance(embedding, nn.Embedding):
        raise ValueError(f"expected a vector quantizer with an nn.Embedding codebook, got {type(quantizer).__name__}")
    codes = embedding.weight  # (K, c)
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (N h w, c)
    out = torch.empty_like(flat)
    for a in range(0, flat.shape[0], block):
        zb = flat[a : a + block]
        zq = codes[torch.argmin(torch.cdist(zb, codes), dim=1)]  # (b, c)
        out[a : a + block] = zb + (zq - zb)
    return out.view(z.shape[0], z.shape[2], z.shape[3], z.shape[1]).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------- presets
def _diffusers_autoencoder(
    *,
    kind: Kind,
    channels: int,
    block_out_channels: tuple[int, ...],
    factor: int,
    layers_per_block: int,
    norm_num_groups: int,
    latent_channels: int,
    codebook_size: int,
    mid_attention: bool,
) -> AutoencoderKL | VQModel:
    """One ``DownEncoderBlock2D`` / ``UpDecoderBlock2D`` per entry of ``block_out_channels``.

    Every block but the last halves H and W, so ``f = 2 ** (len(block_out_channels) - 1)``.
    """
    got = 2 ** (len(block_out_channels) - 1)
    if got != factor:
        raise ValueError(
            f"block_out_channels={block_out_channels} gives factor {got}, not the requested factor {factor}"
        )
    bad = [c for c in block_out_channels if c % norm_num_groups]
    if bad:
        raise ValueError(f"block_out_channels {bad} are not divisible by norm_num_groups={norm_num_groups}")
    common: dict[str, Any] = dict(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * len(block_out_channels),
        up_block_types=("UpDecoderBlock2D",) * len(block_out_channels),
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        mid_block_add_attention=mid_attention,
    )
    if kind == "vae":
        return AutoencoderKL(**common)
    # VQ: the encoder emits latent_channels and the codebook has the same dimension
    return VQModel(**common, num_vq_embeddings=codebook_size, vq_embed_dim=latent_channels)


def _levels(base: tuple[int, ...], factor: int) -> tuple[int, ...]:
    """``base`` is the f=4 layout (3 levels); f=8 repeats the widest level once more."""
    if factor == 4:
        return base
    if factor == 8:
        return base + (base[-1],)
    raise ValueError(f"factor must be 4 or 8, got {factor!r}")


def ae_tiny(
    *, kind: Kind, factor: int, channels: int, latent_channels: int, codebook_size: int
) -> AutoencoderKL | VQModel:
    """Tests: (16, 32, 32) for f=4, one layer per block, 8 groups, no mid-block attention (~0.2 M params)."""
    return _diffusers_autoencoder(
        kind=kind, channels=channels, block_out_channels=_levels((16, 32, 32), factor), factor=factor,
        layers_per_block=1, norm_num_groups=8, latent_channels=latent_channels,
        codebook_size=codebook_size, mid_attention=False,
    )  # fmt: skip


def ae_small(
    *, kind: Kind, factor: int, channels: int, latent_channels: int, codebook_size: int
) -> AutoencoderKL | VQModel:
    """CPU-trainable: (64, 128, 128) for f=4, two layers per block, 32 groups, mid-block attention."""
    return _diffusers_autoencoder(
        kind=kind, channels=channels, block_out_channels=_levels((64, 128, 128), factor), factor=factor,
        layers_per_block=2, norm_num_groups=32, latent_channels=latent_channels,
        codebook_size=codebook_size, mid_attention=True,
    )  # fmt: skip


def ae_base(
    *, kind: Kind, factor: int, channels: int, latent_channels: int, codebook_size: int
) -> AutoencoderKL | VQModel:
    """GPU: latent-diffusion's layout, (128, 256, 512) for f=4, (128, 256, 512, 512) for f=8."""
    return _diffusers_autoencoder(
        kind=kind, channels=channels, block_out_channels=_levels((128, 256, 512), factor), factor=factor,
        layers_per_block=2, norm_num_groups=32, latent_channels=latent_channels,
        codebook_size=codebook_size, mid_attention=True,
    )  # fmt: skip


AE_PRESETS: dict[str, Callable[..., AutoencoderKL | VQModel]] = {
    "tiny": ae_tiny,
    "small": ae_small,
    "base": ae_base,
}


# ---------------------------------------------------------------------------------------------- config
@dataclass
class AutoencoderConfig:
    """The ``autoencoder:`` section of a run config (ldsr.config)."""

    kind: Kind = "vqvae"
    factor: Literal[4, 8] = 4
    preset: str = "small"  # key of AE_PRESETS
    latent_channels: int = 3  # VQ: embedding dimension; VAE: channels of z
    codebook_size: int = 1024  # VQ only
    kl_weight: float = 1e-6  # VAE only; KL is a per-element mean (see module doc)
    commitment_weight: float = 0.25  # VQ only; beta of van den Oord et al.
    l1_weight: float = 1.0
    ssim_weight: float = 0.2  # weight of (1 - SSIM)
    discriminator: bool = False  # PatchGAN + hinge loss
    disc_start: int = 10000  # generator steps before the adversarial terms switch on
    disc_weight: float = 0.5  # weight of the generator's adversarial term
    dead_code_threshold: int = 200  # VQ: restart codes idle for this many training steps; 0 = never
    usage_decay: float = 0.99  # VQ: decay of the per-code EMA usage buffer

    def __post_init__(self) -> None:
        if self.kind not in ("vae", "vqvae"):
            raise ValueError(f"kind must be 'vae' or 'vqvae', got {self.kind!r}")
        if isinstance(self.factor, bool) or self.factor not in (4, 8):
            raise ValueError(f"factor must be 4 or 8, got {self.factor!r}")
        if self.preset not in AE_PRESETS:
            raise ValueError(f"preset must be one of {sorted(AE_PRESETS)}, got {self.preset!r}")
        for name, low in (("latent_channels", 1), ("codebook_size", 2), ("disc_start", 0),
                          ("dead_code_threshold", 0)):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        for name in ("kl_weight", "commitment_weight", "l1_weight", "ssim_weight", "disc_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.l1_weight == 0 and self.ssim_weight == 0:
            raise ValueError("l1_weight and ssim_weight are both 0: there would be no reconstruction loss")
        if not isinstance(self.discriminator, bool):
            raise ValueError(f"discriminator must be true or false, got {self.discriminator!r}")
        u = self.usage_decay
        if isinstance(u, bool) or not isinstance(u, (int, float)) or not 0.0 <= u < 1.0:
            raise ValueError(f"usage_decay must be in [0, 1), got {u!r}")


# ------------------------------------------------------------------------------------- discriminator
class PatchDiscriminator(nn.Module):
    """pix2pix / latent-diffusion ``NLayerDiscriminator``: 4x4 convs, logits on a patch grid.

    (N, C, H, W) -> (N, 1, H/8 - 2, W/8 - 2) for ``n_layers=3``; each logit sees a 70x70 receptive field.
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last widening conv keeps the resolution
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():  # DCGAN initialisation, as latent-diffusion
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


# ----------------------------------------------------------------------------------------- the model
def _dist() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class Autoencoder(nn.Module):
    """VAE or VQ-VAE with the ARCHITECTURE.md autoencoder interface and the Model protocol."""

    scale_factor: torch.Tensor
    train_step: torch.Tensor
    code_usage: torch.Tensor
    code_idle: torch.Tensor

    def __init__(self, cfg: AutoencoderConfig, channels: int) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.cfg = cfg
        self.kind: Kind = cfg.kind
        self.factor: int = cfg.factor
        self.latent_channels: int = cfg.latent_channels
        self.in_channels: int = channels
        self.net = AE_PRESETS[cfg.preset](
            kind=cfg.kind, factor=cfg.factor, channels=channels,
            latent_channels=cfg.latent_channels, codebook_size=cfg.codebook_size,
        )  # fmt: skip
        # 1 / std of the unscaled training latents; set by measure_scale_factor after training
        self.register_buffer("scale_factor", torch.tensor(1.0))
        # generator steps taken (training_loss calls in train mode): gates the adversarial terms
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))
        if cfg.kind == "vqvae":
            k = cfg.codebook_size
            self.register_buffer("code_usage", torch.full((k,), 1.0 / k))  # EMA share of assignments
            self.register_buffer("code_idle", torch.zeros(k, dtype=torch.long))  # steps since last use
        if cfg.discriminator:
            self.discriminator = PatchDiscriminator(channels)

    # ------------------------------------------------------------------ encoder / decoder primitives
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"H and W must be multiples of factor {self.factor}, got {h}x{w}")

    def _encode_raw(self, x: torch.Tensor, streamed: bool = False) -> torch.Tensor:
        """Unscaled latent (N, c_z, H/f, W/f): VAE posterior mean, VQ pre-quantisation z_e."""
        self._check_input(x)
        with streaming.streamed(self.net.encoder) if streamed else contextlib.nullcontext():
            if isinstance(self.net, AutoencoderKL):
                return self.net.encode(x).latent_dist.mean
            return self.net.encode(x).latents

    @property
    def codebook(self) -> torch.Tensor:
        """VQ codebook, (K, c_z)."""
        if not isinstance(self.net, VQModel):
            raise ValueError("codebook exists only for kind='vqvae'")
        return self.net.quantize.embedding.weight

    def _nearest_codes(self, flat: torch.Tensor) -> torch.Tensor:
        """(M, c_z) -> (M,) index of the nearest code (Euclidean); no gradient."""
        with torch.no_grad(), torch.autocast(flat.device.type, enabled=False):  # fp32 distances under autocast
            return torch.cdist(flat.float(), self.codebook.detach().float()).argmin(dim=1)

    def encode(self, x: torch.Tensor, *, streamed: bool = False) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1] -> (N, c_z, H/f, W/f), multiplied by ``scale_factor``; `streamed` as in
        `decode`."""
        return self._encode_raw(x, streamed) * self.scale_factor

    def decode(self, z: torch.Tensor, *, streamed: bool = False) -> torch.Tensor:
        """(N, c_z, h, w) scaled latent -> (N, C, h*f, w*f); VQ quantises before decoding.

        `streamed` (eval mode only; ignored in train mode) runs the decoder layer by layer in row strips
        (`ldsr.models.streaming`): the same output with about two full-resolution feature maps alive instead of five.
        """
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"expected (N, {self.latent_channels}, h, w) latents, got shape {tuple(z.shape)}")
        h = z / self.scale_factor
        with streaming.streamed(self.net.decoder) if streamed else contextlib.nullcontext():
            if isinstance(self.net, AutoencoderKL):
                return self.net.decode(h).sample
            if streamed and not self.training and not self.net.config.get("lookup_from_codebook", False):
                # the same nearest codes, looked up a block of positions at a time (diffusers' quantizer holds
                # the (h w, codebook) distance matrix: 2 GB for a 1024^2 latent and 512 codes)
                return self.net.decode(quantize_blocks(self.net.quantize, h), force_not_quantize=True).sample
            return self.net.decode(h, force_not_quantize=False).sample

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic full pass x -> decode(encode(x)) (VAE: posterior mean; VQ: quantised)."""
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------------------- Model protocol
    def config_dict(self) -> dict[str, Any]:
        return asdict(self.cfg)

    def predict(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Reconstruction of ``batch["hr"]``, (N, C, H, W), not clamped."""
        return self.reconstruct(batch["hr"])

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Generator loss on ``batch["hr"]`` (N, C, H, W) in [-1, 1]; see the module doc for the terms."""
        x = batch["hr"]
        self._check_input(x)
        logs: dict[str, float] = {}
        if isinstance(self.net, AutoencoderKL):
            x_rec, reg = self._vae_pass(x, logs)
        else:
            x_rec, reg = self._vq_pass(x, logs)
        x_rec, reg = x_rec.float(), reg.float()  # the losses in fp32 under mixed precision

        rec_l1 = (x_rec - x).abs().mean()
        # SSIM on [0, 1] so the logged value matches the evaluation metric
        ssim = ssim_torch((x_rec + 1) * 0.5, (x + 1) * 0.5, data_range=1.0)
        loss = self.cfg.l1_weight * rec_l1 + self.cfg.ssim_weight * (1.0 - ssim) + reg
        logs["rec_l1"] = rec_l1.item()
        logs["ssim"] = ssim.item()

        if self.cfg.discriminator and int(self.train_step) >= self.cfg.disc_start:
            disc = self.discriminator
            # gradients flow through D into x_rec but must not reach D's own weights
            flags = [p.requires_grad for p in disc.parameters()]
            for p in disc.parameters():
                p.requires_grad_(False)
            try:
                g_adv = -disc(x_rec).mean()
            finally:
                for p, f in zip(disc.parameters(), flags):
                    p.requires_grad_(f)
            loss = loss + self.cfg.disc_weight * g_adv
            logs["g_adv"] = g_adv.item()

        if self.training:
            self.train_step += 1
        logs["loss"] = loss.item()
        return loss, logs

    def discriminator_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Hinge loss of the PatchGAN on real ``batch["hr"]`` vs the detached deterministic reconstruction.

        Before ``disc_start`` generator steps it returns a zero leaf tensor (backward is a no-op).
        """
        if not self.cfg.discriminator:
            raise ValueError("discriminator_loss needs an AutoencoderConfig with discriminator=True")
        x = batch["hr"]
        self._check_input(x)
        if int(self.train_step) < self.cfg.disc_start:
            zero = torch.zeros((), device=x.device, requires_grad=True)
            return zero, {"d_loss": 0.0, "d_active": 0.0}
        with torch.no_grad():
            x_rec = self.reconstruct(x)
        logits_real = self.discriminator(x)  # (N, 1, H/8-2, W/8-2)
        logits_fake = self.discriminator(x_rec)
        d_loss = hinge_d_loss(logits_real, logits_fake)
        return d_loss, {
            "d_loss": d_loss.item(),
            "d_active": 1.0,
            "logits_real": logits_real.mean().item(),
            "logits_fake": logits_fake.mean().item(),
        }

    # ----------------------------------------------------------------------------- training passes
    def _vae_pass(self, x: torch.Tensor, logs: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
        assert isinstance(self.net, AutoencoderKL)
        post = self.net.encode(x).latent_dist  # mean, logvar: (N, c_z, H/f, W/f), logvar clamped [-30, 20]
        mu, logvar = post.mean.float(), post.logvar.float()
        # reparameterisation: z = mu + sigma * eps, eps ~ N(0, I), so d z / d(mu, sigma) exists
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        x_rec = self.net.decode(z).sample
        # KL(N(mu, sigma^2) || N(0, 1)) per element, averaged over N * c_z * h * w elements
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        logs["kl"] = kl.item()
        logs["latent_std"] = mu.detach().std().item()
        return x_rec, self.cfg.kl_weight * kl

    def _vq_pass(self, x: torch.Tensor, logs: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
        assert isinstance(self.net, VQModel)
        z_e = self.net.encode(x).latents  # (N, c_z, h, w), h = H/f
        n, c, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, c)  # (N*h*w, c_z)
        idx = self._nearest_codes(flat)
        if self.training:
            idx, restarted = self._update_usage(flat.detach(), idx)
            logs["codes_restarted"] = float(restarted)
        e = F.embedding(idx, self.codebook).view(n, h, w, c).permute(0, 3, 1, 2)  # (N, c_z, h, w)
        codebook_loss = F.mse_loss(e, z_e.detach())  # moves codes towards the encoder outputs
        commit_loss = F.mse_loss(z_e, e.detach())  # keeps the encoder close to its codes
        z_q = z_e + (e - z_e).detach()  # straight-through estimator
        x_rec = self.net.decoder(self.net.post_quant_conv(z_q))

        counts = torch.bincount(idx, minlength=self.cfg.codebook_size).float()
        p = counts / counts.sum()
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
        logs["vq_codebook"] = codebook_loss.item()
        logs["vq_commit"] = commit_loss.item()
        logs["perplexity"] = perplexity.item()
        logs["codebook_usage"] = (counts > 0).float().mean().item()  # fraction of codes used in this batch
        if self.training:
            logs["codebook_usage_ema"] = (self.code_usage > 0.1 / self.cfg.codebook_size).float().mean().item()
        return x_rec, codebook_loss + self.cfg.commitment_weight * commit_loss

    @torch.no_grad()
    def _update_usage(self, flat: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Update ``code_usage``/``code_idle`` with this batch and restart dead codes.

        ``flat`` (M, c_z) are the detached encoder outputs, ``idx`` (M,) their nearest codes. Returns the
        (possibly re-computed) assignments and the number of codes restarted.
        """
        k = self.cfg.codebook_size
        counts = torch.bincount(idx, minlength=k).float()
        if _dist():
            torch.distributed.all_reduce(counts)
        self.code_idle.add_(1).masked_fill_(counts > 0, 0)
        self.code_usage.mul_(self.cfg.usage_decay).add_(counts / counts.sum(), alpha=1 - self.cfg.usage_decay)
        if self.cfg.dead_code_threshold == 0:
            return idx, 0
        dead = (self.code_idle >= self.cfg.dead_code_threshold).nonzero().squeeze(1)
        n_dead = int(dead.numel())
        if n_dead == 0:
            return idx, 0
        # random current encoder outputs (with replacement when the batch is smaller than the dead set)
        pick = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
        new = flat[pick].to(self.codebook.dtype)
        if _dist():
            torch.distributed.broadcast(new, src=0)
        self.codebook.data[dead] = new
        self.code_idle[dead] = 0
        self.code_usage[dead] = 1.0 / k
        return self._nearest_codes(flat), n_dead


# ------------------------------------------------------------------------------------------ helpers
@torch.no_grad()
def measure_scale_factor(model: Autoencoder, batches: Iterable[torch.Tensor | Mapping[str, torch.Tensor]]) -> float:
    """Set ``model.scale_factor`` to 1 / std of the unscaled encoder latents over ``batches``; return it.

    ``batches`` yields (N, C, H, W) tensors in [-1, 1] (or dicts with ``"hr"``). The std is taken over
    every latent element (population std around the global mean), accumulated in float64. Run once
    after training, on training data.
    """
    was_training = model.training
    model.eval()
    total, s1, s2 = 0, 0.0, 0.0
    try:
        for b in batches:
            x = b["hr"] if isinstance(b, Mapping) else b
            z = model._encode_raw(x.to(model.scale_factor.device)).double()
            total += z.numel()
            s1 += z.sum().item()
            s2 += z.pow(2).sum().item()
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("measure_scale_factor got no batches")
    mean = s1 / total
    std = math.sqrt(max(s2 / total - mean * mean, 0.0))
    if not std > 0 or not math.isfinite(std):
        raise ValueError(f"latent std is {std}: cannot set a scale factor")
    scale = 1.0 / std
    model.scale_factor.fill_(scale)
    return scale


def build_model(cfg: AutoencoderConfig, channels: int) -> Autoencoder:
    """The Model-protocol entry point used by ``ldsr.training.loop``."""
    return Autoencoder(cfg, channels)
