"""Samples per second: the CPU data loader (numpy degradation per sample) vs device-side degradation.

    .venv/bin/python experiments/bench_degrade_device.py [--data DIR ...] [--preset bsrgan] [--device auto]

Both paths read the same HR folder through `ldsr.data.datasets` with the image cache warm: the CPU path is
`HRFolderDataset` with its numpy `degrade` per sample (what `num_workers` loader processes run), the device
path yields HR crops + seeds (`data.device_degrade`) and makes the LR batch with
`ldsr.data.degrade_torch.degrade_batch` on `--device` (CUDA if available). One run; prints both rates and
their ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ldsr.data.config import DataConfig
from ldsr.data.datasets import SampleStream, build_train_dataset
from ldsr.data.degrade import degrade_config
from ldsr.data.degrade_torch import degrade_batch, generator_for

ROOT = Path(__file__).resolve().parents[1]


def _rate(loader: DataLoader, batches: int, step) -> float:  # type: ignore[type-arg]
    it = iter(loader)
    step(next(it))  # warm-up: fills the image cache, first CUDA kernels
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        batch = next(it)
        step(batch)
        n += batch["hr"].shape[0]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=[str(ROOT / "fixtures" / "histology")], help="HR image folders")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--preset", default="bsrgan")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--hr-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the numpy loader uses one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))  # fmt: skip
    base = DataConfig(train=args.data, split="all", hr_size=args.hr_size, degradation=args.preset)
    cfg_dev = DataConfig(**{**base.__dict__, "device_degrade": True})
    cpu_ds = build_train_dataset(base, channels=args.channels, scale=args.scale, seed=0)
    dev_ds = build_train_dataset(cfg_dev, channels=args.channels, scale=args.scale, seed=0)
    dcfg = degrade_config(args.preset)

    def cpu_step(batch: dict) -> None:  # type: ignore[type-arg]
        batch["hr"].to(device)
        batch["lr"].to(device)

    def dev_step(batch: dict) -> None:  # type: ignore[type-arg]
        hr = batch["hr"].to(device, non_blocking=True)
        degrade_batch(hr, dcfg, generator_for(batch["seed"]), scale=args.scale, bit_depth=batch["bits"])

    kw = {"batch_size": args.batch, "num_workers": 0}
    cpu = _rate(DataLoader(cpu_ds, sampler=SampleStream(0), **kw), args.batches, cpu_step)
    dev = _rate(DataLoader(dev_ds, sampler=SampleStream(0), **kw), args.batches, dev_step)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"preset {args.preset}, x{args.scale}, HR {args.hr_size}, batch {args.batch}, {args.batches} batches, "
          f"{len(cpu_ds.sources)} source images, torch {torch.__version__}")  # fmt: skip
    print(f"CPU loader (numpy degrade, 1 process): {cpu:8.1f} samples/s")
    print(f"device-side degrade_batch on {name}: {dev:8.1f} samples/s")
    print(f"ratio device / CPU loader: {dev / cpu:.2f}x")


if __name__ == "__main__":
    main()
