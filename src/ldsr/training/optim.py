"""Optimizers of a run: AdamW for the model (and a second one for its discriminator, when it has one) with
linear warm-up and a constant or cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ldsr.training.config import TrainConfig


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base LR for optimizer step `step` (0-based): (step + 1) / warmup during warm-up,
    then 1 (constant) or a half cosine from 1 to `min_lr_ratio` over the remaining steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass
class Optimizers:
    """The generator's optimizer and LR schedule, and the discriminator's (None without one).

    `gen_params` are the model's trainable parameters outside `model.discriminator`, `disc_params` the
    discriminator's trainable ones. `opt` / `opt_d` may be replaced by accelerate's wrappers after
    `accelerator.prepare`; the schedules act on the same parameter groups."""

    gen_params: list[nn.Parameter]
    disc_params: list[nn.Parameter]
    opt: Any  # torch.optim.AdamW, or accelerate's AcceleratedOptimizer around it
    sched: torch.optim.lr_scheduler.LambdaLR
    opt_d: Any = None
    sched_d: torch.optim.lr_scheduler.LambdaLR | None = None

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.opt_d is not None:
            self.opt_d.zero_grad(set_to_none=True)

    def step_schedules(self) -> None:
        self.sched.step()
        if self.sched_d is not None:
            self.sched_d.step()

    def state_dict(self) -> dict[str, Any]:
        """{"optimizer", "scheduler"} (+ "optimizer_d", "scheduler_d"): the `state/` entries of a checkpoint."""
        state: dict[str, Any] = {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()}
        if self.opt_d is not None and self.sched_d is not None:
            state["optimizer_d"] = self.opt_d.state_dict()
            state["scheduler_d"] = self.sched_d.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.opt_d is not None and self.sched_d is not None:
            self.opt_d.load_state_dict(state["optimizer_d"])
            self.sched_d.load_state_dict(state["scheduler_d"])


def build_optimizers(net: nn.Module, tc: TrainConfig) -> Optimizers:
    """AdamW (+ a second AdamW for `net.discriminator` when `net` has `discriminator_loss`) and their schedules."""
    disc: nn.Module | None = getattr(net, "discriminator", None) if hasattr(net, "discriminator_loss") else None
    disc_params = [p for p in disc.parameters() if p.requires_grad] if disc is not None else []
    disc_ids = {id(p) for p in disc_params}
    gen_params = [p for p in net.parameters() if p.requires_grad and id(p) not in disc_ids]
    if not gen_params:
        raise ValueError(f"model {type(net).__name__} has no trainable parameters")
    opt = torch.optim.AdamW(gen_params, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
    opt_d = (
        torch.optim.AdamW(disc_params, lr=tc.disc_lr or tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
        if disc_params
        else None
    )

    def schedule(step: int) -> float:  # a plain function: LambdaLR's state dict then stores no lambda state
        return lr_factor(step, tc)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, schedule) if opt_d is not None else None
    return Optimizers(gen_params, disc_params, opt, sched, opt_d, sched_d)
