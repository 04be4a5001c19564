"""Diffusion super-resolution models.

`LatentSR`: the denoiser works on the latent of a frozen autoencoder (Rombach et al. 2022, concat mode); the
condition is the LR image resized to the latent grid and concatenated with the noisy HR latent.
`PixelSR`: SR3 (Saharia et al. 2021); the denoiser works on HR pixels; the condition is the bicubic-upsampled LR.
With `residual=True` either model diffuses the residual between the HR target and the bicubic-upsampled LR
(SRDiff, Li et al. 2022) instead of the target itself: the chain only has to produce the high frequencies that
bicubic lacks, and a zero residual gives the bicubic image (in pixel space exactly; in latent space the
autoencoder's reconstruction of it). In latent space the residual is z(HR) - z(bicubic(LR)), and z(bicubic(LR))
joins the condition.
Both follow the Model protocol of docs/ARCHITECTURE.md (`training_loss`, `predict`, `config_dict`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

import torch
import torch.nn.functional as F
from torch import nn

from ldsr.diffusion.objective import LOSSES, PREDICTIONS, LossName, Prediction, diffusion_loss
from ldsr.diffusion.sampling import DEFAULT_MIN_LOG_SNR, SAMPLERS, SamplerName, sample, truncate_betas
from ldsr.diffusion.schedules import ScheduleName, alphas_cumprod, betas_for
from ldsr.models.local_attention import local_attention
from ldsr.models.tiling import count_windows, decode_tiled, encode_tiled, tiled_net
from ldsr.models.unets import UNET_DOWNSAMPLING, UNET_PRESETS

Space = Literal["latent", "pixel"]
SPACES: tuple[str, ...] = get_args(Space)
VALIDATION_SEED = 0  # predict() draws from a fixed seed so validation metrics are comparable across steps
# Tiled sampling: statistics passes over the windows per network evaluation that give the UNet's GroupNorms the
# image-wide statistics (ldsr.models.tiling.tiled_net); measured in ldsr.pipeline.upscaler (AUTO_TILE_FACTOR).
TILE_STATS_PASSES = 0


@dataclass
class SRConfig:
    """Diffusion SR model. `autoencoder` is the checkpoint path of a trained autoencoder (latent space only)."""

    space: Space = "latent"
    unet: str = "small"  # key of ldsr.models.unets.UNET_PRESETS
    schedule: ScheduleName = "cosine"
    timesteps: int = 2000  # T; the thesis uses 2000 for SR
    prediction: Prediction = "epsilon"
    loss: LossName = "smooth_l1"  # the thesis's training loss
    autoencoder: str | None = None
    sampler: SamplerName = "dpmpp"  # default sampler of predict() and upscale()
    steps: int = 50
    eta: float = 0.0
    # Draws averaged into one SR image by default (`ldsr upscale`, `ldsr evaluate`): their mean estimates the
    # posterior mean E[x | LR], which trades the sampled detail for PSNR (the perception-distortion trade-off).
    samples: int = 1
    # `sharp` output mode: one posterior draw with this many sampler steps (10 until chosen on validation).
    sharp_steps: int = 10
    # Back-projection onto the LR after sampling (`consistency="auto"` at inference): "auto" applies it only if the
    # training LR never included clean bicubic; "on" / "off" are a shipped model's default chosen on validation.
    consistency: Literal["auto", "on", "off"] = "auto"
    residual: bool = False  # diffuse target - base, base = bicubic(LR) (pixel) or z(bicubic(LR)) (latent)
    residual_scale: float = 1.0  # multiplies the residual so its std is ~1 (measure it: scripts/residual_std.py)
    init_from: str | None = None  # training starts the UNet from this SR checkpoint's EMA weights (fine-tuning)
    # Sampling: the UNet's self-attention attends within this many tokens of each query (ldsr.models.
    # local_attention; None: the whole grid, as in training). A shipped model's default, chosen by measurement.
    attention_radius: int | None = None

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        choices = {
            "space": SPACES,
            "unet": tuple(UNET_PRESETS),
            "prediction": PREDICTIONS,
            "loss": LOSSES,
            "sampler": SAMPLERS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"sr.{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        betas_for(self.schedule, self.timesteps)  # raises on an unknown schedule or T < 1
        if self.steps < 1:
            raise ValueError(f"sr.steps must be >= 1, got {self.steps}")
        if self.samples < 1:
            raise ValueError(f"sr.samples must be >= 1, got {self.samples}")
        if self.sharp_steps < 1:
            raise ValueError(f"sr.sharp_steps must be >= 1, got {self.sharp_steps}")
        if self.consistency not in ("auto", "on", "off"):
            raise ValueError(f"sr.consistency must be auto, on or off, got {self.consistency!r}")
        if not self.residual_scale > 0:
            raise ValueError(f"sr.residual_scale must be > 0, got {self.residual_scale}")
        if self.attention_radius is not None and self.attention_radius < 0:
            raise ValueError(f"sr.attention_radius must be >= 0 tokens or null (global), got {self.attention_radius}")


class AutoencoderLike(Protocol):
    """What LatentSR needs of ldsr.models.autoencoder.Autoencoder (see docs/ARCHITECTURE.md)."""

    factor: int
    latent_channels: int
    in_channels: int

    def encode(self, x: torch.Tensor, *, streamed: bool = False) -> torch.Tensor: ...
    def decode(self, z: torch.Tensor, *, streamed: bool = False) -> torch.Tensor: ...


def _check_batch(hr: torch.Tensor, lr: torch.Tensor, scale: int) -> None:
    if hr.ndim != 4 or lr.ndim != 4 or hr.shape[:2] != lr.shape[:2]:
        raise ValueError(f"expected hr (N, C, H, W) and lr (N, C, H/s, W/s), got {tuple(hr.shape)}, {tuple(lr.shape)}")
    if hr.shape[-2] != lr.shape[-2] * scale or hr.shape[-1] != lr.shape[-1] * scale:
        raise ValueError(f"hr {tuple(hr.shape[-2:])} is not scale={scale} times lr {tuple(lr.shape[-2:])}")


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize (align_corners=False) to `size`, antialiased when shrinking; identity when equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=shrink)


class _DiffusionSR(nn.Module):
    """Shared machinery: the denoiser `unet`, the betas buffer, the objective and the sampler calls."""

    clip_denoised: bool
    betas: torch.Tensor  # (T,) float64 buffer
    alphas_cumprod: torch.Tensor  # (T,) float32 buffer

    def __init__(self, cfg: SRConfig, unet: nn.Module, channels: int, scale: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.channels = channels
        self.scale = scale
        # diffusers' UNet2DModel (its forward returns an output object with `.sample`)
        self.unet: Any = unet
        betas = betas_for(cfg.schedule, cfg.timesteps)  # (T,) float64
        # Recomputed from the config, so not stored in checkpoints (persistent=False).
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod(betas).float(), persistent=False)

    # --- per-space hooks -------------------------------------------------------------------------------------------
    def _target(self, hr: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _condition(self, lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError

    def _target_shape(self, lr: torch.Tensor) -> tuple[int, int, int, int]:
        raise NotImplementedError

    def _to_image(self, x0: torch.Tensor, decode_tile: int = 0) -> torch.Tensor:
        raise NotImplementedError

    def _base(self, lr: torch.Tensor, size: tuple[int, int], encode_tile: int = 0) -> torch.Tensor:
        """What a residual model adds its residual to, on the denoiser grid `size` (`encode_tile` > 0: a latent
        model encodes in tiles of that many latent positions)."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------------------------------
    def _check_grid(self, size: tuple[int, ...]) -> None:
        """The UNet halves its grid len(levels) - 1 times: the denoiser's H and W must be multiples of that."""
        d = UNET_DOWNSAMPLING.get(self.cfg.unet, 1)
        if size[0] % d or size[1] % d:
            raise ValueError(
                f"denoiser grid {tuple(size)} must be divisible by {d} for unet={self.cfg.unet!r} "
                f"(choose an HR size that is a multiple of {d * getattr(self, 'factor', 1)})"
            )

    def net(self, x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The denoiser as the objective and samplers see it: (N, C + C_cond, h, w), (N,) -> (N, C, h, w)."""
        return self.unet(x_in, t).sample

    def training_loss(
        self, batch: dict[str, torch.Tensor], *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Diffusion loss on batch["hr"] conditioned on batch["lr"]."""
        hr, lr = batch["hr"], batch["lr"]
        _check_batch(hr, lr, self.scale)
        x0 = self._target(hr)
        size = (x0.shape[-2], x0.shape[-1])
        self._check_grid(size)
        cond = self._condition(lr, size)
        if self.cfg.residual:
            base = self._base(lr, size)
            x0 = (x0 - base) * self.cfg.residual_scale  # the residual, ~unit std
            cond = self._residual_condition(cond, base)
        loss = diffusion_loss(
            self.net,
            x0,
            cond,
            alphas_cumprod=self.alphas_cumprod,
            prediction=self.cfg.prediction,
            loss=self.cfg.loss,
            generator=generator,
        )
        return loss, {"loss": float(loss.detach())}

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """SR of batch["lr"] with the configured fast sampler and a fixed seed: (N, C, H, W) in [-1, 1]."""
        return self.upscale(batch["lr"], generator=torch.Generator().manual_seed(VALIDATION_SEED))[0]

    def nfe(self, sampler: SamplerName | None = None, steps: int | None = None) -> int:
        """Network evaluations of one chain: every (truncated) step for ddpm, else min(steps, truncated T)."""
        sampler = self.cfg.sampler if sampler is None else sampler
        steps = self.cfg.steps if steps is None else steps
        n = len(truncate_betas(self.betas, DEFAULT_MIN_LOG_SNR))
        return n if sampler == "ddpm" else min(steps, n)

    @torch.no_grad()
    def sample_grid(
        self,
        lr: torch.Tensor,
        *,
        sampler: SamplerName | None = None,
        steps: int | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        samples: int = 1,
        tile: int = 0,
        tile_overlap: int = 0,
        batch: int = 8,
        on_tiles: Callable[[int], None] | None = None,
        tile_stats: int = TILE_STATS_PASSES,
        encode_tile: int = 0,
        attention_radius: int | None = None,
    ) -> torch.Tensor:
        """`samples` draws on the denoiser grid (latent or pixel), base added: (samples, N, C_x, H_x, W_x).

        All draws run as one batch through one chain (x_T of the draws drawn together from `generator`). `tile` > 0:
        at every step the denoiser runs on overlapping tile x tile windows of the grid (`tile_overlap` shared), at
        most `batch` windows (or whole-grid draws) per network call, blended with smooth weights
        (ldsr.models.tiling.tiled_net); the memory of the network is that of `batch` tiles. `on_tiles(k)` is told
        after every network call of k windows. `tile_stats`: passes over the windows that first estimate the
        image-wide statistics of the UNet's GroupNorms at every step (0: each window normalises with its own).
        `encode_tile` > 0: a latent residual model encodes its base in tiles of that many latent positions (exact,
        ldsr.models.tiling.encode_tiled), bounding the encoder's memory like `decode_tile` the decoder's.
        `attention_radius`: the UNet's self-attention attends within this many tokens (None: sr.attention_radius).
        """
        if lr.ndim != 4 or lr.shape[1] != self.channels:
            raise ValueError(f"lr must be (N, {self.channels}, h, w), got {tuple(lr.shape)}")
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if tile < 0 or tile_overlap < 0 or (tile and tile_overlap >= tile):
            raise ValueError(f"need tile >= 0 and 0 <= tile_overlap < tile, got {tile}, {tile_overlap}")
        if tile_stats < 0:
            raise ValueError(f"tile_stats must be >= 0 passes, got {tile_stats}")
        radius = self.cfg.attention_radius if attention_radius is None else attention_radius
        if radius is not None and radius < 0:
            raise ValueError(f"attention_radius must be >= 0 tokens, got {radius}")
        shape = self._target_shape(lr)  # (N, C_x, H_x, W_x): latent or pixel grid
        self._check_grid(shape[-2:])
        size = (shape[-2], shape[-1])
        n = shape[0]
        cond = self._condition(lr, size)
        base = self._base(lr, size, encode_tile) if self.cfg.residual else None
        if base is not None:
            cond = self._residual_condition(cond, base)
        clip = self.clip_denoised and base is None  # a residual is not bounded to [-1, 1]
        d = UNET_DOWNSAMPLING.get(self.cfg.unet, 1)
        # The whole grid is one window when untiled; tiles are multiples of the UNet's downsampling.
        win = max(d, tile - tile % d) if tile else max(size)
        norms = [m for m in self.unet.modules() if isinstance(m, nn.GroupNorm)]
        net = tiled_net(self.net, tile=win, overlap=min(tile_overlap, win - 1), batch=batch, on_call=on_tiles,
                        norms=norms, stats_passes=tile_stats)  # fmt: skip
        # Draws per chain: all at once untiled (results as before); tiled, as many as fill one network call of
        # `batch` windows (at least 1), so that the sampler's full-grid tensors (x_t, the repeated condition, the
        # blend) are held for a few draws, not all: on the CPU (batch 1) one draw per chain.
        windows = count_windows(*size, win, min(tile_overlap, win - 1))
        group = samples if windows == 1 else max(1, min(samples, batch // windows))
        chain = functools.partial(sample, net, betas=self.betas,
                                  sampler=self.cfg.sampler if sampler is None else sampler,
                                  steps=self.cfg.steps if steps is None else steps,
                                  eta=self.cfg.eta if eta is None else eta, prediction=self.cfg.prediction,
                                  clip_denoised=clip, generator=generator)  # fmt: skip
        chains = []
        with local_attention(self.unet, radius):
            for s0 in range(0, samples, group):
                g = min(group, samples - s0)
                cond_s = cond.repeat(g, *([1] * (cond.ndim - 1)))  # (g N, C_cond, H_x, W_x), draw-major
                chains.append(chain(cond_s, (g * n, *shape[1:])))  # (g N, C_x, H_x, W_x)
        x0 = torch.cat(chains).reshape(samples, n, *shape[1:])
        if base is not None:
            x0 = base[None] + x0 / self.cfg.residual_scale
        return x0  # (S, N, C_x, H_x, W_x)

    @torch.no_grad()
    def to_image(self, x0: torch.Tensor, decode_tile: int = 0) -> torch.Tensor:
        """Denoiser grid (N, C_x, H_x, W_x) -> image (N, C, H, W) in [-1, 1] (latent models decode)."""
        if decode_tile < 0:
            raise ValueError(f"decode_tile must be >= 0 latent positions (0: the whole latent), got {decode_tile}")
        return self._to_image(x0, decode_tile).clamp(-1.0, 1.0)

    @torch.no_grad()
    def upscale(
        self,
        lr: torch.Tensor,
        *,
        sampler: SamplerName | None = None,
        steps: int | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        samples: int = 1,
        progress: bool = False,
        decode_tile: int = 0,
        tile: int = 0,
        tile_overlap: int = 0,
        batch: int = 8,
    ) -> torch.Tensor:
        """`samples` SR draws of lr (N, C, h, w) in [-1, 1] -> (samples, N, C, h*scale, w*scale) in [-1, 1].

        The draws go through the chain together (`sample_grid`; `tile` / `tile_overlap` / `batch` tile the
        denoiser) and are decoded one by one. `sampler`, `steps`, `eta` default to the config's. `decode_tile` > 0
        decodes a latent in tiles of that many latent positions (plus DECODE_HALO of context, image-wide GroupNorm
        statistics; ldsr.models.tiling), bounding the decoder's memory; pixel models ignore it. `progress` is
        accepted for compatibility (ldsr.pipeline draws the bar).
        """
        if decode_tile < 0:
            raise ValueError(f"decode_tile must be >= 0 latent positions (0: the whole latent), got {decode_tile}")
        x0 = self.sample_grid(lr, sampler=sampler, steps=steps, eta=eta, generator=generator, samples=samples,
                              tile=tile, tile_overlap=tile_overlap, batch=batch)  # fmt: skip
        return torch.stack([self.to_image(x, decode_tile) for x in x0])  # (samples, N, C, H, W)

    def _residual_condition(self, cond: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return cond

    def config_dict(self) -> dict:
        """The resolved SRConfig (what a checkpoint stores)."""
        return dataclasses.asdict(self.cfg)


# Latent positions of context around each decoded tile: the tiny autoencoder's decoder is exact from 12 on
# (tests/test_tiling.py); 16 leaves room for deeper decoders.
DECODE_HALO = 16


class LatentSR(_DiffusionSR):
    """Latent diffusion SR: UNet on cat([z_t, LR resized to the latent grid]); a frozen autoencoder maps z <-> x."""

    clip_denoised = False  # latents are not bounded to [-1, 1]

    def __init__(self, cfg: SRConfig, autoencoder: nn.Module, unet: nn.Module, channels: int, scale: int) -> None:
        super().__init__(cfg, unet, channels, scale)
        # an nn.Module with the AutoencoderLike interface (encode / decode with `streamed=`, factor, ...)
        self.autoencoder: Any = autoencoder.eval().requires_grad_(False)
        ae: Any = autoencoder
        self.factor = int(ae.factor)
        self.latent_channels = int(ae.latent_channels)

    def train(self, mode: bool = True) -> LatentSR:
        """Train mode for the UNet only; the autoencoder stays in eval mode."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    def _target(self, hr: torch.Tensor) -> torch.Tensor:
        if hr.shape[-2] % self.factor or hr.shape[-1] % self.factor:
            raise ValueError(
                f"HR size {tuple(hr.shape[-2:])} must be divisible by the autoencoder factor {self.factor}"
            )
        with torch.no_grad():
            return self.autoencoder.encode(hr)  # (N, c_z, H/f, W/f), already times scale_factor

    def _condition(self, lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # (N, C, H/s, W/s) -> (N, C, H/f, W/f): identity when s == f, bicubic otherwise.
        return resize(lr, size)

    def _target_shape(self, lr: torch.Tensor) -> tuple[int, int, int, int]:
        H, W = lr.shape[-2] * self.scale, lr.shape[-1] * self.scale
        if H % self.factor or W % self.factor:
            raise ValueError(
                f"HR size {(H, W)} (lr x{self.scale}) must be divisible by the autoencoder factor {self.factor}"
            )
        return (lr.shape[0], self.latent_channels, H // self.factor, W // self.factor)

    def _to_image(self, x0: torch.Tensor, decode_tile: int = 0) -> torch.Tensor:
        if decode_tile > 0:  # peak memory of one tile's decode instead of the whole image's (ldsr.models.tiling)
            norms = [m for m in self.autoencoder.modules() if isinstance(m, nn.GroupNorm)]
            return decode_tiled(self.autoencoder.decode, x0, factor=self.factor, tile=decode_tile, halo=DECODE_HALO,
                                norms=norms)  # fmt: skip
        return self.autoencoder.decode(x0, streamed=True)  # (N, C, H, W); exact, less memory (ldsr.models.streaming)

    def _base(self, lr: torch.Tensor, size: tuple[int, int], encode_tile: int = 0) -> torch.Tensor:
        hr_size = (size[0] * self.factor, size[1] * self.factor)
        with torch.no_grad():
            x = resize(lr, hr_size).clamp(-1.0, 1.0)  # (N, C, H, W): bicubic(LR)
            if encode_tile > 0:  # peak memory of one tile's encode instead of one full-resolution feature map
                norms = [m for m in self.autoencoder.modules() if isinstance(m, nn.GroupNorm)]
                return encode_tiled(self.autoencoder.encode, x, factor=self.factor, tile=encode_tile,
                                    halo=DECODE_HALO, norms=norms)  # fmt: skip
            return self.autoencoder.encode(x, streamed=True)  # (N, c_z, H/f, W/f)

    def _residual_condition(self, cond: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return torch.cat([cond, base], dim=1)  # (N, C + c_z, H/f, W/f): LR and the latent of bicubic(LR)

    def autoencoder_config(self) -> dict | None:
        """The frozen autoencoder's own config_dict() (to rebuild it from a self-contained checkpoint), if any."""
        fn = getattr(self.autoencoder, "config_dict", None)
        return fn() if callable(fn) else None


class PixelSR(_DiffusionSR):
    """SR3: UNet on cat([x_t, bicubic(LR)]) at HR resolution."""

    clip_denoised = True  # pixels live in [-1, 1]

    def _target(self, hr: torch.Tensor) -> torch.Tensor:
        return hr

    def _condition(self, lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return resize(lr, size).clamp(-1.0, 1.0)  # (N, C, H, W); bicubic overshoots, hence the clamp

    def _target_shape(self, lr: torch.Tensor) -> tuple[int, int, int, int]:
        return (lr.shape[0], self.channels, lr.shape[-2] * self.scale, lr.shape[-1] * self.scale)

    def _to_image(self, x0: torch.Tensor, decode_tile: int = 0) -> torch.Tensor:
        return x0  # pixel space: nothing to decode

    def _base(self, lr: torch.Tensor, size: tuple[int, int], encode_tile: int = 0) -> torch.Tensor:
        return self._condition(lr, size)  # bicubic(LR), (N, C, H, W)


def build_model(cfg: SRConfig, channels: int, scale: int, autoencoder: nn.Module | None = None) -> LatentSR | PixelSR:
    """LatentSR (needs a trained `autoencoder`, frozen here) or PixelSR from `cfg`, with a fresh UNet."""
    cfg.validate()
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    make_unet = UNET_PRESETS[cfg.unet]
    if cfg.space == "pixel":
        return PixelSR(cfg, make_unet(2 * channels, channels, 256), channels, scale)
    if autoencoder is None:
        hint = f" (load the checkpoint sr.autoencoder={cfg.autoencoder!r} and pass it)" if cfg.autoencoder else ""
        raise ValueError(f"sr.space='latent' needs a trained autoencoder: build_model(..., autoencoder=...){hint}")
    ae: Any = autoencoder  # an nn.Module with the AutoencoderLike attributes
    if int(ae.in_channels) != channels:
        raise ValueError(f"autoencoder has {ae.in_channels} image channels, the data has {channels}")
    c_z = int(ae.latent_channels)
    # UNet input: noisy latent (c_z) ++ LR on the latent grid (channels) [++ z(bicubic(LR)) (c_z) if residual];
    # output: the prediction for the latent (or its residual).
    c_in = c_z + channels + (c_z if cfg.residual else 0)
    return LatentSR(cfg, autoencoder, make_unet(c_in, c_z, 64), channels, scale)
