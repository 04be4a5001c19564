"""`ldsr upscale` and `ldsr models`: super-resolve LR images with a trained or shipped model.

The job is planned first (`ldsr.cli.upscale_plan`: every file read and checked, every output named, models
chosen per file), the models are loaded once each, and only then does any network run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import typer

from ldsr.cli.common import (
    Device,
    JobProgress,
    Precision,
    Sampler,
    device_option,
    draws_option,
    dry_run_option,
    fail,
    input_option,
    output_option,
    precision_option,
    quiet_option,
    sampler_option,
    steps_option,
)

if TYPE_CHECKING:
    from ldsr.cli.upscale_plan import Chooser, Item, Plan, Request
    from ldsr.io import ImageMeta
    from ldsr.io.batch import BatchResult
    from ldsr.io.provenance import Content
    from ldsr.pipeline import Upscaler, UpscaleResult

BICUBIC_SCALE = 4  # `-m bicubic` without --scale


class ReduceChoice(StrEnum):
    mean = "mean"
    median = "median"
    none = "none"


class Mode(StrEnum):
    faithful = "faithful"
    sharp = "sharp"


class ConsistencyChoice(StrEnum):
    auto = "auto"
    on = "on"
    off = "off"


CONSISTENCY_OPTION = typer.Option(
    ConsistencyChoice.auto,
    "--consistency",
    help="Back-projection onto the LR (Irani & Peleg): on makes the output's low frequencies those of the input, "
    "right for clean or k-space acquisitions (on validation +0.9 to +1.9 dB for mri-x4), wrong for noisy or "
    "JPEG-compressed LR (it puts the noise back); auto: on only for models never trained on clean LR.",
)


class Channels(StrEnum):
    grey = "grey"
    rgb = "rgb"


def _frames(value: str) -> str:
    v = value.strip().lower()
    if v in ("all", "middle") or v.lstrip("-").isdigit():
        return v
    raise typer.BadParameter(f"{value!r} is not 'all', 'middle' or a frame number")


@dataclass(frozen=True)
class RunOptions:
    """How each image is upscaled and written (everything but the files)."""

    sampler: str | None
    steps: int | None
    eta: float | None
    seed: int
    draws: int | None
    reduce: str
    std_map: bool
    batch: int
    decode_tile: int | None
    precision: str
    device: str
    mode: str | None = None
    tile: int | None = None  # LR pixels of the denoiser tiles (None: automatic, 0: off)
    tile_overlap: int | None = None
    consistency: str = "auto"  # "auto" | "on" | "off": Upscaler.upscale_batch's consistency
    attention_radius: int | None = None  # None: the model's sr.attention_radius


def _load_models(names: set[str], scale: int | None, device: str, cache: dict[str, Upscaler]) -> dict[str, Upscaler]:
    """One Upscaler per model name (a folder job loads each model once); ValueError names a bad model."""
    from ldsr.pipeline import load

    for name in sorted(names - set(cache)):
        cache[name] = load(name, scale=BICUBIC_SCALE if name == "bicubic" and scale is None else scale, device=device)
    return cache


def _chooser(model: str | None, scale: int | None, device: str, cache: dict[str, Upscaler]) -> Chooser:
    """-m given: that model for every file (loaded now, so a bad model stops the job before reading files);
    none: per file, from what the image shows (ldsr.pipeline.select)."""
    if model is not None:
        up = _load_models({model}, scale, device, cache)[model]
        return lambda image, fmt: (model, up.channels)
    from ldsr.pipeline import shipped_models
    from ldsr.pipeline.select import choose_model, model_infos

    infos = model_infos(shipped_models())

    def choose(image: np.ndarray, fmt: str) -> tuple[str, int | None]:
        name, _ = choose_model(image, fmt, infos, scale)
        return name, infos[name].channels

    return choose


def _plan(
    req: Request,
    model: str | None,
    scale: int | None,
    device: str,
    quiet: bool,
    draws: int | None = None,
    mode: str | None = None,
) -> tuple[Plan, dict[str, Upscaler]]:
    """(plan, loaded models): files read and checked (a 'check' bar on a terminal), models loaded, every output
    named and checked."""
    from ldsr.cli.upscale_plan import JobError, add_extras, check_output_format, check_outputs, list_inputs, plan_job

    cache: dict[str, Upscaler] = {}
    progress = JobProgress(0, desc="check", quiet=True)
    try:
        files, single = list_inputs(req)
        check_output_format(req, single)  # the cheap checks before a model loads
        progress = JobProgress(len(files), desc="check", quiet=quiet, log=False)
        choose = _chooser(model, scale, device, cache)
        plan = plan_job(
            req, choose, lambda path, reason: progress.error(f"{path}: {reason}"), lambda path: progress.done("")
        )
        models = _load_models({it.model for it in plan.items}, scale, device, cache)
        for it in plan.items:
            add_extras(it, req, _draws_of(models[it.model], draws, mode))
        check_outputs(plan.items, [it.src for it in plan.items] + [Path(p) for p, _ in plan.failures])
    except JobError as e:
        progress.close()
        fail(str(e))
    except ValueError as e:  # a model that does not load
        progress.close()
        fail(str(e))
    progress.close()
    return plan, models


def _draws_of(up: Upscaler, draws: int | None, mode: str | None = None) -> int:
    """Draws an image gets: 1 for bicubic and CNNs; --draws, else sharp mode's default or the model's sr.samples."""
    if up.kind in ("bicubic", "baseline"):
        return 1
    if mode == "sharp":
        from ldsr.pipeline import upscaler

        return draws or int(getattr(upscaler, "SHARP_DRAWS", 2))
    return draws or up.default_samples


def _print_plan(plan: Plan, models: dict[str, Upscaler]) -> None:
    for it in plan.items:
        notes = f" [{'; '.join(it.notes)}]" if it.notes else ""
        for out in it.outputs + it.extras:
            typer.echo(f"{it.src} -> {out} ({models[it.model].name}, x{models[it.model].scale}){notes}")


def _call_options(up: Upscaler, opts: RunOptions, progress: JobProgress) -> dict[str, Any]:
    """Keyword arguments of `Upscaler.upscale_batch` (every upscaler, bicubic and CNNs included, takes them all):
    the network evaluations reported to the job's bar as 'sampling k/n' (then 'decoding'), no bar of its own."""
    kw: dict[str, Any] = dict(sampler=opts.sampler, steps=opts.steps, eta=opts.eta, seed=opts.seed,
                              samples=opts.draws, reduce=opts.reduce, progress=False, mode=opts.mode,
                              consistency={"on": True, "off": False}.get(opts.consistency, "auto"),
                              std=opts.std_map or opts.reduce == "none")  # fmt: skip
    # std: the draws themselves, not only their mean
    if opts.decode_tile is not None:  # None: the upscaler's automatic choice
        kw["decode_tile"] = opts.decode_tile
    for name in ("tile", "tile_overlap", "attention_radius"):
        if getattr(opts, name) is not None:
            kw[name] = getattr(opts, name)
    if up.kind in ("latent", "pixel"):

        def report(done: int, total: int) -> None:
            progress.stage(f"sampling {done}/{total}" if done < total else "decoding")

        kw["progress"] = report
    return kw


