"""The `train:` section of a run config (torch-free, so `ldsr.config` imports it cheaply)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Precision = Literal["no", "fp16", "bf16"]
Device = Literal["auto", "cpu", "cuda"]
Schedule = Literal["constant", "cosine"]


@dataclass
class TrainConfig:
    """The `train:` section of a run config."""

    steps: int = 1000  # optimizer steps
    batch_size: int = 8
    lr: float = 1e-4
    disc_lr: float | None = None  # discriminator learning rate; None: `lr`
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up from lr / warmup_steps to lr
    lr_schedule: Schedule = "constant"  # after warm-up: constant, or cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.0
    ema_decay: float = 0.999  # 0 disables the EMA (ema.safetensors then holds the raw weights)
    ema_start: int = 0  # steps before the EMA starts averaging (until then it copies the weights)
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n)) after n averaged steps (see EMA)
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    precision: Precision = "no"  # mixed precision: fp16 / bf16 on a GPU (bf16 also runs on a CPU, slowly)
    device: Device = "auto"  # auto: CUDA when torch sees a GPU, else the CPU; cpu even where CUDA exists; cuda
    grad_accum: int = 1  # micro-batches per optimizer step
    ckpt_every: int = 1000  # checkpoint every N steps (and always at the end)
    keep_last: int = 0  # keep only the newest N checkpoints; 0 keeps all
    val_every: int = 500  # validate every N steps (0: never) and at the end
    log_every: int = 10  # CSV / progress-bar row every N steps
    run_dir: str = "runs/default"  # log.csv, checkpoints/, tensorboard/
    seed: int | None = None  # None: the run's top-level `seed`
    max_minutes: float = 0.0  # wall-clock budget of this call: stop (with a checkpoint) after it; 0: none

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "ema_start", "ckpt_every", "keep_last", "val_every", "log_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0 or (self.disc_lr is not None and not self.disc_lr > 0):
            raise ValueError(f"train.lr and train.disc_lr must be > 0, got {self.lr}, {self.disc_lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("train.grad_clip and train.weight_decay must be >= 0")
        if not 0.0 <= self.max_minutes < math.inf:
            raise ValueError(f"train.max_minutes must be a finite number >= 0 (0: no limit), got {self.max_minutes}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"train.device must be auto, cpu or cuda, got {self.device!r}")
        if self.device == "cpu" and self.precision == "fp16":
            raise ValueError("train.precision fp16 needs a GPU; train.device is cpu (use bf16 or no)")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"train.betas must lie in [0, 1), got {self.betas}")
