"""Clean stops: SIGTERM / SIGINT end a run after the step in progress (with a checkpoint, `--resume`
continues), loader workers ignore Ctrl-C, and every process of a multi-process run agrees on the stop."""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch


class StopRequest:
    """SIGTERM / SIGINT during training ask for a clean stop: the loop finishes its step, checkpoints and returns
    (a scheduler's preemption or `timeout` then costs no work; `--resume` continues). A second signal of the same
    kind acts as usual (Ctrl-C twice interrupts at once). Handlers are installed only in the main thread."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        signal.signal(signum, self._old.get(signum, signal.SIG_DFL))

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


def ignore_interrupt(worker_id: int) -> None:
    """Loader workers ignore SIGINT: Ctrl-C reaches the whole foreground process group, and the main process
    needs its workers for the step it finishes before checkpointing (they exit with it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def any_process(flag: bool, accelerator: Any) -> bool:
    """True on every process when `flag` is true on any (one scalar all-reduce; free in one process)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)
