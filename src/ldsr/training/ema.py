"""Exponential moving average (EMA) of a model's weights, with the warm-up rule of TensorFlow's
ExponentialMovingAverage; `ema.safetensors` of every checkpoint holds it and `upscale` loads it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn


class EMA:
    """Exponential moving average of a model's state: shadow = d * shadow + (1 - d) * weight for trainable
    floating-point parameters once `step > start`; every other entry (buffers, frozen weights) and every entry
    before `start` is copied.

    d = `decay`, or with `warmup` d_n = min(decay, (1 + n) / (10 + n)) at the n-th averaged step (the
    num_updates rule of TensorFlow's ExponentialMovingAverage): without it the initial weights keep a share
    decay^n of the average, 33 % after 1100 steps at 0.999, which spoils short runs."""

    def __init__(self, model: nn.Module, decay: float, start: int = 0, warmup: bool = False) -> None:
        self.decay = float(decay)
        self.start = int(start)
        self.warmup = bool(warmup)
        self.shadow: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.tracked = {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}

    def decay_at(self, step: int) -> float:
        """The decay d used by `update(model, step)` (for step > start)."""
        n = step - self.start
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Average `model`'s weights after optimizer step `step` (1-based) into the shadow."""
        d = self.decay_at(step)
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if step > self.start and k in self.tracked and s.is_floating_point():
                s.mul_(d).add_(v.detach().to(s.dtype), alpha=1.0 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, sd: Mapping[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(sd)
        unexpected = set(sd) - set(self.shadow)
        if missing or unexpected:
            raise ValueError(
                f"EMA state does not match the model: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        for k, v in sd.items():
            self.shadow[k].copy_(v)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into `model`."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield model
        finally:
            model.load_state_dict(backup)


def ema_applied(ema: EMA | None, model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """`ema.applied(model)`, or `model` unchanged when the run keeps no EMA."""
    return ema.applied(model) if ema is not None else contextlib.nullcontext(model)