def _autocast(up: Upscaler, opts: RunOptions) -> Any:
    """torch.autocast when --precision asks for bf16 / fp16 (a no-op context for fp32)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opts.precision)
    return torch.autocast(up.device.type, dtype=dtype, enabled=dtype is not None)


def _infer(up: Upscaler, images: list[np.ndarray], opts: RunOptions, progress: JobProgress) -> list[UpscaleResult]:
    """One network batch, under autocast when --precision asks for bf16 / fp16."""
    kw = _call_options(up, opts, progress)
    progress.stage("sampling" if up.kind in ("latent", "pixel") else "upscaling")
    with _autocast(up, opts):
        return up.upscale_batch(images, **kw)


class _SpreadRecorder:
    """An Upscaler seen through `upscale_volume`: every call passes through; each slice's spread (std over the
    draws, or None) is kept, and the results' mode and sample flag."""

    def __init__(self, up: Upscaler) -> None:
        self.up = up
        self.spreads: list[np.ndarray | None] = []
        self.mode: str | None = None
        self.is_sample = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.up, name)

    def upscale(self, lr: np.ndarray, **kwargs: Any) -> UpscaleResult:
        res = self.up.upscale(lr, **kwargs)
        self.spreads.append(res.std)
        self.mode, self.is_sample = res.mode, res.is_sample
        return res


