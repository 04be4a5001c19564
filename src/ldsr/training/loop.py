"""The one training loop (accelerate) for every model that follows the Model protocol of ARCHITECTURE.md.

AdamW with linear warm-up and a constant or cosine schedule (`ldsr.training.optim`), EMA weights
(`ldsr.training.ema`), gradient clipping, gradient accumulation, mixed precision, an optional discriminator with
its own optimizer (generator and discriminator steps alternate on each batch), periodic validation (PSNR / SSIM
of the EMA weights via `model.predict`, `ldsr.training.validate`), a CSV log (+ TensorBoard when installed,
`ldsr.training.runlog`) and checkpoints (ldsr.models.checkpoint) that resume exactly: the data order is a
function of the step (ldsr.data.datasets), and the optimizer / scheduler / EMA / RNG (`ldsr.training.rng`)
states are stored as safetensors + JSON (no pickle). SIGTERM / SIGINT and `train.max_minutes` end a run after
its step with a checkpoint (`ldsr.training.stop`).

`train()` reads as its parts: `_setup` (accelerator, data, model, optimizers), `_resume`, `_train_step` (one
optimizer step over `grad_accum` micro-batches), `_after_step` (schedules, EMA, stop check, log, validation),
`_checkpoint_step`, `_save` and `_finish`.

Multi-process (`accelerate launch --num_processes N`, DDP): the loss methods are reached through the
forward of `_LossModule` (``mode="loss"`` -> `training_loss`, ``mode="disc"`` -> `discriminator_loss`), the
module that `accelerator.prepare` wraps, so gradients are all-reduced; the models need no `forward` of their
own for it, and checkpoints hold the inner model's parameter names. Process `r` of `W` reads the samples
``m * W * batch + r * batch + i`` of micro-batch `m` (one process: unchanged). Logging, validation and
checkpoints happen on the main process; the log shows the main process's share of each batch.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torch.utils.data import Sampler

from ldsr.models import checkpoint as ck
from ldsr.models.params import frozen
from ldsr.training.checkpoints import prune_checkpoints, resume_point
from ldsr.training.config import TrainConfig
from ldsr.training.ema import EMA, ema_applied
from ldsr.training.optim import Optimizers, build_optimizers
from ldsr.training.rng import isolated_rng, rng_state, seed_everything, set_rng_state
from ldsr.training.runlog import RunLog
from ldsr.training.stop import StopRequest, any_process, close_loader, ignore_interrupt
from ldsr.training.validate import validate

if TYPE_CHECKING:
    from ldsr.config import RunConfig

__all__ = ["TrainConfig", "train"]

# ----------------------------------------------------------------------------------------------------------
# what accelerate wraps, and the data stream

LossMode = Literal["loss", "disc"]


class _LossModule(nn.Module):
    """What `accelerator.prepare` wraps (DDP under a multi-process launch): its forward dispatches to the
    model's loss methods, so the DDP forward (gradient all-reduce) is not bypassed. The model is kept as
    `self.model`; checkpoints save `self.model`'s state dict, whose names are unchanged."""

    model: Any  # a Model-protocol module: its loss methods are not nn.Module's

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any], mode: LossMode = "loss") -> tuple[torch.Tensor, dict[str, float]]:
        if mode == "loss":
            return self.model.training_loss(batch)
        if mode == "disc":
            return self.model.discriminator_loss(batch)
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


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


# ----------------------------------------------------------------------------------------------------------
# the state of a call


@dataclass
class _Run:
    """What `_setup` fixes for the whole call."""

    cfg: RunConfig
    seed: int
    accelerator: Any  # accelerate.Accelerator (imported lazily)
    train_ds: Any
    val_items: Any  # None: no validation set
    net: nn.Module  # the model itself (its state dict is what checkpoints hold)
    wrapped: nn.Module  # what accelerate prepared: _LossModule(net), inside DDP in a multi-process run
    opts: Optimizers
    ema: EMA | None
    config_dict: dict[str, Any]  # the run config stored in every checkpoint
    model_config: Any
    extra_meta: dict[str, Any]
    measure_scale: bool  # an autoencoder built here gets its latent scale measured after its last step

    @property
    def tc(self) -> TrainConfig:
        return self.cfg.train

    @property
    def run_dir(self) -> Path:
        return Path(self.tc.run_dir)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / ck.CHECKPOINTS_DIR

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def world(self) -> int:
        return int(self.accelerator.num_processes)

    @property
    def rank(self) -> int:
        return int(self.accelerator.process_index)

    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def crop_border(self) -> int:
        """Pixels left out at each edge in validation: the scale for SR, none for an autoencoder."""
        return 0 if self.cfg.task == "autoencoder" else self.cfg.scale


