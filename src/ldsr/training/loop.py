"""The one training loop (accelerate) for every model that follows the Model protocol of ARCHITECTURE.md.

AdamW with linear warm-up and a constant or cosine schedule, EMA weights, gradient clipping, gradient
accumulation, mixed precision, an optional discriminator with its own optimizer (generator and
discriminator steps alternate on each batch), periodic validation (PSNR / SSIM of the EMA weights via
`model.predict`, measured by `ldsr.evaluation.metrics`), a CSV log (+ TensorBoard when installed) and checkpoints
(ldsr.models.checkpoint) that resume exactly: the data order is a function of the step (ldsr.data.datasets), and the
optimizer / scheduler / EMA / RNG states are stored as safetensors + JSON (no pickle).

Multi-process (`accelerate launch --num_processes N`, DDP): the loss methods are reached through the
forward of `_LossModule` (``mode="loss"`` -> `training_loss`, ``mode="disc"`` -> `discriminator_loss`), the
module that `accelerator.prepare` wraps, so gradients are all-reduced; the models need no `forward` of their
own for it, and checkpoints hold the inner model's parameter names. Process `r` of `W` reads the samples
``m * W * batch + r * batch + i`` of micro-batch `m` (one process: unchanged). Logging, validation and
checkpoints happen on the main process; the log shows the main process's share of each batch.
"""

from __future__ import annotations

import contextlib
import csv
import io as _io
import math
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

from ldsr.training.config import TrainConfig

if TYPE_CHECKING:
    from ldsr.config import RunConfig

# ----------------------------------------------------------------------------------------------------------
# schedule, EMA, RNG


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: Mapping[str, Any]) -> None:
    v = st["python"]
    random.setstate((v[0], tuple(v[1]), v[2]))
    n = st["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), int(n[2]), int(n[3]), float(n[4])))
    torch.set_rng_state(st["torch"].cpu())
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in st["cuda"]])


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block with fixed seeds without disturbing the training RNG streams (python, numpy, torch)."""
    py, npy = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        seed_everything(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


# ----------------------------------------------------------------------------------------------------------
# building models


def load_autoencoder(path: str, channels: int) -> nn.Module:
    """A trained autoencoder (EMA weights) from its checkpoint folder / run dir, for latent SR."""
    from ldsr.config import from_dict
    from ldsr.models.autoencoder import AutoencoderConfig, build_model
    from ldsr.models.checkpoint import load_weights

    state, run = load_weights(path, ema=True)
    if run.get("task") != "autoencoder" or "autoencoder" not in run:
        raise ValueError(f"sr.autoencoder {path}: not an autoencoder checkpoint (task {run.get('task')!r})")
    if run.get("channels") != channels:
        raise ValueError(f"sr.autoencoder {path}: has {run.get('channels')} channels, the run has {channels}")
    ae = build_model(from_dict(AutoencoderConfig, run["autoencoder"], "autoencoder"), channels)
    ae.load_state_dict(state)
    return ae


def load_init_weights(model: nn.Module, path: str, prefix: str = "") -> None:
    """Initialise `model` from a checkpoint's EMA weights; keys of `model` the checkpoint lacks (e.g. a new
    discriminator) keep their initialisation; shape mismatches are errors."""
    from ldsr.models.checkpoint import load_weights

    state, _ = load_weights(path, ema=True)
    own = model.state_dict()
    use = {k: v for k, v in state.items() if k in own and (not prefix or k.startswith(prefix))}
    if not use:
        raise ValueError(f"init_from {path}: no weights match the model")
    bad = [k for k, v in use.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"init_from {path}: shape mismatch for {bad[:5]}")
    model.load_state_dict(use, strict=False)


def build_from_config(cfg: RunConfig) -> nn.Module:
    """The model of `cfg.task`, through its module's `build_model` (imported lazily)."""
    cfg.resolve()
    if cfg.task == "autoencoder":
        from ldsr.models.autoencoder import build_model as build_ae

        return build_ae(cfg.autoencoder, cfg.channels)
    if cfg.task == "baseline":
        from ldsr.models.baselines import build_model as build_baseline

        model = build_baseline(cfg.baseline, cfg.channels, cfg.scale)
        if cfg.baseline.init_from:
            load_init_weights(model, cfg.baseline.init_from, prefix="generator.")
        return model
    if cfg.task == "sr":
        from ldsr.models.sr import build_model as build_sr

        ae = None
        if getattr(cfg.sr, "space", "latent") == "latent":
            if not cfg.sr.autoencoder:
                raise ValueError("sr.autoencoder: latent SR needs the checkpoint of a trained autoencoder")
            ae = load_autoencoder(cfg.sr.autoencoder, cfg.channels)
        model = build_sr(cfg.sr, cfg.channels, cfg.scale, autoencoder=ae)
        if cfg.sr.init_from:  # the UNet only: the autoencoder is sr.autoencoder's
            load_init_weights(model, cfg.sr.init_from, prefix="unet.")
        return model
    raise ValueError(f"unknown task {cfg.task!r}")