def _run_volume(it: Item, up: Upscaler, req: Request, opts: RunOptions, progress: JobProgress) -> list[str]:
    """A NIfTI volume upscaled slice by slice into a NIfTI volume (`upscale_volume`), its spread volume when the
    plan names one (sharp mode, --std-map), both marked with their provenance; its warnings."""
    from typing import cast

    from ldsr.io.provenance import mark_volume
    from ldsr.pipeline.regions import upscale_volume

    kw = _call_options(up, opts, progress)
    spread = it.extras[0] if it.extras else None  # <stem>_std.nii.gz
    if spread is None:
        kw.pop("std", None)  # the volume keeps the image, not the draws
    if opts.reduce == "none":
        kw["reduce"] = "mean"

    def report(done: int, total: int) -> None:
        progress.stage(f"slice {done}/{total}")

    recorder = _SpreadRecorder(up)
    with _autocast(up, opts):
        res = upscale_volume(cast("Upscaler", recorder), it.src, it.outputs[0], req.axis, on_slice=report, **kw)
    try:
        spreads = [sp for sp in recorder.spreads if sp is not None]
        if spread is not None and len(spreads) == len(recorder.spreads):
            progress.stage(f"writing {spread.name}")
            _write_spread_volume(it.src, spread, spreads, req.axis, up.scale)
            mark_volume(spread, _record(up, opts, recorder.mode, False, content="spread"))
        else:
            spread = None
        named = None if spread is None else spread.name
        mark_volume(it.outputs[0], _record(up, opts, recorder.mode, recorder.is_sample, spread=named))
    except BaseException:  # no volume without its record (and a sharp one without its spread)
        it.outputs[0].unlink(missing_ok=True)
        raise
    return list(res.warnings)


def _write_spread_volume(src: Path, out: Path, spreads: list[np.ndarray], axis: int, scale: int) -> None:
    """The slices' spreads (B*s, A*s, 1), std of [0, 1] values, as a float32 NIfTI volume in the source's own
    units (std x (hi - lo) of the volume's window), with the geometry of the upscaled volume."""
    from dataclasses import replace

    from ldsr.io.volume import in_plane_axes, read_volume, slice_values, upscaled_affine, write_volume

    vol = read_volume(src)
    a, b = in_plane_axes(axis)
    lo, hi = vol.window
    units = replace(vol, window=(0.0, hi - lo))  # no offset: a spread, not a value
    shape = list(vol.data.shape)
    shape[a] *= scale
    shape[b] *= scale
    data = np.zeros(shape, dtype=np.float32)  # RAS+ voxel order
    for k, std in enumerate(spreads):
        index: list[Any] = [slice(None)] * 3
        index[axis] = k
        data[tuple(index)] = slice_values(units, std, np.dtype(np.float32))  # (A*s, B*s)
    write_volume(out, data, vol, upscaled_affine(vol.affine, scale, (a, b)))