@dataclass
class _Progress:
    """Where the call stands: the optimizer step, the clock, the running log sums and why it stops."""

    step: int = 0
    seconds_before: float = 0.0  # training seconds of the calls before a resume
    rng: Mapping[str, Any] | None = None  # the RNG state to restore before the first step (resume)
    last_saved: int = -1
    t0: float = 0.0  # perf_counter at the first step of this call
    sums: dict[str, float] = field(default_factory=dict)  # step logs summed since the last log row
    count: int = 0
    stopped_by: str | None = None  # the signal's name or "train.max_minutes=..."

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.t0


# ----------------------------------------------------------------------------------------------------------
# set-up and resume


def _accelerator(tc: TrainConfig) -> tuple[Any, Any]:
    """A fresh Accelerator for this call and its DDP options (settled once the model is built, read by
    `accelerator.prepare`; ignored in one process)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    ddp_kwargs = DistributedDataParallelKwargs()
    # accelerate keeps one AcceleratorState per process, fixed by its first Accelerator: a later train() call in
    # the same process (a notebook, a sweep, scripts/precision_check.py) with another precision would be refused.
    # Each call starts its own; the process topology (PartialState: ranks, process group) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(
        mixed_precision=tc.precision,
        gradient_accumulation_steps=tc.grad_accum,
        cpu=_use_cpu(tc),
        kwargs_handlers=[ddp_kwargs],
    )
    return accelerator, ddp_kwargs


def _use_cpu(tc: TrainConfig) -> bool:
    """train.device: cpu forces the CPU even where CUDA exists, auto takes CUDA when torch sees it; cuda without
    it is a ValueError (one line, raised before any data is loaded)."""
    available = torch.cuda.is_available()
    if tc.device == "cuda" and not available:
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
        raise ValueError(f"train.device cuda: {why}; use --device cpu (or auto)")
    return tc.device == "cpu" or not available


def _model(cfg: RunConfig, model: nn.Module | None) -> nn.Module:
    """`model`, or the model of `cfg.task`; it must have the Model protocol's methods."""
    from ldsr.models.build import build_model

    net = build_model(cfg) if model is None else model
    for name in ("training_loss", "predict"):
        if not callable(getattr(net, name, None)):
            raise ValueError(f"model {type(net).__name__} lacks {name}() of the Model protocol")
    return net


def _checkpoint_configs(cfg: RunConfig, net: nn.Module, built: bool) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """(run config, model config, extra metadata) stored in every checkpoint of the run."""
    from ldsr.config import to_dict

    config_dict = to_dict(cfg)
    config_of = getattr(net, "config_dict", None)
    model_config = config_of() if callable(config_of) else None
    extra_meta: dict[str, Any] = {}
    ae_path = None
    if cfg.task == "sr" and getattr(cfg.sr, "space", None) == "latent":
        ae_path = cfg.sr.autoencoder
    elif cfg.task == "generate" and cfg.generate.model == "latent":  # an AE, latent SR or generation checkpoint
        ae_path = cfg.generate.autoencoder
    elif cfg.task == "colorize" and cfg.colorize.method == "diffusion" and cfg.colorize.space == "latent":
        ae_path = cfg.colorize.autoencoder
    if built and ae_path:
        # The autoencoder's weights are inside the SR / generation model's state; its config (as the run's
        # `autoencoder` section, which ldsr.pipeline rebuilds it from) makes the checkpoint self-contained.
        ae_run = ck.read_config(ae_path)
        extra_meta["autoencoder_config"] = ae_run
        config_dict["autoencoder"] = ae_run["autoencoder"]
    return config_dict, model_config, extra_meta