# ----------------------------------------------------------------------------------------------------------
# logging


class RunLog:
    """log.csv (rewritten atomically at each row; columns grow as new keys appear) + optional TensorBoard."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        self.path = run_dir / "log.csv"
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = ["step", "loss", "lr"]
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                for c in reader.fieldnames or []:
                    if c not in self.columns:
                        self.columns.append(c)
                self.rows = [r for r in reader if r.get("step") and int(r["step"]) <= resume_step]
        self.tb: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the optional `tensorboard` package

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except Exception:  # noqa: BLE001 - optional: pip install tensorboard
            self.tb = None

    def add(self, row: dict[str, Any]) -> None:
        for k in row:
            if k not in self.columns and k != "seconds":
                self.columns.append(k)
        self.rows.append(row)
        cols = [c for c in self.columns if c != "seconds"] + ["seconds"]
        buf = _io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, restval="", extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        from ldsr.io import atomic_path

        with atomic_path(self.path) as tmp:
            tmp.write_text(buf.getvalue(), encoding="utf-8")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, int(row["step"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ----------------------------------------------------------------------------------------------------------
# validation


@torch.no_grad()
def validate(
    model: nn.Module, items: Any, *, device: torch.device, batch_size: int, crop_border: int, seed: int
) -> dict[str, float]:
    """Mean PSNR / SSIM (ldsr.evaluation.metrics, data_range 1, Y channel for RGB) of `model.predict` on `items`."""
    from ldsr.data.tensor import to_array
    from ldsr.evaluation.metrics import psnr, ssim

    was_training = model.training
    model.eval()
    scores: dict[str, list[float]] = {"val_psnr": [], "val_ssim": []}
    try:
        with isolated_rng(seed):
            for i in range(0, len(items), batch_size):
                chunk = [items[j] for j in range(i, min(i + batch_size, len(items)))]
                batch = {
                    "hr": torch.stack([c["hr"] for c in chunk]).to(device),
                    "lr": torch.stack([c["lr"] for c in chunk]).to(device),
                    "name": [c["name"] for c in chunk],
                }
                pred = model.predict(batch).float()
                for p, h in zip(pred, batch["hr"]):
                    a, b = to_array(p), to_array(h)
                    y = a.shape[2] == 3
                    border = crop_border if min(a.shape[:2]) - 2 * crop_border >= 11 else 0
                    scores["val_psnr"].append(psnr(a, b, data_range=1.0, crop_border=border, y_channel=y))
                    scores["val_ssim"].append(ssim(a, b, data_range=1.0, crop_border=border, y_channel=y))
    finally:
        model.train(was_training)
    return {k: float(np.mean(v)) for k, v in scores.items() if v}


# ----------------------------------------------------------------------------------------------------------
# the loop


LossMode = Literal["loss", "disc"]


class _LossModule(nn.Module):
    """What `accelerator.prepare` wraps (DDP under a multi-process launch): its forward dispatches to the
    model's loss methods, so the DDP forward (gradient all-reduce) is not bypassed. The model is kept as
    `self.model`; checkpoints save `self.model`'s state dict, whose names are unchanged."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any], mode: LossMode = "loss") -> tuple[torch.Tensor, dict[str, float]]:
        if mode == "loss":
            return self.model.training_loss(batch)  # type: ignore[operator]
        if mode == "disc":
            return self.model.discriminator_loss(batch)  # type: ignore[operator]
        raise ValueError(f"mode must be 'loss' or 'disc', got {mode!r}")