def _record(up: Upscaler, opts: RunOptions, mode: str | None, is_sample: bool, *, content: Content = "image",
            spread: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The provenance record of one output (`ldsr.io.provenance_record`): the model, the result's mode and
    sample flag, the draws, steps, sampler and seed of this job; `content` "image" or "spread", `spread` the
    name of the image's spread map."""
    from ldsr.io import provenance_record

    diffusion = up.kind in ("latent", "pixel")
    steps = (up.sharp_steps if mode == "sharp" else up.default_steps) if opts.steps is None else opts.steps
    return provenance_record(
        model=up.name,
        scale=up.scale,
        mode=mode if diffusion else None,
        is_sample=is_sample,
        draws=_draws_of(up, opts.draws, opts.mode),
        steps=steps if diffusion else None,
        sampler=(opts.sampler or up.default_sampler) if diffusion else None,
        seed=opts.seed if diffusion else None,
        content=content,
        spread=spread,
    )


def _write(out: Path, meta: ImageMeta, res: UpscaleResult, up: Upscaler, opts: RunOptions) -> None:
    """The SR image (and --std-map / sharp mode / --reduce none extras) with the names the plan gave them, each
    with its provenance record in the file's metadata (a sharp-mode output is marked as a posterior sample)."""
    from ldsr.cli.upscale_plan import _stem
    from ldsr.io import suffix_of, write_image

    suffix = suffix_of(out)
    stem = _stem(out.name, suffix)
    draws = res.samples if opts.reduce == "none" else None  # (S, H, W, C): every draw is written
    spread_map = res.std if opts.std_map else None
    std = None if spread_map is None else out.with_name(f"{stem}_std.png")
    if std is not None and spread_map is not None:  # first: a draw is never left without its spread
        # std of [0, 1] images is at most 0.5: stretch x2 so the map uses the whole grey range.
        spread = _record(up, opts, res.mode, False, content="spread")
        write_image(std, np.clip(spread_map * 2.0, 0, 1), bit_depth=8, provenance=spread)
    # every draw written alone is a posterior sample, whatever the mode
    rec = _record(up, opts, res.mode, res.is_sample or draws is not None, spread=None if std is None else std.name)
    write_image(out, res.image if draws is None else draws[0], meta, scale=up.scale, provenance=rec)
    for k, s in enumerate([] if draws is None else draws[1:], start=1):
        write_image(out.with_name(f"{stem}_s{k}{suffix}"), s, meta, scale=up.scale, provenance=rec)


def _write_stack(it: Item, frames: list[tuple[ImageMeta, UpscaleResult]], up: Upscaler, opts: RunOptions) -> None:
    """Every frame of a multi-frame DICOM (in order) as ONE multi-frame DICOM with its provenance record; its extras
    as the plan named them: a spread map per frame (`<stem>_f<k>_std.png`, first), with --reduce none each draw
    as one multi-frame DICOM (`<stem>_s<k>.dcm`)."""
    from ldsr.cli.upscale_plan import _stem, frame_tag
    from ldsr.io import suffix_of, write_dicom_frames, write_image

    out, meta = it.outputs[0], frames[0][0]
    suffix = suffix_of(out)
    stem = _stem(out.name, suffix)
    results = [res for _, res in frames]
    draws: list[np.ndarray] | None = None  # --reduce none: (S, H, W, C) per frame, every draw written
    if opts.reduce == "none" and all(res.samples is not None for res in results):
        draws = [np.asarray(res.samples) for res in results]
    spread_name = None
    if opts.std_map and all(res.std is not None for res in results):  # first: no draw without its spread
        rec = _record(up, opts, results[0].mode, False, content="spread")
        for k, sp in zip(it.frames, [np.asarray(res.std) for res in results]):
            write_image(out.with_name(f"{stem}{frame_tag(it, k)}_std.png"), np.clip(sp * 2.0, 0, 1), bit_depth=8,
                        provenance=rec)  # fmt: skip
        spread_name = f"{stem}_f<k>_std.png"
    is_sample = any(res.is_sample for res in results) or draws is not None
    rec = _record(up, opts, results[0].mode, is_sample, spread=spread_name)
    images = [res.image for res in results] if draws is None else [d[0] for d in draws]
    write_dicom_frames(out, images, meta, scale=up.scale, provenance=rec)
    for d in range(1, 0 if draws is None else min(len(x) for x in draws)):
        write_dicom_frames(out.with_name(f"{stem}_s{d}{suffix}"), [x[d] for x in draws or []], meta,
                           scale=up.scale, provenance=rec)  # fmt: skip


class _Stacks:
    """The upscaled frames of multi-frame DICOM outputs (`Item.stack`), kept until a file's last frame is done,
    then written as one file; a file with a failed frame is not written (its other frames are skipped)."""

    def __init__(self, result: BatchResult[Path], progress: JobProgress) -> None:
        self.result, self.progress = result, progress
        self.frames: dict[int, dict[int, tuple[ImageMeta, UpscaleResult]]] = {}
        self.failed: set[int] = set()

    def fail(self, it: Item, e: Exception) -> None:
        self.frames.pop(id(it), None)
        self.failed.add(id(it))
        _fail(self.result, self.progress, it.src, e, 1)

    def add(self, it: Item, meta: ImageMeta, res: UpscaleResult, up: Upscaler, opts: RunOptions, took: float) -> None:
        k = meta.frame or 0
        if id(it) in self.failed:
            self.progress.done(f"{it.src} frame {k}: skipped (another frame failed)")
            return
        if getattr(res, "warning", None):
            self.progress.note(f"warning: {it.src} frame {k}: {res.warning}")
        frames = self.frames.setdefault(id(it), {})
        frames[k] = (meta, res)
        if len(frames) < len(it.frames):
            self.progress.done(f"{it.src} frame {k} ({up.name}, {took:.1f} s)")
            return
        out = it.outputs[0]
        self.progress.stage(f"writing {out.name}")
        try:
            _write_stack(it, [frames[j] for j in sorted(frames)], up, opts)
        except (ValueError, OSError) as e:
            self.fail(it, e)
            return
        del self.frames[id(it)]
        self.result.ok.append(out)
        self.progress.done(f"{it.src} -> {out} ({up.name}, {len(frames)} frames, {took:.1f} s per frame)")


def _run(
    plan: Plan, models: dict[str, Upscaler], req: Request, opts: RunOptions, progress: JobProgress
) -> BatchResult[Path]:
    """Upscale every planned frame; a file that fails now is named and the others go on."""
    from ldsr.cli.upscale_plan import convert_channels
    from ldsr.io import read_frames
    from ldsr.io.batch import BatchResult

    result: BatchResult[Path] = BatchResult(failures=list(plan.failures))
    pending: dict[tuple, list] = {}
    stacks = _Stacks(result, progress)

    def flush(key: tuple) -> None:
        group = pending.pop(key)
        up = models[key[0]]
        started = time.perf_counter()
        try:
            outs = _infer(up, [g[2] for g in group], opts, progress)
        except (ValueError, OSError, RuntimeError) as e:
            for it, _, _, _ in group:
                if it.stack:
                    stacks.fail(it, e)
                else:
                    _fail(result, progress, it.src, e, 1)
            return
        per_image = (time.perf_counter() - started) / len(group)
        for (it, out, _, meta), res in zip(group, outs):
            if it.stack:
                stacks.add(it, meta, res, up, opts, per_image)
                continue
            progress.stage(f"writing {out.name}")
            try:
                _write(out, meta, res, up, opts)
            except (ValueError, OSError) as e:
                _fail(result, progress, it.src, e, 1)
                continue
            result.ok.append(out)
            if getattr(res, "warning", None):  # e.g. low consistency with the LR: outside the model's domain
                progress.note(f"warning: {it.src}: {res.warning}")
            progress.done(f"{it.src} -> {out} ({up.name}, {per_image:.1f} s)")

    for it in plan.items:
        if it.volume:
            started = time.perf_counter()
            try:
                warnings = _run_volume(it, models[it.model], req, opts, progress)
            except (ValueError, OSError, RuntimeError) as e:
                _fail(result, progress, it.src, e, len(it.frames))
                continue
            result.ok.append(it.outputs[0])
            for warning in warnings:
                progress.note(f"warning: {it.src}: {warning}")
            took = time.perf_counter() - started
            progress.done(f"{it.src} -> {it.outputs[0]} ({models[it.model].name}, {took:.1f} s)", len(it.frames))
            continue
        progress.stage(f"reading {it.src.name}")
        try:
            frames = read_frames(it.src, axis=req.axis)
        except (ValueError, OSError) as e:
            _fail(result, progress, it.src, e, len(it.frames))
            continue
        for k, out in zip(it.frames, it.outputs * len(it.frames) if it.stack else it.outputs):
            image, meta = frames[k]
            image = convert_channels(image, req.channels)
            key = (it.model, image.shape)
            pending.setdefault(key, []).append((it, out, image, meta))
            if len(pending[key]) == opts.batch:
                flush(key)
    for key in list(pending):
        flush(key)
    return result


def _fail(result: BatchResult[Path], progress: JobProgress, path: Path, e: Exception, n: int) -> None:
    reason = str(e)
    reason = reason[len(str(path)) + 2 :] if reason.startswith(f"{path}: ") else reason
    progress.error(f"{path}: {reason}")
    if (str(path), reason) not in result.failures:
        result.failures.append((str(path), reason))
    progress.done(f"{path}: FAILED", n)


SLIDE_INPUTS = (".svs", ".tif", ".tiff")
SLIDE_OUTPUTS = (".tif", ".tiff")


@dataclass(frozen=True)
class SlideJob:
    """A whole-slide region to upscale into a pyramidal BigTIFF (`ldsr.pipeline.regions.upscale_region`)."""

    src: Path
    out: Path
    region: tuple[int, int, int, int] | None
    level: int
    tile: int | None
    tile_overlap: int | None


def _is_slide_job(input: Path, region: str | None, level: int | None) -> bool:
    """--region / --level ask for one; an .svs input is always one (a whole level when no region is given)."""
    return region is not None or level is not None or (input.is_file() and input.suffix.lower() == ".svs")


def _plan_slide(job: SlideJob, model: str | None, scale: int | None, device: str) -> tuple[Upscaler, str]:
    """Every check of a slide job before computing: output suffix, the region inside the level, the model and
    its channels. Returns the model and a one-line description; exits with one error line otherwise."""
    from ldsr.io import ImageError
    from ldsr.io.wsi import Slide, to_unit

    if not job.src.is_file():
        fail(f"{job.src}: --region / --level need a slide file (SVS or tiled TIFF)")
    if job.src.suffix.lower() not in SLIDE_INPUTS:
        fail(f"{job.src}: --region / --level need an SVS or TIFF slide (got {job.src.suffix or 'no suffix'})")
    if job.out.suffix.lower() not in SLIDE_OUTPUTS or job.out.is_dir():
        fail(f"{job.out}: a slide region is written as a pyramidal BigTIFF; name a .tif or .tiff output file")
    if job.out.resolve() == job.src.resolve():
        fail(f"{job.out}: would overwrite the input; choose another -o")
    cache: dict[str, Upscaler] = {}
    try:
        with Slide(job.src) as slide:
            level = job.level
            if not 0 <= level < len(slide.info.levels):
                slide.check_region(0, 0, 1, 1, level)
            lv = slide.info.levels[level]
            x, y, w, h = job.region or (0, 0, lv.width, lv.height)
            slide.check_region(x, y, w, h, level)
            sw, sh = min(w, 256), min(h, 256)  # a central sample for the automatic model choice
            sample = to_unit(slide.read_region(x + (w - sw) // 2, y + (h - sh) // 2, sw, sh, level))
        name, _ = _chooser(model, scale, device, cache)(sample, "tiff")
        up = _load_models({name}, scale, device, cache)[name]
    except ImageError as e:
        fail(str(e), 1)
    except ValueError as e:
        fail(str(e))
    if up.channels is not None and up.channels != sample.shape[2]:
        fail(f"{job.src}: the slide has {sample.shape[2]} channel(s) but {up.name} takes {up.channels}")
    mpp = lv.mpp
    size = f"{w * up.scale}x{h * up.scale}" + (f", {mpp[0] / up.scale:.4g} um/pixel" if mpp else "")
    return up, f"{job.src} level {level} region {x},{y},{w},{h} -> {job.out} ({up.name}, x{up.scale}, {size})"


def _slide_command(job: SlideJob, model: str | None, scale: int | None, opts: RunOptions, dry_run: bool,
                   quiet: bool) -> None:  # fmt: skip
    """Plan (every check), then upscale the region chunk by chunk into the pyramid; exit 0 / 1 / 2."""
    from ldsr.pipeline.regions import upscale_region

    up, line = _plan_slide(job, model, scale, opts.device)
    if opts.mode == "sharp" and up.kind in ("latent", "pixel"):
        fail(f"{job.src}: --mode sharp is not available for slide regions: a posterior draw is only written with its "
             "spread map, which the pyramidal output does not hold yet; use --mode faithful")  # fmt: skip
    if dry_run:
        typer.echo(line)
        typer.echo("dry run: 1 slide region, 0 files refused")
        raise typer.Exit(0)
    progress = JobProgress(1, desc="upscale", quiet=quiet)
    kw = _call_options(up, opts, progress)
    for key in ("progress", "std", "tile", "tile_overlap", "seed"):
        kw.pop(key, None)
    if opts.reduce == "none":
        kw["reduce"] = "mean"

    def report(done: int, total: int) -> None:
        progress.stage(f"chunk {done}/{total}")

    started = time.perf_counter()
    try:
        with _autocast(up, opts):
            res = upscale_region(up, job.src, job.out, job.region, job.level, tile=job.tile,
                                 tile_overlap=job.tile_overlap, seed=opts.seed, on_chunk=report, **kw)  # fmt: skip
    except (ValueError, OSError, RuntimeError) as e:
        progress.close()
        fail(str(e), 1)
    for warning in res.warnings:
        progress.note(f"warning: {job.src}: {warning}")
    progress.done(f"{line} ({time.perf_counter() - started:.1f} s)")
    progress.close()
    levels = ", ".join(f"{w}x{h}" for h, w in res.levels)
    typer.echo(f"upscale ({up.name} x{up.scale}): {res.chunks} chunks -> {job.out} (levels {levels})")


OUTPUT_HELP = (
    "Output file (one input; .png .jpg .tif, .dcm for DICOM input, .nii/.nii.gz for a NIfTI volume, .tif for a "
    "slide region) or folder. Folder outputs are named <stem>.png (.dcm for DICOM, <stem>.nii.gz for a NIfTI volume), "
    "<stem>_f<k> per frame (a multi-frame DICOM written as DICOM stays one multi-frame file); inputs sharing a stem "
    "keep their whole name (x.tif.png)."
)
MODEL_OPTION = typer.Option(
    None,
    "-m",
    "--model",
    show_default="per file: mri-x4 for grey / DICOM / NIfTI, histology-x4 for H&E; others need -m",
    help="Checkpoint folder / run dir / .safetensors, a shipped model name (`ldsr models`), or 'bicubic'.",
)
CHANNELS_OPTION = typer.Option(
    None,
    "--channels",
    show_default="none: a channel mismatch or an alpha channel is refused",
    help="Convert every input to grey (BT.601 luminance) or rgb (grey repeated) first; drops alpha.",
)
FRAMES_OPTION = typer.Option(
    "all",
    "--frames",
    callback=_frames,
    help="Multi-frame DICOM / TIFF and NIfTI volumes: all (one output per frame / slice; one multi-frame DICOM "
    "or NIfTI volume when written as such), middle, or a number.",
)
DECODE_TILE_OPTION = typer.Option(
    None,
    "--decode-tile",
    min=0,
    show_default="0: whole streamed decode, large feature maps held in a temporary file",
    help="Latent models: encode / decode in tiles of this many latent positions (exact, slower; 0: streamed).",
)
MODE_OPTION = typer.Option(
    None,
    "--mode",
    show_default="faithful",
    help="Diffusion models: faithful (the mean of --draws draws: closest to the truth on average) or sharp "
    "(one posterior draw, sharper, may invent detail: always written with the spread over its draws, "
    "<stem>_std.png, and marked as a posterior sample in the file's metadata).",
)
STD_MAP_OPTION = typer.Option(
    False,
    "--std-map/--no-std-map",
    help="Also write the per-pixel std over draws (<stem>_std.png, 2 x std; <stem>_std.nii.gz in the volume's "
    "units); always on with --mode sharp.",
)
REGION_OPTION = typer.Option(
    None,
    "--region",
    metavar="X,Y,W,H",
    show_default="the whole level (SVS input)",
    help="Whole-slide (SVS / tiled TIFF) input: upscale this region (pixels of --level) into a tiled pyramidal "
    "BigTIFF (-o NAME.tif) with the pixel size divided by the scale, chunk by chunk in bounded memory.",
)
LEVEL_OPTION = typer.Option(
    None, "--level", min=0, show_default="0 (full resolution)", help="Whole-slide input: the pyramid level to read."
)
TILE_OPTION = typer.Option(
    None,
    "--tile",
    min=0,
    show_default="automatic: tiles of 8x the training size when the image is larger",
    help="Diffusion models: the denoiser runs on overlapping tiles of this many LR pixels, blended at every step "
    "(bounded memory, linear time; 0: off).",
)
TILE_OVERLAP_OPTION = typer.Option(
    None, "--tile-overlap", min=0, show_default="tile / 4", help="LR pixels shared by neighbouring denoiser tiles."
)
ATTENTION_RADIUS_OPTION = typer.Option(
    None,
    "--attention-radius",
    min=0,
    show_default="the model's (global for the shipped models)",
    help="Diffusion models: the denoiser's self-attention attends within this many tokens of each position; tiles "
    "then agree with the untiled output (docs/BENCHMARKS.md, Seams).",
)


def upscale_command(
    input: Path = input_option("An LR image or a folder of them (searched recursively)."),
    output: Path = output_option(OUTPUT_HELP),
    model: Optional[str] = MODEL_OPTION,
    scale: Optional[int] = typer.Option(
        None, "--scale", min=2, show_default="the model's; 4 for bicubic", help="SR factor."
    ),
    channels: Optional[Channels] = CHANNELS_OPTION,
    frames: str = FRAMES_OPTION,
    axis: int = typer.Option(2, "--axis", min=0, max=2, help="NIfTI slice axis (RAS): 0 sagittal, 1 coronal, 2 axial."),
    sampler: Optional[Sampler] = sampler_option(),
    steps: Optional[int] = steps_option(),
    eta: Optional[float] = typer.Option(
        None, "--eta", show_default="the model's (0)", help="DDIM eta (0: deterministic)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler noise: the same seed gives the same image."),
    draws: Optional[int] = draws_option(),
    samples: Optional[int] = typer.Option(None, "--samples", min=1, hidden=True, help="Old name of --draws."),
    reduce: ReduceChoice = typer.Option(
        ReduceChoice.mean, "--reduce", help="How draws are combined; none writes every draw (<stem>_s<k>)."
    ),
    std_map: bool = STD_MAP_OPTION,
    batch: int = typer.Option(1, "--batch", min=1, help="Images of one size and model upscaled in one network batch."),
    decode_tile: Optional[int] = DECODE_TILE_OPTION,
    mode: Optional[Mode] = MODE_OPTION,
    tile: Optional[int] = TILE_OPTION,
    tile_overlap: Optional[int] = TILE_OVERLAP_OPTION,
    attention_radius: Optional[int] = ATTENTION_RADIUS_OPTION,
    consistency: ConsistencyChoice = CONSISTENCY_OPTION,
    region: Optional[str] = REGION_OPTION,
    level: Optional[int] = LEVEL_OPTION,
    device: Device = device_option(),
    precision: Precision = precision_option(),
    dry_run: bool = dry_run_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Super-resolve LR images; grey, 16-bit and DICOM stay so. Every file is checked before any computation."""
    from ldsr.cli.common import check_precision, resolve_device
    from ldsr.cli.upscale_plan import Request
    from ldsr.io import suffix_of

    if draws is not None and samples is not None and draws != samples:
        fail("--samples is the old name of --draws; give one of them")
    draws = draws if draws is not None else samples
    std_map = std_map or mode == Mode.sharp  # a posterior draw is never written without its spread
    dev = resolve_device(device)
    check_precision(precision, dev)
    if tile is not None and tile_overlap is not None and tile and tile_overlap >= tile:
        fail(f"--tile-overlap must be smaller than --tile, got {tile_overlap} >= {tile}")
    opts = RunOptions(None if sampler is None else str(sampler), steps, eta, seed, draws, str(reduce), std_map,
                      batch, decode_tile, str(precision), dev, None if mode is None else str(mode), tile,
                      tile_overlap, str(consistency), attention_radius)  # fmt: skip
    if _is_slide_job(input, region, level):
        from ldsr.pipeline.regions import parse_region

        try:
            box = None if region is None else parse_region(region)
        except ValueError as e:
            fail(f"--region: {e}")
        _slide_command(SlideJob(input, output, box, level or 0, tile, tile_overlap), model, scale, opts, dry_run,
                       quiet)  # fmt: skip
        return
    req = Request(input, output, None if channels is None else channels.value, frames, axis, std_map,
                  keep_draws=reduce == ReduceChoice.none)  # fmt: skip
    plan, models = _plan(req, model, scale, dev, quiet, draws, None if mode is None else str(mode))
    if dry_run:
        _print_plan(plan, models)
        typer.echo(f"dry run: {sum(len(it.outputs) for it in plan.items)} images, {len(plan.failures)} files refused")
        raise typer.Exit(1 if plan.failures else 0)
    progress = JobProgress(sum(len(it.frames) for it in plan.items), desc="upscale", quiet=quiet)
    for it in plan.items:
        if it.fmt == "nifti" and it.outputs and suffix_of(it.outputs[0]) != suffix_of(it.src):
            progress.note(f"note: {it.src}: {'; '.join(it.notes)}")  # a format change is said, not silent
    result = _run(plan, models, req, opts, progress)
    progress.close()
    used = ", ".join(sorted({f"{models[it.model].name} x{models[it.model].scale}" for it in plan.items})) or "none"
    typer.echo(f"upscale ({used}): {result.summary().splitlines()[0]} -> {output}")
    raise typer.Exit(result.exit_code)


def models_command() -> None:
    """List the shipped models with their cards."""
    from ldsr.pipeline import shipped_models

    models = shipped_models(None)  # every task: upscalers, generators, colorizers
    if not models:
        typer.echo("no shipped models installed; train one with `ldsr train sr`")
        return
    for name, path in models.items():
        card = path / "MODEL_CARD.md"
        typer.echo(f"== {name} ({path})")
        typer.echo(card.read_text(encoding="utf-8") if card.is_file() else "(no model card)")


def register(app: typer.Typer) -> None:
    app.command("upscale")(upscale_command)
    app.command("models")(models_command)