def _setup(cfg: RunConfig, model: nn.Module | None) -> _Run:
    """Seed, start accelerate, build the data and the model (or take `model`), its optimizers and EMA."""
    from ldsr.data.datasets import build_train_dataset, build_val_dataset

    tc = cfg.train
    seed = cfg.seed if tc.seed is None else tc.seed
    seed_everything(seed)
    accelerator, ddp_kwargs = _accelerator(tc)
    train_ds: Any
    val_items: Any
    if cfg.task == "colorize":  # colour crops as "hr", their grey as "lr" (ldsr.data.color)
        from ldsr.data.color import colorization_datasets

        train_ds, val_items = colorization_datasets(cfg.data, seed=seed)
    else:
        train_ds = build_train_dataset(cfg.data, channels=cfg.channels, scale=cfg.scale, seed=seed)
        val_items = build_val_dataset(cfg.data, channels=cfg.channels, scale=cfg.scale, seed=seed)
    net = _model(cfg, model)
    opts = build_optimizers(net, tc)
    # Frozen weights (requires_grad False now, e.g. LatentSR's autoencoder) are not registered by DDP at all.
    # With a discriminator, each step leaves one side without gradients (D in the generator step, G in the
    # discriminator step; an autoencoder's D before disc_start): DDP must look for unused parameters (their
    # gradients are then left untouched, not zeroed). Without one every trainable parameter gets a gradient.
    ddp_kwargs.find_unused_parameters = opts.opt_d is not None
    if opts.opt_d is not None:
        wrapped, opts.opt, opts.opt_d = accelerator.prepare(_LossModule(net), opts.opt, opts.opt_d)
    else:
        wrapped, opts.opt = accelerator.prepare(_LossModule(net), opts.opt)
    net = accelerator.unwrap_model(wrapped).model
    ema = EMA(net, tc.ema_decay, tc.ema_start, tc.ema_warmup) if tc.ema_decay > 0 else None
    config_dict, model_config, extra_meta = _checkpoint_configs(cfg, net, built=model is None)
    measure_scale = model is None and cfg.task == "autoencoder" and hasattr(net, "scale_factor")
    return _Run(cfg, seed, accelerator, train_ds, val_items, net, wrapped, opts, ema,
                config_dict, model_config, extra_meta, measure_scale)  # fmt: skip


def _resume(run: _Run, resume_from: Path | None) -> _Progress:
    """Load the raw and EMA weights, optimizer, schedule and loss-scaler states of `resume_from`; the step,
    the seconds trained and the RNG state it continues from. A fresh run starts at step 0."""
    if resume_from is None:
        return _Progress()
    raw, _ = ck.load_weights(resume_from, ema=False)
    run.net.load_state_dict(raw)
    if run.ema is not None:
        ema_sd, _ = ck.load_weights(resume_from, ema=True)
        run.ema.load_state_dict({k: v.to(run.device) for k, v in ema_sd.items()})
    st = ck.load_state(resume_from)
    run.opts.load_state_dict(st)
    trainer = st["trainer"]
    if trainer.get("scaler") is not None and run.accelerator.scaler is not None:
        run.accelerator.scaler.load_state_dict(trainer["scaler"])
    step = int(trainer["step"])
    return _Progress(step, float(trainer.get("seconds", 0.0)), trainer["rng"], last_saved=step)


def _batches(run: _Run, prog: _Progress) -> Iterator[Mapping[str, Any]]:
    """This process's training batches from `prog.step` on (the sample numbers continue from the step, for an
    exact resume), then the RNG streams of the first step."""
    from torch.utils.data import DataLoader

    tc, workers = run.tc, run.cfg.data.num_workers
    loader = DataLoader(
        run.train_ds,
        batch_size=tc.batch_size,
        sampler=_ShardStream(prog.step * tc.grad_accum, tc.batch_size, run.rank, run.world),
        num_workers=workers,
        generator=torch.Generator().manual_seed(run.seed),  # keeps the global torch RNG untouched
        worker_init_fn=ignore_interrupt,
        pin_memory=run.device.type == "cuda",
        persistent_workers=workers > 0,
    )
    batches = iter(loader)
    if prog.rng is not None:
        set_rng_state(prog.rng)
    if run.rank > 0:
        # The RNG state (and checkpoint) is the main process's: the others draw their own noise (diffusion
        # timesteps, dropout ...), from streams fixed by the seed, the rank and the start step.
        seed_everything(run.seed + 1_000_003 * run.rank + 7919 * prog.step)
    return batches


# ----------------------------------------------------------------------------------------------------------
# one step