class _ShardStream(Sampler[int]):
    """Endless sample numbers of process `rank` of `world`, starting at global micro-batch `micro`: micro-batch
    m reads ``m * world * batch + rank * batch + i`` for i < batch, so the processes see disjoint shards and
    one process sees start, start + 1, ... exactly as `ldsr.data.datasets.SampleStream(micro * batch)`."""

    def __init__(self, micro: int, batch: int, rank: int = 0, world: int = 1) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world size {world}")
        self.micro, self.batch, self.rank, self.world = int(micro), int(batch), int(rank), int(world)

    def __iter__(self) -> Iterator[int]:
        m = self.micro
        while True:
            base = (m * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)
            m += 1


@contextlib.contextmanager
def _frozen(params: list[nn.Parameter]) -> Iterator[None]:
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _prune(ckpt_dir: Path, keep_last: int) -> None:
    if keep_last <= 0:
        return
    from ldsr.models.checkpoint import latest_checkpoint

    latest = latest_checkpoint(ckpt_dir)
    folders = sorted(p for p in ckpt_dir.glob("step_*") if p.is_dir())
    for p in folders[:-keep_last]:
        if p != latest:
            shutil.rmtree(p, ignore_errors=True)


class _StopRequest:
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

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


def train(
    cfg: RunConfig,
    *,
    resume: bool = False,
    model: nn.Module | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> Path:
    """Train `cfg.task`'s model (or the given `model`) and return the final checkpoint folder.

    `resume` continues from `run_dir/checkpoints/latest` exactly as if the run had not stopped. A fresh run
    refuses a run_dir that already holds checkpoints. `stop_after` ends this call after that many steps
    (with a checkpoint), as an interruption would; so does SIGTERM / SIGINT (after the step in progress).
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState
    from torch.utils.data import DataLoader

    from ldsr.config import to_dict
    from ldsr.data.datasets import build_train_dataset, build_val_dataset
    from ldsr.models import checkpoint as ck

    if model is None:
        cfg.resolve()
    tc = cfg.train
    seed = cfg.seed if tc.seed is None else tc.seed
    run_dir = Path(tc.run_dir)
    ckpt_dir = run_dir / ck.CHECKPOINTS_DIR
    resume_from: Path | None = None
    if resume:
        resume_from = ck.latest_checkpoint(run_dir)
        if resume_from is None:
            raise ValueError(f"--resume: no checkpoint in {ckpt_dir} (nothing to resume)")
    elif ck.latest_checkpoint(run_dir) is not None:
        raise ValueError(
            f"{run_dir} already holds checkpoints: pass --resume to continue, or set train.run_dir to a new folder"
        )

    seed_everything(seed)
    # DDP options, settled once the model is built (read by accelerator.prepare; ignored in one process)
    ddp_kwargs = DistributedDataParallelKwargs()
    # accelerate keeps one AcceleratorState per process, fixed by its first Accelerator: a later train() call in
    # the same process (a notebook, a sweep, scripts/precision_check.py) with another precision would be refused.
    # Each call starts its own; the process topology (PartialState: ranks, process group) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(
        mixed_precision=tc.precision,
        gradient_accumulation_steps=tc.grad_accum,
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[ddp_kwargs],
    )
    device = accelerator.device
    world, rank, is_main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process

    # --- data ---
    train_ds = build_train_dataset(cfg.data, channels=cfg.channels, scale=cfg.scale, seed=seed)
    val_items = build_val_dataset(cfg.data, channels=cfg.channels, scale=cfg.scale, seed=seed)

    # --- model and optimizers ---
    net = build_from_config(cfg) if model is None else model
    for name in ("training_loss", "predict"):
        if not callable(getattr(net, name, None)):
            raise ValueError(f"model {type(net).__name__} lacks {name}() of the Model protocol")
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
    schedule: Callable[[int], float] = lambda s: lr_factor(s, tc)  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, schedule) if opt_d is not None else None
    # Frozen weights (requires_grad False now, e.g. LatentSR's autoencoder) are not registered by DDP at all.
    # With a discriminator, each step leaves one side without gradients (D in the generator step, G in the
    # discriminator step; an autoencoder's D before disc_start): DDP must look for unused parameters (their
    # gradients are then left untouched, not zeroed). Without one every trainable parameter gets a gradient.
    ddp_kwargs.find_unused_parameters = opt_d is not None
    if opt_d is not None:
        wrapped, opt, opt_d = accelerator.prepare(_LossModule(net), opt, opt_d)
    else:
        wrapped, opt = accelerator.prepare(_LossModule(net), opt)
    net = accelerator.unwrap_model(wrapped).model
    ema = EMA(net, tc.ema_decay, tc.ema_start, tc.ema_warmup) if tc.ema_decay > 0 else None

    config_dict = to_dict(cfg)
    model_config = net.config_dict() if callable(getattr(net, "config_dict", None)) else None
    extra_meta: dict[str, Any] = {}
    if model is None and cfg.task == "sr" and getattr(cfg.sr, "space", None) == "latent" and cfg.sr.autoencoder:
        # The autoencoder's weights are inside the SR model's state; its config (as the run's `autoencoder`
        # section, which ldsr.pipeline rebuilds it from) makes the checkpoint self-contained.
        ae_run = ck.read_config(cfg.sr.autoencoder)
        extra_meta["autoencoder_config"] = ae_run
        config_dict["autoencoder"] = ae_run["autoencoder"]

    # --- resume ---
    step = 0
    seconds_before = 0.0
    state_rng: Mapping[str, Any] | None = None
    if resume_from is not None:
        raw, _ = ck.load_weights(resume_from, ema=False)
        net.load_state_dict(raw)
        if ema is not None:
            ema_sd, _ = ck.load_weights(resume_from, ema=True)
            ema.load_state_dict({k: v.to(device) for k, v in ema_sd.items()})
        st = ck.load_state(resume_from)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        if opt_d is not None and sched_d is not None:
            opt_d.load_state_dict(st["optimizer_d"])
            sched_d.load_state_dict(st["scheduler_d"])
        trainer = st["trainer"]
        step = int(trainer["step"])
        seconds_before = float(trainer.get("seconds", 0.0))
        if trainer.get("scaler") is not None and accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(trainer["scaler"])
        state_rng = trainer["rng"]

    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run_dir, step if resume_from is not None else None) if is_main else None
    crop_border = 0 if cfg.task == "autoencoder" else cfg.scale
    # autoencoders built here get their latent scale measured (on the EMA weights) after the last step
    measure_scale = model is None and cfg.task == "autoencoder" and hasattr(net, "scale_factor")

    def save(at: int, seconds: float, extra: Mapping[str, Any] | None = None) -> Path:
        """Checkpoint written by the main process; every process waits for it (all reach it at the same step)."""
        folder = ckpt_dir / ck.checkpoint_name(at)
        accelerator.wait_for_everyone()
        if is_main:
            _save(folder, at, seconds, extra)
        accelerator.wait_for_everyone()
        return folder

    def _save(folder: Path, at: int, seconds: float, extra: Mapping[str, Any] | None) -> None:
        trainer_state = {
            "step": at,
            "samples": at * tc.grad_accum * tc.batch_size * world,
            "num_processes": world,
            "seconds": seconds,
            "rng": rng_state(),
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
        }
        state: dict[str, Any] = {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "trainer": trainer_state,
        }
        if opt_d is not None and sched_d is not None:
            state["optimizer_d"] = opt_d.state_dict()
            state["scheduler_d"] = sched_d.state_dict()
        ck.save_checkpoint(
            folder,
            model=net,
            ema=ema.state_dict() if ema is not None else None,
            config=config_dict,
            model_config=model_config,
            step=at,
            extra_state=state,
            metadata={**extra_meta, **(extra or {})},
        )
        _prune(ckpt_dir, tc.keep_last)

    def run_validation(at: int) -> dict[str, float]:
        if val_items is None:
            return {}
        ctx = ema.applied(net) if ema is not None else contextlib.nullcontext(net)
        with ctx:
            return validate(net, val_items, device=device, batch_size=tc.batch_size, crop_border=crop_border, seed=seed)

    # --- data stream: sample numbers continue from the step (exact resume) ---
    loader = DataLoader(
        train_ds,
        batch_size=tc.batch_size,
        sampler=_ShardStream(step * tc.grad_accum, tc.batch_size, rank, world),
        num_workers=cfg.data.num_workers,
        generator=torch.Generator().manual_seed(seed),  # keeps the global torch RNG untouched
        worker_init_fn=_ignore_interrupt,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.data.num_workers > 0,
    )
    batches = iter(loader)
    if state_rng is not None:
        set_rng_state(state_rng)
    if rank > 0:
        # The RNG state (and checkpoint) is the main process's: the others draw their own noise (diffusion
        # timesteps, dropout ...), from streams fixed by the seed, the rank and the start step.
        seed_everything(seed + 1_000_003 * rank + 7919 * step)

    start_step = step
    t0 = time.perf_counter()
    end = tc.steps if stop_after is None else min(tc.steps, start_step + stop_after)
    bar = None
    if progress and is_main:
        from tqdm import tqdm

        bar = tqdm(total=tc.steps, initial=step, desc=f"train {cfg.task}", dynamic_ncols=True, file=sys.stderr)
    sums: dict[str, float] = {}
    count = 0
    last_saved = step if resume_from is not None else -1
    net.train()
    stop = _StopRequest()
    stopped_by: str | None = None
    try:
        stop.__enter__()
        while step < end:
            step_logs: dict[str, float] = {}
            lost_batch = False
            for _ in range(tc.grad_accum):
                try:
                    raw_batch = next(batches)
                except Exception:
                    # A signal sent to the whole process group (SLURM's SIGTERM) can end the loader workers first;
                    # then this step is dropped and the run stops at the last completed one.
                    if stop.signum is None or world > 1:
                        raise
                    lost_batch = True
                    break
                batch = _to_device(raw_batch, device)
                with accelerator.accumulate(wrapped):
                    with _frozen(disc_params), accelerator.autocast():
                        loss, logs = wrapped(batch)
                    if not torch.isfinite(loss.detach()):
                        raise FloatingPointError(
                            f"loss is {loss.item()} at step {step + 1}; lower train.lr or check the data"
                        )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and tc.grad_clip > 0:
                        if opt_d is None:
                            accelerator.clip_grad_norm_(gen_params, tc.grad_clip)
                        else:
                            accelerator.unscale_gradients(opt)
                            torch.nn.utils.clip_grad_norm_(gen_params, tc.grad_clip)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    for k, v in logs.items():
                        if k != "loss":
                            step_logs[k] = step_logs.get(k, 0.0) + float(v) / tc.grad_accum
                    step_logs["loss"] = step_logs.get("loss", 0.0) + float(loss.detach()) / tc.grad_accum
                    if opt_d is not None:
                        with _frozen(gen_params), accelerator.autocast():
                            d_loss, d_logs = wrapped(batch, mode="disc")
                        accelerator.backward(d_loss)
                        if accelerator.sync_gradients and tc.grad_clip > 0:
                            accelerator.unscale_gradients(opt_d)
                            torch.nn.utils.clip_grad_norm_(disc_params, tc.grad_clip)
                        opt_d.step()
                        opt_d.zero_grad(set_to_none=True)
                        for k, v in d_logs.items():
                            step_logs[k] = step_logs.get(k, 0.0) + float(v) / tc.grad_accum
            if lost_batch:
                opt.zero_grad(set_to_none=True)
                if opt_d is not None:
                    opt_d.zero_grad(set_to_none=True)
                stopped_by = signal.Signals(stop.signum or signal.SIGTERM).name
                if not measure_scale and last_saved != step:  # an autoencoder is saved below, with its scale
                    save(step, seconds_before + time.perf_counter() - t0)
                    last_saved = step
                print(f"{stopped_by}: stopping at step {step} of {tc.steps}; continue with --resume", file=sys.stderr)
                break
            lr_now = opt.param_groups[0]["lr"]
            step += 1
            sched.step()
            if sched_d is not None:
                sched_d.step()
            if ema is not None:
                ema.update(net, step)
            for k, v in step_logs.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            seconds = seconds_before + time.perf_counter() - t0
            # A signal or the time budget ends the run here, like its last step: logged, validated, checkpointed.
            out_of_time = tc.max_minutes > 0 and time.perf_counter() - t0 > 60.0 * tc.max_minutes
            if _any_process(stop.signum is not None or out_of_time, accelerator):
                stopped_by = (
                    signal.Signals(stop.signum).name
                    if stop.signum is not None
                    else f"train.max_minutes={tc.max_minutes:g}"
                )
            # (validation at a budget stop, not at a signal: a preempted job has seconds to exit)
            final = step == tc.steps or stopped_by is not None
            do_val = (
                (tc.val_every > 0 and step % tc.val_every == 0)
                or step == tc.steps
                or (stopped_by is not None and stop.signum is None)
            )
            do_log = (tc.log_every > 0 and step % tc.log_every == 0) or do_val or final
            if do_log:
                if log is not None:
                    row: dict[str, Any] = {"step": step, "lr": lr_now}
                    row.update({k: v / max(count, 1) for k, v in sums.items()})
                    if do_val:
                        row.update(run_validation(step))
                    row["seconds"] = round(seconds, 3)
                    log.add(row)
                    if bar is not None:
                        bar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss", "lr", "val_psnr") if k in row})
                sums, count = {}, 0
            if bar is not None:
                bar.update(1)
            if (tc.ckpt_every > 0 and step % tc.ckpt_every == 0) or step == end or stopped_by is not None:
                if not (measure_scale and (step == tc.steps or stopped_by is not None)):  # saved below, with the scale
                    save(step, seconds)
                    last_saved = step
            if stopped_by is not None:
                if is_main:
                    print(
                        f"{stopped_by}: stopping at step {step} of {tc.steps}; continue with --resume", file=sys.stderr
                    )
                break
    finally:
        stop.__exit__()
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()

    if world > 1:
        # DDP broadcasts the buffers (BatchNorm statistics, step counters) from the main process before each
        # forward, so after the last one they differ per process: end with the main process's (the saved ones).
        with torch.no_grad():
            for b in net.buffers():
                torch.distributed.broadcast(b, src=0)
    seconds = seconds_before + time.perf_counter() - t0
    if measure_scale and (step == tc.steps or stopped_by is not None):
        # The latent scale (1 / std of the training latents) of the weights that will be used: the EMA's.
        # Every process measures it (same weights, same samples), so they all end with the same model.
        scale = _measure_latent_scale(net, ema, train_ds, tc.batch_size, device)
        return save(step, seconds, {"scale_factor": scale})
    if last_saved != step:
        return save(step, seconds)
    return ckpt_dir / ck.checkpoint_name(step)


def _ignore_interrupt(worker_id: int) -> None:
    """Loader workers ignore SIGINT: Ctrl-C reaches the whole foreground process group, and the main process
    needs its workers for the step it finishes before checkpointing (they exit with it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _any_process(flag: bool, accelerator: Any) -> bool:
    """True on every process when `flag` is true on any (one scalar all-reduce; free in one process)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)


def _measure_latent_scale(net: nn.Module, ema: EMA | None, ds: Any, batch_size: int, device: torch.device) -> float:
    from ldsr.models.autoencoder import measure_scale_factor

    n = min(len(ds), 64)
    batches = [
        torch.stack([ds[k]["hr"] for k in range(i, min(i + batch_size, n))]).to(device) for i in range(0, n, batch_size)
    ]
    with isolated_rng(0):
        ctx = ema.applied(net) if ema is not None else contextlib.nullcontext(net)
        with ctx:
            scale = float(measure_scale_factor(net, batches))  # type: ignore[arg-type]
    net.scale_factor.fill_(scale)  # type: ignore[operator, union-attr]
    if ema is not None and "scale_factor" in ema.shadow:
        ema.shadow["scale_factor"].fill_(scale)
    return scale
