"""Latent vs pixel diffusion SR speed: the worker that `ldsr bench speed` runs in a fresh process per model.

`python -m ldsr.evaluation.speed '<json spec>'` builds one model with random weights (a sampler step costs the
same whatever the weights), warms up, times `repeats` full upscales and prints one JSON line: seconds per
image and the process's peak resident memory (which only grows, hence one process per model).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any, Literal

import torch
from torch import nn

LATENT_FACTOR: Literal[4, 8] = 4  # f of the autoencoder used for the latent model


class _StandInAutoencoder(nn.Module):
    """Minimal f=4 conv autoencoder with the ldsr.models.autoencoder interface, used only if that module is missing."""

    scale_factor: torch.Tensor  # () buffer

    def __init__(self, channels: int, latent_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.factor, self.latent_channels, self.in_channels = LATENT_FACTOR, latent_channels, channels
        self.register_buffer("scale_factor", torch.tensor(1.0))
        # (N, C, H, W) -> (N, c_z, H/4, W/4) with two stride-2 convs, and back with two nearest-upsample convs
        self.enc = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, 2, 1),
            nn.SiLU(),
            nn.Conv2d(width, latent_channels, 3, 1, 1),
        )
        self.dec = nn.Sequential(
            nn.Conv2d(latent_channels, width, 3, 1, 1),
            nn.SiLU(),
            nn.Upsample(scale_factor=2.0),
            nn.Conv2d(width, width, 3, 1, 1),
            nn.SiLU(),
            nn.Upsample(scale_factor=2.0),
            nn.Conv2d(width, channels, 3, 1, 1),
        )

    def encode(self, x: torch.Tensor, *, streamed: bool = False) -> torch.Tensor:
        return self.enc(x) * self.scale_factor

    def decode(self, z: torch.Tensor, *, streamed: bool = False) -> torch.Tensor:
        return self.dec(z / self.scale_factor)


def _autoencoder(preset: str, channels: int) -> tuple[Any, str]:
    """An untrained f=4 VQ-VAE from ldsr.models.autoencoder (same preset name if it has one), or the stand-in."""
    try:
        from ldsr.models.autoencoder import AE_PRESETS, Autoencoder, AutoencoderConfig
    except ModuleNotFoundError as e:
        if e.name != "ldsr.models.autoencoder":
            raise
        return _StandInAutoencoder(channels), "stand-in conv f=4 (ldsr.models.autoencoder missing)"
    ae_preset = preset if preset in AE_PRESETS else "small"
    cfg = AutoencoderConfig(kind="vqvae", factor=LATENT_FACTOR, preset=ae_preset)
    return Autoencoder(
        cfg, channels
    ), f"ldsr.models.autoencoder vqvae f={LATENT_FACTOR} preset {ae_preset!r} (untrained)"


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one model, warm up, time `repeats` full upscales; runs inside its own process."""
    from ldsr.diffusion.names import SamplerName
    from ldsr.models.sr import SRConfig, build_model
    from ldsr.models.unets import count_parameters

    if spec["threads"] > 0:
        # On a shared CPU, OpenMP threads > free cores can be ~50x slower (spin-waiting); 1 thread is stable.
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    dev = torch.device(spec["device"])
    space, channels, scale, hr = spec["space"], spec["channels"], spec["scale"], spec["hr"]
    ae, ae_source = _autoencoder(spec["preset"], channels) if space == "latent" else (None, "")
    cfg = SRConfig(space=space, unet=spec["preset"], sampler=spec["sampler"], steps=spec["steps"])
    model = build_model(cfg, channels, scale, autoencoder=ae).to(dev).eval()
    lr = (torch.rand(1, channels, hr // scale, hr // scale, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(dev)

    def run(sampler: SamplerName, steps: int) -> None:
        model.upscale(
            lr,
            sampler=sampler,
            steps=steps,
            generator=torch.Generator().manual_seed(0),
            decode_tile=spec.get("decode_tile", 0),
        )
        if dev.type == "cuda":
            torch.cuda.synchronize()

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; model and imports included
    # Warm-up: a 1-step DDIM upscale runs the same UNet and decoder at the same size (kernels, allocator, caches).
    run("ddim", 1)
    times = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        run(spec["sampler"], spec["steps"])
        times.append(time.perf_counter() - t0)
    if dev.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    x_shape = model._target_shape(lr)
    return {
        "space": space,
        "hr": hr,
        "grid": "x".join(str(d) for d in x_shape[1:]),
        "unet_params": count_parameters(model.unet),
        "ae_params": count_parameters(ae) if ae is not None else 0,
        "autoencoder": ae_source,
        "steps": len(model.betas) if spec["sampler"] == "ddpm" else spec["steps"],
        "seconds": sum(times) / len(times),
        "peak_mb": peak_mb,
        "threads": torch.get_num_threads(),
        "decode_tile": spec.get("decode_tile", 0),
    }


def upscale_bench(model: str, size: int, *, tile: int | None = None, threads: int = 0) -> dict[str, Any]:
    """Time and peak RSS of `ldsr.load(model).upscale` (its defaults) of a random LR image giving a size^2 output.

    Run one size per process (`python -m ldsr.evaluation.speed upscale <model> <size> [tile]`): peak RSS only
    grows. `tile` None: the automatic choice; 0: untiled.
    """
    import numpy as np

    from ldsr.pipeline import load

    if threads > 0:
        torch.set_num_threads(threads)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    up = load(model)
    lr = np.random.default_rng(0).random((size // up.scale, size // up.scale, up.channels or 1), dtype=np.float32)
    t0 = time.perf_counter()
    res = up.upscale(lr, tile=tile)
    seconds = time.perf_counter() - t0
    return {
        "model": model,
        "output": size,
        "tile": res.tile,
        "seconds": seconds,
        "seconds_per_mp": seconds / (size * size / 1e6),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model_and_imports_mb": base / 1024,
        "threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    if sys.argv[1] == "upscale":
        tile_arg = int(sys.argv[4]) if len(sys.argv) > 4 else None
        print(json.dumps(upscale_bench(sys.argv[2], int(sys.argv[3]), tile=tile_arg)))
    else:
        print(json.dumps(_worker(json.loads(sys.argv[1]))))