def _micro_step(run: _Run, batch: dict[str, Any], logs: dict[str, float], step: int) -> None:
    """Forward, backward and optimizer step of one micro-batch (accelerate steps the optimizer only at the
    last micro-batch of a step); adds its share of the step's logs to `logs`."""
    acc, tc, o = run.accelerator, run.tc, run.opts
    with acc.accumulate(run.wrapped):
        with frozen(o.disc_params), acc.autocast():
            loss, g_logs = run.wrapped(batch)
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"loss is {loss.item()} at step {step + 1}; lower train.lr or check the data")
        acc.backward(loss)
        if acc.sync_gradients and tc.grad_clip > 0:
            if o.opt_d is None:
                acc.clip_grad_norm_(o.gen_params, tc.grad_clip)
            else:
                acc.unscale_gradients(o.opt)
                torch.nn.utils.clip_grad_norm_(o.gen_params, tc.grad_clip)
        o.opt.step()
        o.opt.zero_grad(set_to_none=True)
        for k, v in g_logs.items():
            if k != "loss":
                logs[k] = logs.get(k, 0.0) + float(v) / tc.grad_accum
        logs["loss"] = logs.get("loss", 0.0) + float(loss.detach()) / tc.grad_accum
        if o.opt_d is not None:
            _disc_step(run, batch, logs)


def _disc_step(run: _Run, batch: dict[str, Any], logs: dict[str, float]) -> None:
    """The discriminator's step on the same micro-batch (generator weights frozen)."""
    acc, tc, o = run.accelerator, run.tc, run.opts
    with frozen(o.gen_params), acc.autocast():
        d_loss, d_logs = run.wrapped(batch, mode="disc")
    acc.backward(d_loss)
    if acc.sync_gradients and tc.grad_clip > 0:
        acc.unscale_gradients(o.opt_d)
        torch.nn.utils.clip_grad_norm_(o.disc_params, tc.grad_clip)
    o.opt_d.step()
    o.opt_d.zero_grad(set_to_none=True)
    for k, v in d_logs.items():
        logs[k] = logs.get(k, 0.0) + float(v) / tc.grad_accum


def _train_step(
    run: _Run, batches: Iterator[Mapping[str, Any]], stop: StopRequest, step: int
) -> dict[str, float] | None:
    """One optimizer step over `grad_accum` micro-batches; its logs (means over the micro-batches), or None
    when the loader failed after a stop signal (the step is dropped, its gradients cleared)."""
    logs: dict[str, float] = {}
    for _ in range(run.tc.grad_accum):
        try:
            raw_batch = next(batches)
        except Exception:
            # The workers ignore SIGINT / SIGTERM (`ignore_interrupt`), but one can still be lost to the stop
            # signal (sent to the whole process group before its worker_init_fn ran) or killed outright; then
            # this step is dropped and the run stops at the last completed one.
            if stop.signum is None or run.world > 1:
                raise
            run.opts.zero_grad()
            return None
        _micro_step(run, _device_lr(run, _to_device(raw_batch, run.device)), logs, step)
    return logs


def _device_lr(run: _Run, batch: dict[str, Any]) -> dict[str, Any]:
    """`data.device_degrade`: the HR-folder dataset yields HR crops and per-sample seeds; the LR batch is made
    here, on the training device (`ldsr.data.degrade_torch.degrade_batch`, the dataset's degradation)."""
    ds = run.train_ds
    if "lr" in batch or "seed" not in batch or not getattr(ds, "device_degrade", False):
        return batch
    from ldsr.data.degrade_torch import degrade_batch, generator_for

    gen = generator_for(batch["seed"])
    batch["lr"] = degrade_batch(batch["hr"], ds.degradation, gen, scale=ds.scale, bit_depth=batch["bits"])
    return batch


def _advance(run: _Run, prog: _Progress, logs: Mapping[str, float]) -> float:
    """Count the step: LR schedules, EMA, running log sums. Returns the LR the step was taken with."""
    lr_now: float = run.opts.opt.param_groups[0]["lr"]
    prog.step += 1
    run.opts.step_schedules()
    if run.ema is not None:
        run.ema.update(run.net, prog.step)
    for k, v in logs.items():
        prog.sums[k] = prog.sums.get(k, 0.0) + v
    prog.count += 1
    return lr_now


def _validate(run: _Run) -> dict[str, float]:
    """Validation scores of the EMA weights (the raw ones without an EMA); {} without a validation set."""
    if run.val_items is None:
        return {}
    with ema_applied(run.ema, run.net):
        return validate(run.net, run.val_items, device=run.device, batch_size=run.tc.batch_size,
                        crop_border=run.crop_border, seed=run.seed)  # fmt: skip


