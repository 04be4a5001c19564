"""Inference: `load(checkpoint_or_name).upscale(lr_array)`.

Everything `upscale` needs is in the checkpoint: the resolved run config (stored in config.json and in the
safetensors metadata) rebuilds the network, and a latent SR checkpoint carries its autoencoder's weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ldsr.assets import MODELS_DIR as _PACKAGED_MODELS
from ldsr.data.resize import imresize
from ldsr.data.tensor import to_array, to_tensor

Kind = Literal["bicubic", "baseline", "latent", "pixel"]
Reduce = Literal["mean", "median", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "median", "none")
MODELS_DIR: Path = _PACKAGED_MODELS  # ldsr/assets/models (package data); tests point it elsewhere


@dataclass
class UpscaleResult:
    """The SR image (H*s, W*s, C) in [0, 1]; with several samples also all of them and their per-pixel std."""

    image: np.ndarray
    samples: np.ndarray | None = None  # (S, H*s, W*s, C)
    std: np.ndarray | None = None  # (H*s, W*s, C): the spread of the samples, an uncertainty map


def shipped_models() -> dict[str, Path]:
    """Shipped model name -> checkpoint folder (ldsr/assets/models/<name>/ holding config.json)."""
    if not MODELS_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(MODELS_DIR.iterdir()) if (p / "config.json").is_file()}


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
    ) -> None:
        self.name, self.kind, self.scale, self.channels = name, kind, scale, channels
        self.device = torch.device(device)
        self.model = model.to(self.device).eval() if model is not None else None
        cfg = getattr(model, "cfg", None)
        self.default_sampler: str | None = getattr(cfg, "sampler", None) if kind in ("latent", "pixel") else None
        self.default_steps: int | None = getattr(cfg, "steps", None) if kind in ("latent", "pixel") else None
        self.default_samples: int = int(getattr(cfg, "samples", 1)) if kind in ("latent", "pixel") else 1

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

    def upscale(
        self,
        lr: np.ndarray,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        seed: int = 0,
        samples: int | None = None,
        reduce: Reduce = "mean",
        progress: bool = False,
        decode_tile: int = 0,
    ) -> UpscaleResult:
        """SR of an (h, w, C) array in [0, 1] of any size (reflect-padded to what the network needs, then cropped).

        `decode_tile` > 0: a latent model decodes in tiles of that many latent positions (bounded memory for
        large images; ldsr.models.tiling).
        """
        return self.upscale_batch(
            [lr],
            sampler=sampler,
            steps=steps,
            eta=eta,
            seed=seed,
            samples=samples,
            reduce=reduce,
            progress=progress,
            decode_tile=decode_tile,
        )[0]

    def upscale_batch(
        self,
        lrs: list[np.ndarray],
        *,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        seed: int = 0,
        samples: int | None = None,
        reduce: Reduce = "mean",
        progress: bool = False,
        decode_tile: int = 0,
    ) -> list[UpscaleResult]:
        """SR of several (h, w, C) arrays of one size in one network batch.

        The batch shares one noise generator, so a diffusion model's draw for an image depends on its position in
        the batch: the same inputs, batch and seed give the same outputs.
        """
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
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
        samples = self.default_samples if samples is None else samples
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        h, w = lrs[0].shape[:2]
        if self.kind == "bicubic":
            return [UpscaleResult(np.clip(imresize(lr, self.scale), 0.0, 1.0).astype(np.float32)) for lr in lrs]
        m = self._multiple()
        ph, pw = (-h) % m, (-w) % m
        x = torch.cat([to_tensor(lr) for lr in lrs]).to(self.device)  # (N, C, h, w) in [-1, 1]
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        H, W = h * self.scale, w * self.scale
        with torch.no_grad():
            if self.kind == "baseline":
                out = self.model.predict({"lr": x})[None]  # (1, N, C, H', W')
            else:
                g = torch.Generator().manual_seed(seed)
                out = self.model.upscale(
                    x,
                    sampler=sampler,
                    steps=steps,
                    eta=eta,
                    generator=g,
                    samples=samples,
                    progress=progress,
                    decode_tile=decode_tile,
                )  # a bar over the sampler steps
        out = out[..., :H, :W]  # (S, N, C, H, W)
        results = []
        for n in range(out.shape[1]):
            draws = np.stack([to_array(o[n]) for o in out])  # (S, H, W, C) in [0, 1]
            if len(draws) == 1:
                results.append(UpscaleResult(draws[0]))
                continue
            image = {"mean": np.mean, "median": np.median}.get(reduce, lambda a, axis: a[0])(draws, axis=0)
            results.append(
                UpscaleResult(image.astype(np.float32), samples=draws, std=draws.std(axis=0).astype(np.float32))
            )
        return results


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
    return Upscaler(name, kind, int(run["scale"]), int(run["channels"]), model, device)
