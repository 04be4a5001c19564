"""Clean stops: SIGTERM / SIGINT end a run after the step in progress (with a checkpoint, `--resume`
continues), loader workers ignore both signals (they reach the whole process group: Ctrl-C in a terminal,
SLURM's preemption, `kill -- -PGID`), a loader worker lost to the stop signal does not crash the stop, and every
process of a multi-process run agrees on the stop."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch

# torch's SIGCHLD handler for loader workers (torch.utils.data._utils.signal_handling) raises this from
# wherever the main thread happens to be when a worker dies by a signal or with a non-zero exit code.
_DEAD_WORKER = "DataLoader worker"


class StopRequest:
    """SIGTERM / SIGINT during training ask for a clean stop: the loop finishes its step, checkpoints and returns
    (a scheduler's preemption or `timeout` then costs no work; `--resume` continues). A second signal of the same
    kind acts as usual (Ctrl-C twice interrupts at once). Handlers are installed only in the main thread.

    Once a stop has been asked for, torch's "DataLoader worker ... is killed by signal" error (raised by its
    SIGCHLD handler at an arbitrary point of the main thread, e.g. in the middle of the checkpoint write) is
    not fatal: the worker most likely died from the same signal (one that reached it before `ignore_interrupt`
    ran, or a SIGKILL), and the loop does not need it any more, or it notices the loss at its next batch and
    stops at the last completed step (`_train_step`). `lost_worker` records it. Without a stop request the
    error propagates as usual. Enter this after the loader's iterator exists (torch installs its SIGCHLD
    handler then)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.lost_worker: str | None = None  # torch's message, when a worker was lost during the stop
        self._old: dict[int, Any] = {}
        self._child_handler: Callable[[int, Any], Any] | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        signal.signal(signum, self._old.get(signum, signal.SIG_DFL))

    def _on_child_exit(self, signum: int, frame: Any) -> None:
        """SIGCHLD: torch's check of the loader workers, its dead-worker error swallowed during a stop."""
        if self._child_handler is None:
            return
        try:
            self._child_handler(signum, frame)
        except RuntimeError as e:
            if self.signum is None or _DEAD_WORKER not in str(e):
                raise
            self.lost_worker = str(e)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
            sigchld = getattr(signal, "SIGCHLD", None)  # absent on Windows (torch installs no handler there)
            current = signal.getsignal(sigchld) if sigchld is not None else None
            if sigchld is not None and callable(current):
                self._child_handler = current
                self._old[sigchld] = signal.signal(sigchld, self._on_child_exit)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()


def ignore_interrupt(worker_id: int) -> None:
    """Loader workers (`worker_init_fn`) ignore SIGINT and SIGTERM: both reach the whole process group (Ctrl-C
    in a terminal, SLURM's SIGTERM to the job step), and the main process needs its workers for the step it
    finishes before checkpointing. A worker killed by the signal would also make torch's SIGCHLD handler raise
    "DataLoader worker ... is killed by signal" at an arbitrary point of the main process (the checkpoint
    write included). The workers still end: the main process shuts its loader down (`close_loader`), and a
    worker whose main process died exits on its own (torch's watchdog, within 5 s)."""
    for s in StopRequest.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def close_loader(batches: Iterator[Any]) -> None:
    """Shut the worker processes of a DataLoader iterator down now (what its `__del__` would do later). Workers
    that ignore SIGTERM (`ignore_interrupt`) are immune to the terminate() torch falls back on for a worker
    that does not leave within its 5 s join: those are killed (SIGKILL), after torch has stopped watching them,
    so no worker can outlive the run (multiprocessing's exit would wait for it forever)."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # torch's _MultiProcessingDataLoaderIter only
    if not callable(shutdown):
        return
    shutdown()
    for w in getattr(batches, "_workers", ()):
        if w.is_alive():
            w.kill()
            w.join(timeout=5.0)


def any_process(flag: bool, accelerator: Any) -> bool:
    """True on every process when `flag` is true on any (one scalar all-reduce; free in one process)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)