def _log_step(
    run: _Run, prog: _Progress, log: RunLog | None, bar: Any, lr: float, seconds: float, signal_stop: bool
) -> None:
    """The log row of the step that just ended (with validation when due), every `log_every` steps and at the end."""
    tc, step = run.tc, prog.step
    final = step == tc.steps or prog.stopped_by is not None
    # validation at a budget stop, not at a signal: a preempted job has seconds to exit
    do_val = (
        (tc.val_every > 0 and step % tc.val_every == 0)
        or step == tc.steps
        or (prog.stopped_by is not None and not signal_stop)
    )
    if not ((tc.log_every > 0 and step % tc.log_every == 0) or do_val or final):
        return
    if log is not None:
        row: dict[str, Any] = {"step": step, "lr": lr}
        row.update({k: v / max(prog.count, 1) for k, v in prog.sums.items()})
        if do_val:
            row.update(_validate(run))
        row["seconds"] = round(seconds, 3)
        log.add(row)
        if bar is not None:
            bar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss", "lr", "val_psnr") if k in row})
    prog.sums, prog.count = {}, 0


def _after_step(
    run: _Run, prog: _Progress, stop: StopRequest, logs: Mapping[str, float], log: RunLog | None, bar: Any
) -> float:
    """Everything after an optimizer step but its checkpoint: schedules and EMA, the stop check (sets
    `prog.stopped_by`), the log row. Returns the training seconds at the end of the step (for its checkpoint)."""
    tc = run.tc
    lr = _advance(run, prog, logs)
    seconds = prog.seconds()
    # A signal or the time budget ends the run here, like its last step: logged, validated, checkpointed.
    out_of_time = tc.max_minutes > 0 and time.perf_counter() - prog.t0 > 60.0 * tc.max_minutes
    if any_process(stop.signum is not None or out_of_time, run.accelerator):
        prog.stopped_by = (
            signal.Signals(stop.signum).name if stop.signum is not None else f"train.max_minutes={tc.max_minutes:g}"
        )
    _log_step(run, prog, log, bar, lr, seconds, signal_stop=stop.signum is not None)
    if bar is not None:
        bar.update(1)
    return seconds


def _checkpoint_step(run: _Run, prog: _Progress, seconds: float, end: int) -> None:
    """The checkpoint of the step that just ended, when due: every `ckpt_every` steps, at `end` and at a stop."""
    tc = run.tc
    step, stopping = prog.step, prog.stopped_by is not None
    if (tc.ckpt_every > 0 and step % tc.ckpt_every == 0) or step == end or stopping:
        if not (run.measure_scale and (step == tc.steps or stopping)):  # saved by _finish, with the scale
            _save(run, step, seconds)
            prog.last_saved = step
    if stopping and run.is_main:
        print(f"{prog.stopped_by}: stopping at step {step} of {tc.steps}; continue with --resume", file=sys.stderr)


