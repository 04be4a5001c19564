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
from typing import Any

import torch
from torch import nn

LATENT_FACTOR = 4  # f of the autoencoder used for the latent model


class _StandInAutoencoder(nn.Module):
    """Minimal f=4 conv autoencoder with the ldsr.models.autoencoder interface, used only if that module is missing."""

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

    def run(sampler: str, steps: int) -> None:
        model.upscale(
            lr,
            sampler=sampler,
            steps=steps,
            generator=torch.Generator().manual_seed(0),  # type: ignore[arg-type]
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


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
