"""Inference: `load(checkpoint_or_name).upscale(lr_array)`.

Everything `upscale` needs is in the checkpoint: the resolved run config (stored in config.json and in the
safetensors metadata) rebuilds the network, and a latent SR checkpoint carries its autoencoder's weights.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args

import numpy as np
import torch
from torch import nn

from ldsr.assets import MODELS_DIR as _PACKAGED_MODELS
from ldsr.data.resize import imresize
from ldsr.data.tensor import to_array, to_tensor

Kind = Literal["bicubic", "baseline", "latent", "pixel"]
Reduce = Literal["mean", "median", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "median", "none")
Mode = Literal["faithful", "sharp"]
MODES: tuple[str, ...] = get_args(Mode)
Consistency = Union[bool, Literal["auto"]]
Progress = Union[bool, Callable[[int, int], None]]
# LR pixels of mirrored context around every image fed to a diffusion model, cropped off the output: without it the
# autoencoder and the UNet see the image border and a constant image came back with bands of 92..210 grey levels
# along its first and last rows (mri-x4, constant 102); 8 keeps it within 105..109 (docs/BENCHMARKS.md).
BORDER = 8
# Automatic tiles: this many times the model's training LR size (mri-x4: 256 LR pixels). Smaller tiles cost PSNR:
# on the 512^2 figshare slices tiles of 32 / 64 / 128 LR pixels lost 0.5-0.8 / 0.2-0.5 / 0.05-0.2 dB against the
# untiled output with global attention, so tiling is for images too large to run whole. Causes, measured at tile
# 128 / overlap 32 on the fixture, 3 held-out figshare slices and 2 held-out CMU-1 crops (512^2, bicubic x4, one
# draw; experiments/tiling/tile_norm_gap.py, local_attention_gap.py): the UNet's attention (a tile attends to its
# own tokens only) and per-tile GroupNorm statistics. Global attention: |tiled - untiled| PSNR vs HR at most 0.157
# dB, 0.067 with 2 statistics passes. Neighbourhood attention of radius 7 (sr.attention_radius): 0.117 dB with
# per-tile statistics, 0.019 dB with 2 passes (3x the network cost). So tiles chosen below the automatic size get
# SMALL_TILE_STATS_PASSES passes by default; automatic tiles (>= ~5x the training size, 0.02 dB) get none.
AUTO_TILE_FACTOR = 8
SMALL_TILE_STATS_PASSES = 2
# Tiles (or draws) per network call on a GPU. On the 2-core CPU a batch of 8 tiles of 256^2 latents took 1.5 s per
# tile against 1.3 s one by one and held 1.1 GB more (the attention level's 4096 tokens), so the CPU runs one.
BATCH_CUDA = 8
SHARP_DRAWS = 4  # draws of the sharp mode when `samples` is not given: one is shown, all give the spread
CONSISTENCY_WARN_DB = 25.0  # LR-PSNR below this (any channel) adds a warning to the result
ZERO_LEVEL = 0.5 / 255  # LR values at or below this count as zero (background)
MODELS_DIR: Path = _PACKAGED_MODELS  # ldsr/assets/models (package data); tests point it elsewhere


@dataclass
class UpscaleResult:
    """The SR image (H*s, W*s, C) in [0, 1]; with several samples also all of them and their per-pixel std.

    `is_sample`: the image is one posterior draw (sharp mode), not an estimate of the mean; writers record it.
    `lr_psnr`: per channel PSNR (dB, data range 1) of the image downscaled by the scale (`imresize`) against the
    LR input: how consistent the output is with what it was given. `warning`: one line when that is low.
    """

    image: np.ndarray
    samples: np.ndarray | None = None  # (S, H*s, W*s, C)
    std: np.ndarray | None = None  # (H*s, W*s, C): the spread of the samples, an uncertainty map
    is_sample: bool = False
    mode: str | None = None  # "faithful" / "sharp" for diffusion models
    lr_psnr: tuple[float, ...] = ()
    consistency_step: bool = False  # the back-projection step was applied
    tile: int = 0  # LR pixels of the denoiser tiles (0: untiled)
    warning: str | None = None


def lr_consistency(sr: np.ndarray, lr: np.ndarray, scale: int) -> tuple[float, ...]:
    """Per channel PSNR (dB, data range 1) of imresize(sr, 1/scale) against lr; inf where identical."""
    down = imresize(sr.astype(np.float32, copy=False), size=lr.shape[:2])  # (h, w, C)
    mse = ((down - lr) ** 2).reshape(-1, lr.shape[2]).mean(axis=0)  # (C,)
    return tuple(float(10 * np.log10(1.0 / m)) if m > 0 else math.inf for m in mse)


def back_project(sr: np.ndarray, lr: np.ndarray, scale: int, iterations: int = 1) -> np.ndarray:
    """Iterative back-projection (Irani & Peleg 1991): sr += bicubic_up(lr - imresize(sr, 1/scale)), clipped.

    The correction lives on the LR grid, so it changes only the low frequencies the LR measured; one iteration on
    the shipped models' output never fell below bicubic on the fixtures (clean, bsrgan and kspace LR) while
    three did (docs/BENCHMARKS.md).
    """
    for _ in range(iterations):
        sr = sr + imresize(lr - imresize(sr, size=lr.shape[:2]), size=sr.shape[:2])  # (H, W, C), a new array
    return np.clip(sr, 0.0, 1.0, out=sr).astype(np.float32, copy=False)  # in place: no full-size copies


def zero_background(sr: np.ndarray, lr: np.ndarray, scale: int, *, inplace: bool = False) -> np.ndarray:
    """Set to 0 the output pixels whose whole 3x3 LR neighbourhood is zero (background stays background); in `sr`
    itself when `inplace` (no full-size copy), else in a copy."""
    from scipy.ndimage import maximum_filter

    zero = maximum_filter(lr.max(axis=2), size=3, mode="nearest") <= ZERO_LEVEL  # (h, w)
    if not zero.any():
        return sr
    out = sr if inplace else sr.copy()  # (H, W, C)
    for y0 in range(0, zero.shape[0], 256):  # in bands of 256 LR rows: the (H, W) mask is never whole
        band = np.repeat(np.repeat(zero[y0 : y0 + 256], scale, axis=0), scale, axis=1)  # (256 s, w s)
        rows = out[y0 * scale : (y0 + 256) * scale]  # a view
        rows[band[: rows.shape[0], : sr.shape[1]]] = 0.0
    return out


SR_TASKS = ("sr", "baseline")  # shipped checkpoints that upscale (others: generate, colorize)


def shipped_models(tasks: tuple[str, ...] | None = SR_TASKS) -> dict[str, Path]:
    """Shipped model name -> checkpoint folder (ldsr/assets/models/<name>/ holding config.json), for the models
    whose config trains one of `tasks` (default: the upscalers; None: every shipped model). Reads JSON only."""
    if not MODELS_DIR.is_dir():
        return {}
    folders = {p.name: p for p in sorted(MODELS_DIR.iterdir()) if (p / "config.json").is_file()}
    return {name: p for name, p in folders.items() if tasks is None or _task_of(p) in tasks}


def _task_of(folder: Path) -> str | None:
    """The task of a checkpoint folder's config.json (None when unreadable)."""
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        return str(data.get("config", data)["task"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Upscaler:
    """An SR method behind one interface: bicubic, a CNN/GAN baseline, or a latent / pixel diffusion model."""

    def __init__(
        self,
        name: str,
        kind: Kind,
        scale: int,
        channels: int | None,
        model: nn.Module | None = None,
        device: str = "cpu",
        *,
        train_size: int | None = None,
        trained_on_clean: bool = False,
    ) -> None:
        self.name, self.kind, self.scale, self.channels = name, kind, scale, channels
        self.device = torch.device(device)
        # LatentSR / PixelSR (sample_grid, to_image, nfe, unet) or a baseline (predict, generator): kind-dependent
        self.model: Any = model.to(self.device).eval() if model is not None else None
        cfg = getattr(model, "cfg", None)
        diffusion = kind in ("latent", "pixel")
        self.default_sampler: str | None = getattr(cfg, "sampler", None) if diffusion else None
        self.default_steps: int | None = getattr(cfg, "steps", None) if diffusion else None
        self.default_samples: int = int(getattr(cfg, "samples", 1)) if diffusion else 1
        self.sharp_steps: int | None = int(getattr(cfg, "sharp_steps", 10)) if diffusion else None
        self.default_mode: Mode = "faithful"
        self.train_size = train_size  # HR side of the training crops (automatic tiles), None: unknown
        # A model trained only on degraded LR (e.g. bsrgan) over-sharpens clean LR: "auto" back-projects its output.
        self.trained_on_clean = trained_on_clean

    @property
    def n_params(self) -> int:
        """Parameters used at inference (the autoencoder counts for latent models; discriminators do not)."""
        if self.model is None:
            return 0
        if self.kind == "baseline":
            return sum(p.numel() for p in self.model.generator.parameters())
        return sum(p.numel() for p in self.model.parameters())

    def nfe(self, steps: int | None = None, sampler: str | None = None) -> int:
        """Network evaluations per sample: 0 for bicubic, 1 for CNNs, the sampler's step count for diffusion."""
        if self.kind == "bicubic":
            return 0
        if self.kind == "baseline":
            return 1
        steps = self.default_steps if steps is None else steps
        sampler = self.default_sampler if sampler is None else sampler
        if sampler == "ddpm":
            from ldsr.diffusion.sampling import DEFAULT_MIN_LOG_SNR, truncate_betas

            return len(truncate_betas(self.model.betas, DEFAULT_MIN_LOG_SNR))  # every step of the chain
        return int(steps or 0)

    def _multiple(self) -> int:
        """LR sides must be multiples of this so every UNet level (and the autoencoder) divides evenly."""
        if self.kind in ("bicubic", "baseline"):
            return 1
        unet = self.model.unet
        levels = len(unet.config.block_out_channels) - 1  # each level halves the grid
        grid = 2**levels * (self.model.factor if self.kind == "latent" else 1)  # HR multiple
        return grid // math.gcd(grid, self.scale)

    def _grid_per_lr(self) -> float:
        """Denoiser grid positions per LR pixel: scale / f for latent models, scale for pixel models."""
        return self.scale / (self.model.factor if self.kind == "latent" else 1)

    def max_auto_tile(self) -> int:
        """LR pixels of the largest automatic tile: AUTO_TILE_FACTOR x the training LR size."""
        return max(1, AUTO_TILE_FACTOR * (self.train_size or 128) // self.scale)

    def auto_tile(self, h: int, w: int) -> tuple[int, int]:
        """(tile, overlap) in LR pixels chosen for an h x w LR image: 0 when it fits in one tile.

        Tiles of T = AUTO_TILE_FACTOR x the training size with T / 4 overlap when the image (with its mirrored
        border) is larger than T, shrunk to the smallest multiple of `_multiple()` for which as many tiles as T
        needs still cover the longer side with that overlap: a fixed T on a side slightly above it (1024^2 outputs
        of mri-x4: 272 grid positions, tiles of 256) ran 4 windows of 256^2 for the work of 1.1, so the time per
        output megapixel at 1024^2 was about twice that of 4096^2; fitted tiles (168 there) keep the windows'
        area per image area near 1.5-1.8 at every size.
        """
        if self.kind not in ("latent", "pixel"):
            return 0, 0
        tile = self.max_auto_tile()
        overlap = tile // 4
        m = self._multiple()
        n = max(h, w) + 2 * BORDER
        n += -n % m  # the padded side (`_diffuse`)
        if n <= tile:
            return 0, 0
        k = -(-(n - overlap) // (tile - overlap))  # windows of `tile` along the longer side (tile_starts)
        fit = -(-(n + (k - 1) * overlap) // k)  # k windows of `fit` share >= overlap
        return min(tile, fit + -fit % m), overlap

    def upscale(self, lr: np.ndarray, **kwargs: Any) -> UpscaleResult:
        """SR of an (h, w, C) array in [0, 1] of any size; the options of `upscale_batch`."""
        return self.upscale_batch([lr], **kwargs)[0]

    def upscale_batch(
        self,
        lrs: list[np.ndarray],
        *,
        mode: Mode | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        seed: int = 0,
        samples: int | None = None,
        reduce: Reduce = "mean",
        progress: Progress = False,
        decode_tile: int | None = None,
        tile: int | None = None,
        tile_overlap: int | None = None,
        batch: int | None = None,
        consistency: Consistency = "auto",
        std: bool = False,
        tile_stats: int | None = None,
        attention_radius: int | None = None,
    ) -> list[UpscaleResult]:
        """SR of several (h, w, C) arrays in [0, 1] of one size.

        mode: "faithful" (default) estimates the posterior mean: `samples` draws (the model's sr.samples) with the
        model's steps, averaged (`reduce`); "sharp" returns one posterior draw with sr.sharp_steps steps
        (`is_sample`) and always the spread (`std`) over its draws (`samples`, default SHARP_DRAWS, >= 2).
        tile / tile_overlap: LR pixels of the denoiser's tiles (Real-ESRGAN convention; 0: off; None: automatic,
        AUTO_TILE_FACTOR x the training size when the image is larger); `batch`: tiles or draws per network call
        (None: BATCH_CUDA on a GPU, 1 elsewhere: on the CPU batching saves no time and multiplies the memory).
        tile_stats: passes over the tiles per step that give the denoiser's GroupNorms image-wide statistics (None:
        SMALL_TILE_STATS_PASSES for a tile below the automatic size, else ldsr.models.sr.TILE_STATS_PASSES; 0:
        per-tile statistics, faster and less seamless). attention_radius: the denoiser's self-attention attends
        within this many tokens (ldsr.models.local_attention; None: the model's sr.attention_radius, null = global).
        decode_tile: latent positions per encoder / decoder tile (0 or None: the whole streamed encode and decode,
        whose feature maps above ldsr.models.streaming.SPILL_BYTES wait in a temporary file).
        consistency: back-project the output onto the LR (`back_project`); "auto" does so for models that never
        saw clean LR in training. std: also return the draws and their spread in faithful mode (else a latent
        model's draws are averaged on the latent grid and decoded once). `progress`: a bar (True) or a callback
        (done, total) over network evaluations of tiles x steps. The batch shares one noise generator.
        """
        lrs = self._check(lrs)
        mode = self.default_mode if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
        if consistency not in (True, False, "auto"):
            raise ValueError(f"consistency must be true, false or 'auto', got {consistency!r}")
        batch = (BATCH_CUDA if self.device.type == "cuda" else 1) if batch is None else batch
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        diffusion = self.kind in ("latent", "pixel")
        apply = self._consistency_default(diffusion) if consistency == "auto" else bool(consistency)
        if not diffusion:
            images = self._plain(lrs)
            return [
                self._finish(im[None], lr, mode=None, reduce="mean", apply=apply, tile=0) for im, lr in zip(images, lrs)
            ]
        if mode == "sharp":
            samples = SHARP_DRAWS if samples is None else samples
            if samples < 2:
                raise ValueError(f"sharp mode reports the spread over its draws: samples must be >= 2, got {samples}")
            steps = self.sharp_steps if steps is None else steps
        samples = self.default_samples if samples is None else samples
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        tile, tile_overlap, decode_tile, tile_stats = self._tiling(lrs[0].shape[0], lrs[0].shape[1], tile,
                                                                   tile_overlap, decode_tile, tile_stats)  # fmt: skip
        each = mode == "sharp" or std or reduce != "mean" or samples == 1 or self.kind == "pixel"
        out = self._diffuse(lrs, sampler=sampler, steps=steps, eta=eta, seed=seed, samples=samples,
                            progress=progress, decode_tile=decode_tile, tile=tile, tile_overlap=tile_overlap,
                            batch=batch, each=each, tile_stats=tile_stats,
                            attention_radius=attention_radius)  # fmt: skip
        results = []
        for n, lr in enumerate(lrs):
            # (S, H, W, C) draws, or the decode of the draws' mean latent as a single "draw"
            results.append(self._finish(out[:, n], lr, mode=mode, reduce=reduce if each else "mean", apply=apply,
                                        tile=tile))  # fmt: skip
        return results

    def _tiling(self, h: int, w: int, tile: int | None, tile_overlap: int | None, decode_tile: int | None,
                tile_stats: int | None) -> tuple[int, int, int, int]:  # fmt: skip
        """upscale_batch's tile, tile_overlap, decode_tile and tile_stats for an h x w LR image, defaults filled in."""
        auto_tile, auto_overlap = self.auto_tile(h, w)
        tile = auto_tile if tile is None else tile
        tile_overlap = (auto_overlap if tile == auto_tile else tile // 4) if tile_overlap is None else tile_overlap
        if tile < 0 or tile_overlap < 0 or (tile and tile_overlap >= tile):
            raise ValueError(f"need tile >= 0 and 0 <= tile_overlap < tile (LR pixels), got {tile}, {tile_overlap}")
        if decode_tile is None:  # the streamed encode / decode is exact and bounded at every size (large maps spill
            decode_tile = 0  # to a temporary file, ldsr.models.streaming); tiles only when asked for
        if tile_stats is None:  # image-wide GroupNorm statistics for tiles chosen below the automatic size
            from ldsr.models.sr import TILE_STATS_PASSES

            small = 0 < tile < self.max_auto_tile() and tile != auto_tile
            tile_stats = SMALL_TILE_STATS_PASSES if small else TILE_STATS_PASSES
        if tile_stats < 0:
            raise ValueError(f"tile_stats must be >= 0 passes, got {tile_stats}")
        return tile, tile_overlap, decode_tile, tile_stats

    def _check(self, lrs: list[np.ndarray]) -> list[np.ndarray]:
        lrs = [x[:, :, None] if x.ndim == 2 else x for x in lrs]
        for lr in lrs:
            if lr.ndim != 3 or (self.channels is not None and lr.shape[2] != self.channels):
                raise ValueError(
                    f"{self.name}: expects {self.channels}-channel (h, w, {self.channels}) images, got shape {lr.shape}"
                )
            if lr.shape != lrs[0].shape:
                raise ValueError(f"a batch needs images of one size, got {lrs[0].shape} and {lr.shape}")
            if not np.isfinite(lr).all():
                raise ValueError(f"{self.name}: input contains NaN or inf values")
        return lrs

    def _plain(self, lrs: list[np.ndarray]) -> list[np.ndarray]:
        """Bicubic (imresize) or a CNN baseline on the (reflect-padded) LR batch: [(H, W, C)] in [0, 1]."""
        if self.kind == "bicubic":
            return [np.clip(imresize(lr, self.scale), 0.0, 1.0).astype(np.float32) for lr in lrs]
        h, w = lrs[0].shape[:2]
        x = torch.cat([to_tensor(lr) for lr in lrs]).to(self.device)  # (N, C, h, w) in [-1, 1]
        with torch.no_grad():
            out = self.model.predict({"lr": x})[..., : h * self.scale, : w * self.scale]  # (N, C, H, W)
        return [to_array(o) for o in out]

    def _diffuse(self, lrs: list[np.ndarray], *, seed: int, samples: int, progress: Progress, decode_tile: int,
                 tile: int, tile_overlap: int, batch: int, each: bool, tile_stats: int,
                 **sampling: Any) -> np.ndarray:  # fmt: skip
        """The diffusion model on the mirrored, padded batch: (S or 1, N, H, W, C) images in [0, 1].

        `each`: every draw decoded (S of them); else the draws' mean on the denoiser grid, decoded once.
        """
        from ldsr.models.tiling import count_windows, release_free_memory

        h, w = lrs[0].shape[:2]
        m = self._multiple()
        ph, pw = (-(h + 2 * BORDER)) % m, (-(w + 2 * BORDER)) % m
        pad = ((BORDER, BORDER + ph), (BORDER, BORDER + pw), (0, 0))
        x = torch.cat([to_tensor(np.pad(lr, pad, mode="symmetric")) for lr in lrs]).to(self.device)  # (N, C, h', w')
        g = self._grid_per_lr()
        tile_g, overlap_g = round(tile * g), round(tile_overlap * g)  # LR pixels -> denoiser grid positions
        grid = (round(x.shape[-2] * g), round(x.shape[-1] * g))
        windows = count_windows(*grid, tile_g, overlap_g) if tile_g else 1
        passes = 1 + tile_stats if windows > 1 else 1  # statistics passes run only when there are several tiles
        total = self.model.nfe(sampling.get("sampler"), sampling.get("steps")) * windows * passes * samples * len(lrs)
        with _progress(progress, total) as tick, torch.no_grad():
            z = self.model.sample_grid(x, generator=torch.Generator().manual_seed(seed), samples=samples,
                                       tile=tile_g, tile_overlap=overlap_g, batch=batch, on_tiles=tick,
                                       tile_stats=tile_stats, encode_tile=decode_tile,
                                       **sampling)  # fmt: skip  # (S, N, C_x, H_x, W_x)
            z = z if each else z.mean(dim=0, keepdim=True)
            release_free_memory()  # the heap the sampler left fragmented, before the full-size decode
            imgs = torch.stack([self.model.to_image(d, decode_tile) for d in z])  # (S', N, C, H', W')
        s = self.scale
        imgs = imgs[..., BORDER * s : (BORDER + h) * s, BORDER * s : (BORDER + w) * s]
        out = np.stack([np.stack([to_array(i) for i in d]) for d in imgs])  # (S', N, H, W, C)
        del imgs
        release_free_memory()
        return out

    def _consistency_default(self, diffusion: bool) -> bool:
        """`consistency="auto"`: the model's own default (`sr.consistency`, chosen on validation when shipped), else
        back-projection only for diffusion models whose training LR never included clean bicubic."""
        chosen = getattr(getattr(self.model, "cfg", None), "consistency", "auto")
        if diffusion and chosen in ("on", "off"):
            return chosen == "on"
        return diffusion and not self.trained_on_clean

    def _finish(self, draws: np.ndarray, lr: np.ndarray, *, mode: Mode | None, reduce: Reduce, apply: bool,
                tile: int) -> UpscaleResult:  # fmt: skip
        """Back-projection (if `apply`) and zero background of every draw (S, H, W, C), then their reduction
        (sharp: the first draw), the consistency measure and the warning for one image."""
        # draws is this call's own (S, H, W, C) array: the background is zeroed in place (back_project returns a
        # new array), and no full-size float64 or repeated float32 copies are made (4096^2 outputs)
        fixed = [zero_background(back_project(d, lr, self.scale) if apply else d, lr, self.scale, inplace=True)
                 for d in draws]  # fmt: skip
        stack = fixed[0][None] if len(fixed) == 1 else np.stack(fixed)  # (S, H, W, C)
        stack = stack.astype(np.float32, copy=False)
        if mode == "sharp" or reduce == "none" or len(stack) == 1:  # the mean of one draw is that draw
            image = stack[0]
        else:
            image = (np.median if reduce == "median" else np.mean)(stack, axis=0).astype(np.float32)
        draws_out = stack if len(stack) > 1 else None
        psnr = lr_consistency(image, lr, self.scale)
        worst = min(psnr)
        warning = (
            f"{self.name}: low consistency with the input: the output downscaled x{self.scale} matches the LR "
            f"to only {worst:.1f} dB PSNR (below {CONSISTENCY_WARN_DB:g}); the image may be outside the model's domain"
            if worst < CONSISTENCY_WARN_DB
            else None
        )
        return UpscaleResult(
            image=image,
            samples=draws_out,
            std=draws_out.std(axis=0).astype(np.float32) if draws_out is not None else None,
            is_sample=mode == "sharp",
            mode=mode,
            lr_psnr=psnr,
            consistency_step=apply,
            tile=tile,
            warning=warning,
        )


@contextlib.contextmanager
def _progress(progress: Progress, total: int) -> Iterator[Callable[[int], None] | None]:
    """A tick(k) for `total` network evaluations: a tqdm bar with ETA (True), the callback (done, total), or None."""
    if progress is False:
        yield None
        return
    if callable(progress):
        done = [0]

        def tick(k: int) -> None:
            done[0] += k
            progress(done[0], total)

        yield tick
        return
    from tqdm import tqdm

    with tqdm(total=total, desc="upscale (tiles x steps)", leave=False) as bar:
        yield bar.update


def _build(run: dict, state: dict[str, torch.Tensor]) -> tuple[Kind, nn.Module]:
    """Rebuild the network of a checkpoint from its stored config and load its weights (`ldsr.models.build`)."""
    from ldsr.config import config_from_dict
    from ldsr.models.build import build_model

    cfg = config_from_dict(run)
    if cfg.task not in ("baseline", "sr"):
        raise ValueError(f"a {cfg.task!r} checkpoint is not an SR model (train one with `ldsr train sr`)")
    kind: Kind = "baseline" if cfg.task == "baseline" else ("latent" if cfg.sr.space == "latent" else "pixel")
    return kind, build_model(cfg, state)


def load(
    source: str | Path,
    *,
    scale: int | None = None,
    channels: int | None = None,
    device: str = "cpu",
) -> Upscaler:
    """'bicubic' (needs `scale`), a shipped model name, or a checkpoint path -> an Upscaler."""
    if str(source) == "bicubic":
        if scale is None:
            raise ValueError("bicubic needs an explicit scale")
        return Upscaler("bicubic", "bicubic", scale, channels)  # channels None: any
    from ldsr.models.checkpoint import load_weights

    shipped = shipped_models()
    path = shipped.get(str(source), Path(source))
    if not path.exists():
        names = ", ".join(shipped) or "none installed"
        raise ValueError(f"{source}: no such checkpoint and not a shipped model (shipped: {names})")
    state, run = load_weights(path, ema=True)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # fp16 shipped weights
    kind, model = _build(run, state)
    if scale is not None and scale != run["scale"]:
        raise ValueError(f"{source}: model is x{run['scale']}, asked for x{scale}")
    if channels is not None and channels != run["channels"]:
        raise ValueError(f"{source}: model takes {run['channels']}-channel images, got {channels}")
    name = (
        path.name
        if path.name not in ("latest", "checkpoints") and not path.name.startswith("step_")
        else (path.parent.parent.name if path.name.startswith("step_") else path.parent.name)
    )
    data = run.get("data") or {}
    return Upscaler(name, kind, int(run["scale"]), int(run["channels"]), model, device,
                    train_size=data.get("hr_size"), trained_on_clean=_saw_clean_lr(data))  # fmt: skip


def _saw_clean_lr(data: dict) -> bool:
    """Whether a run's training LR included clean bicubic downscaling (preset bicubic, or blind with weight > 0)."""
    preset = data.get("degradation")
    if preset == "bicubic":
        return True
    return preset == "blind" and float((data.get("degradation_weights") or {}).get("bicubic", 1.0)) > 0