def _stop_without_step(run: _Run, prog: _Progress, stop: StopRequest) -> None:
    """The loader failed after a stop signal: the run stops at its last completed step, checkpointed."""
    prog.stopped_by = signal.Signals(stop.signum or signal.SIGTERM).name
    if not run.measure_scale and prog.last_saved != prog.step:  # an autoencoder is saved by _finish, with its scale
        _save(run, prog.step, prog.seconds())
        prog.last_saved = prog.step
    print(f"{prog.stopped_by}: stopping at step {prog.step} of {run.tc.steps}; continue with --resume", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------
# checkpoints and the end of a call


def _save(run: _Run, at: int, seconds: float, extra: Mapping[str, Any] | None = None) -> Path:
    """Checkpoint written by the main process; every process waits for it (all reach it at the same step)."""
    folder = run.ckpt_dir / ck.checkpoint_name(at)
    run.accelerator.wait_for_everyone()
    if run.is_main:
        _write_checkpoint(run, folder, at, seconds, extra)
    run.accelerator.wait_for_everyone()
    return folder


def _write_checkpoint(run: _Run, folder: Path, at: int, seconds: float, extra: Mapping[str, Any] | None) -> None:
    """Weights, EMA, config and the training state (`state/`) of step `at`; then old checkpoints are pruned."""
    tc, scaler = run.tc, run.accelerator.scaler
    trainer_state = {
        "step": at,
        "samples": at * tc.grad_accum * tc.batch_size * run.world,
        "num_processes": run.world,
        "seconds": seconds,
        "rng": rng_state(),
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    ck.save_checkpoint(
        folder,
        model=run.net,
        ema=run.ema.state_dict() if run.ema is not None else None,
        config=run.config_dict,
        model_config=run.model_config,
        step=at,
        extra_state={**run.opts.state_dict(), "trainer": trainer_state},
        metadata={**run.extra_meta, **(extra or {})},
    )
    prune_checkpoints(run.ckpt_dir, tc.keep_last)


def _finish(run: _Run, prog: _Progress) -> Path:
    """Align the processes' buffers, measure an autoencoder's latent scale, write the last checkpoint."""
    if run.world > 1:
        # DDP broadcasts the buffers (BatchNorm statistics, step counters) from the main process before each
        # forward, so after the last one they differ per process: end with the main process's (the saved ones).
        with torch.no_grad():
            for b in run.net.buffers():
                torch.distributed.broadcast(b, src=0)
    seconds = prog.seconds()
    if run.measure_scale and (prog.step == run.tc.steps or prog.stopped_by is not None):
        # The latent scale (1 / std of the training latents) of the weights that will be used: the EMA's.
        # Every process measures it (same weights, same samples), so they all end with the same model.
        scale = _measure_latent_scale(run.net, run.ema, run.train_ds, run.tc.batch_size, run.device)
        return _save(run, prog.step, seconds, {"scale_factor": scale})
    if prog.last_saved != prog.step:
        return _save(run, prog.step, seconds)
    return run.ckpt_dir / ck.checkpoint_name(prog.step)


def _measure_latent_scale(net: nn.Module, ema: EMA | None, ds: Any, batch_size: int, device: torch.device) -> float:
    """Set the autoencoder's (and its EMA's) `scale_factor` to 1 / std of its latents of <= 64 training samples."""
    from ldsr.models.autoencoder import Autoencoder, measure_scale_factor

    if not isinstance(net, Autoencoder):
        raise TypeError(f"only an Autoencoder has a latent scale, got {type(net).__name__}")
    n = min(len(ds), 64)
    batches = [
        torch.stack([ds[k]["hr"] for k in range(i, min(i + batch_size, n))]).to(device) for i in range(0, n, batch_size)
    ]  # each (B, C, H, W)
    with isolated_rng(0), ema_applied(ema, net):
        scale = float(measure_scale_factor(net, batches))
    net.scale_factor.fill_(scale)
    if ema is not None and "scale_factor" in ema.shadow:
        ema.shadow["scale_factor"].fill_(scale)
    return scale


# ----------------------------------------------------------------------------------------------------------
# the loop


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
    if model is None:
        cfg.resolve()
    resume_from = resume_point(Path(cfg.train.run_dir), resume)
    run = _setup(cfg, model)
    prog = _resume(run, resume_from)
    if run.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run.run_dir, prog.step if resume_from is not None else None) if run.is_main else None
    bar = None
    if progress and run.is_main:
        from tqdm import tqdm

        bar = tqdm(total=run.tc.steps, initial=prog.step, desc=f"train {cfg.task}", dynamic_ncols=True, file=sys.stderr)
    batches = _batches(run, prog)
    prog.t0 = time.perf_counter()
    end = run.tc.steps if stop_after is None else min(run.tc.steps, prog.step + stop_after)
    run.net.train()
    try:
        with StopRequest() as stop:  # entered after the loader's iterator exists (see StopRequest)
            while prog.step < end:
                logs = _train_step(run, batches, stop, prog.step)
                if logs is None:
                    close_loader(batches)
                    _stop_without_step(run, prog, stop)
                    break
                seconds = _after_step(run, prog, stop, logs, log, bar)
                if prog.stopped_by is not None:
                    # The loader is not needed any more: its workers leave before the checkpoint is written,
                    # and torch stops watching them (its SIGCHLD check cannot fire during the write).
                    close_loader(batches)
                _checkpoint_step(run, prog, seconds, end)
                if prog.stopped_by is not None:
                    break
    finally:
        close_loader(batches)  # every way out (its workers ignore SIGTERM: none may outlive the call)
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
    return _finish(run, prog)
