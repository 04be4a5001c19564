"""`ldsr evaluate`: compare SR methods on one test set (the layout of the thesis's Table 5.1, Figs 5.6-5.8).

For every method and image the SR output is quantised to the ground truth's integer grid (8-bit: 0..255,
otherwise 0..65535), saved as sr/<method>/<name>.png (16-bit colour: .tif), and measured from exactly those
values: PSNR / SSIM on Y (grey: its one channel) and on all channels, crop = scale, data_range = the grid's
peak; LR consistency = PSNR of MATLAB-bicubic(SR, 1/scale) against the LR input (data_range 1). Diffusion
models with `samples` > 1 run seeds seed + k, k < samples; their numbers are means over seeds (per-image std
in results.csv, std over seeds of the test-set mean in the summary). Methods also get parameters, steps /
network evaluations, seconds per image (after one warm-up call) and the peak memory of their whole run.

A diffusion model runs in one of two output modes, chosen per method as `MODEL:faithful` (the default: the
posterior mean over the model's draws) or `MODEL:sharp` (one posterior draw, sr.sharp_steps steps; the method is
named 'MODEL (sharp)'). Either way the run asks for the draws themselves (`std=True`) and reports calibration:
the share of pixels whose |SR - GT| exceeds 3x the spread (std) of the draws, on the GT grid, on Y (grey: its
channel), crop = scale. Other methods have no spread: their calibration is null ('/' in summary.md).
"""

from __future__ import annotations

import csv
import gc
import json
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ldsr.data.degrade import PRESETS, crop_to_multiple, degrade, rng_for
from ldsr.data.resize import imresize
from ldsr.evaluation.metrics import (
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WINDOW,
    calibration_map,
    gmsd,
    hf_energy_ratio,
    hfen,
    psnr,
    quantize,
    rgb_to_y,
    ssim,
    ssim_map,
)
from ldsr.io import ImageError, ImageMeta, atomic_path, list_images, read_image, write_image
from ldsr.io.batch import run_batch

Preset = Literal["bicubic", "bsrgan", "light", "kspace", "blind"]
PrecisionName = Literal["fp32", "bf16", "fp16"]  # inference precision: fp32, or bf16 / fp16 autocast
PRECISIONS: tuple[PrecisionName, ...] = ("fp32", "bf16", "fp16")
Mode = Literal["faithful", "sharp"]
MODES: tuple[Mode, ...] = ("faithful", "sharp")
DIFFUSION_KINDS = ("latent", "pixel")
N_COMPARISON = 3  # images shown in comparison_<name>.png
METRIC_KEYS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "lr_psnr", "hfen_y", "gmsd_y", "hf_ratio_y")


@dataclass(frozen=True)
class EvalConfig:
    """One `ldsr evaluate` run. Exactly one of `lr_dir` / `preset` gives the LR inputs."""

    gt_dir: Path
    models: tuple[str, ...]
    out_dir: Path
    scale: int = 4
    lr_dir: Path | None = None
    preset: Preset | None = None
    seed: int = 0
    sampler: str | None = None  # None: each diffusion model's own default (its sr.sampler / sr.steps)
    steps: int | None = None
    samples: int = 1
    draws: int | None = None  # sampler draws averaged into each SR image; None: each model's own sr.samples
    limit: int | None = None
    device: str = "cpu"
    precision: PrecisionName = "fp32"  # every upscale call runs under autocast to bf16 / fp16 unless fp32
    heatmaps: int = 3
    command: str = ""

    def validate(self) -> None:
        if not Path(self.gt_dir).is_dir():
            raise ValueError(f"--gt {self.gt_dir}: not a folder")
        if (self.lr_dir is None) == (self.preset is None):
            raise ValueError("give exactly one of --lr (paired LR folder) or --preset (synthetic degradation)")
        if self.lr_dir is not None and not Path(self.lr_dir).is_dir():
            raise ValueError(f"--lr {self.lr_dir}: not a folder")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if not self.models:
            raise ValueError("give at least one --model (e.g. --model bicubic)")
        for name, value, low in (("scale", self.scale, 1), ("steps", self.steps, 1), ("samples", self.samples, 1),
                                 ("draws", self.draws, 1),
                                 ("heatmaps", self.heatmaps, 0), ("limit", self.limit, 1)):  # fmt: skip
            if value is not None and value < low:
                raise ValueError(f"--{name} must be >= {low}, got {value}")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"--device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "fp16" and not self.device.startswith("cuda"):
            raise ValueError("--precision fp16 needs --device cuda (a CPU runs fp32 or bf16)")
        self._validate_models()

    def _validate_models(self) -> None:
        from ldsr.pipeline import shipped_models

        shipped = shipped_models()
        for spec in self.models:
            m, mode = parse_model(spec)
            if m != "bicubic" and m not in shipped and not Path(m).exists():
                known = ", ".join(["bicubic", *shipped])
                hint = "" if ":" not in spec else f"; a mode is given as MODEL:{' or MODEL:'.join(MODES)}"
                raise ValueError(f"--model {m}: no such checkpoint file or folder, and not a shipped model ({known})"
                                 f"{hint}")  # fmt: skip
            if mode is not None and _kind_of(m, shipped) not in (*DIFFUSION_KINDS, None):
                raise ValueError(f"--model {spec}: {m} is not a diffusion model; it has one output, no modes")
            if mode == "sharp" and self.draws is not None and self.draws < 2:
                raise ValueError(f"--model {spec} with --draws {self.draws}: sharp mode reports the spread over its "
                                 "draws; give --draws >= 2 or leave --draws out")  # fmt: skip


def _kind_of(source: str, shipped: dict[str, Path]) -> str | None:
    """'bicubic', 'baseline', 'latent' or 'pixel' from a checkpoint's stored config (None: unreadable here;
    loading it reports why)."""
    if source == "bicubic":
        return "bicubic"
    from ldsr.models.checkpoint import read_config

    try:
        cfg = read_config(shipped.get(source, Path(source)))
    except Exception:  # any unreadable checkpoint (JSON, safetensors, missing file): `load` reports it
        return None
    if cfg.get("task") == "baseline":
        return "baseline"
    return "latent" if (cfg.get("sr") or {}).get("space", "latent") == "latent" else "pixel"


@dataclass
class Case:
    """One test image: `gt` cropped to a multiple of the scale, `lr` the network input, both in [0, 1]."""

    name: str  # relative path of the GT file (posix), the key of rng_for
    stem: str  # relative path without suffix: output names
    gt: np.ndarray
    lr: np.ndarray
    bits: Literal[8, 16]  # the integer grid the metrics use

    @property
    def peak(self) -> float:
        return float(2**self.bits - 1)


@dataclass
class Row:
    """Metrics of one method on one image (means over seeds when samples > 1)."""

    method: str
    image: str
    height: int
    width: int
    channels: int
    data_range: float
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    ssim_rgb: float
    lr_psnr: float
    hfen_y: float  # HFEN, GMSD and HF energy ratio on Y (ldsr.evaluation.metrics): blur shows in them
    gmsd_y: float
    hf_ratio_y: float
    psnr_y_std: float
    ssim_y_std: float
    samples: int
    seconds: float
    sr_path: str
    mode: str = ""  # "faithful" / "sharp" for diffusion models, "" otherwise
    calibration: float = math.nan  # share of pixels with |error| > 3 x the draws' std (Y); NaN: no spread


@dataclass
class MethodRun:
    """Everything measured for one method."""

    method: str
    source: str
    kind: str
    params: int
    steps: int | None
    nfe: int
    sampler: str | None
    device: str
    draws: int = 1  # sampler draws per SR image (faithful: averaged; sharp: one shown, all give the spread)
    mode: Mode | None = None  # diffusion models only
    slug: str = ""  # the method in file names (sr/<slug>/, ssim_<slug>_*.png); "" means `method`
    peak_mb: float = math.nan
    rows: list[Row] = field(default_factory=list)
    per_seed: list[list[float]] = field(default_factory=list)  # [image][seed] -> psnr_y; ssim in per_seed_ssim
    per_seed_ssim: list[list[float]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    shown: dict[str, np.ndarray] = field(default_factory=dict)  # stem -> SR image for the comparison figure
    shown_scores: dict[str, tuple[float, float]] = field(default_factory=dict)  # stem -> its (PSNR Y, SSIM Y)

    @property
    def file_name(self) -> str:
        return self.slug or self.method

    def summary(self) -> dict[str, Any]:
        """One Table 5.1 row (means over images; *_std over seeds of the test-set mean)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in ("method", "source", "kind", "steps", "nfe", "sampler",
                                                             "draws", "params", "device", "peak_mb")}  # fmt: skip
        out["n_images"] = len(self.rows)
        for key in METRIC_KEYS:
            out[key] = float(np.mean([getattr(r, key) for r in self.rows])) if self.rows else math.nan
        out["mode"] = self.mode
        calib = [r.calibration for r in self.rows if math.isfinite(r.calibration)]
        out["calibration"] = float(np.mean(calib)) if calib else None  # null: no spread to calibrate
        out["seconds_per_image"] = float(np.mean([r.seconds for r in self.rows])) if self.rows else math.nan
        out["samples"] = self.rows[0].samples if self.rows else 0
        for key, table in (("psnr_y_std", self.per_seed), ("ssim_y_std", self.per_seed_ssim)):
            out[key] = float(np.std(np.mean(table, axis=0))) if table and len(table[0]) > 1 else 0.0
        return out


# ----------------------------------------------------------------------------------------------------------
# inputs


def _stem(rel: str) -> str:
    return rel[:-7] if rel.lower().endswith(".nii.gz") else str(Path(rel).with_suffix("").as_posix())


def _grid_bits(meta: ImageMeta) -> Literal[8, 16]:
    return 8 if meta.bit_depth == 8 else 16


def _on_grid(x: np.ndarray, bits: Literal[8, 16]) -> np.ndarray:
    """[0, 1] -> [0, 1] values on the integer grid of `bits` (float32)."""
    return (quantize(x, bits).astype(np.float64) / (2**bits - 1)).astype(np.float32)


def load_cases(cfg: EvalConfig, *, progress: bool = False) -> tuple[list[Case], list[tuple[str, str]]]:
    """Read (and degrade or pair) every GT image; unreadable or unmatched images become failures."""
    gt_root = Path(cfg.gt_dir)
    paths = list_images(gt_root)
    if not paths:
        raise ValueError(f"--gt {gt_root}: no supported images found")
    paths = paths[: cfg.limit] if cfg.limit else paths
    lr_index: dict[str, list[Path]] = {}
    if cfg.lr_dir is not None:
        for p in list_images(cfg.lr_dir):
            lr_index.setdefault(_stem(p.relative_to(cfg.lr_dir).as_posix()), []).append(p)

    def load(path: Path) -> Case:
        rel = path.relative_to(gt_root).as_posix()
        img, meta = read_image(path)
        bits = _grid_bits(meta)
        gt = _on_grid(crop_to_multiple(img, cfg.scale), bits)
        if cfg.lr_dir is None:
            assert cfg.preset is not None
            lr, _ = degrade(gt, cfg.scale, cfg.preset, rng_for(cfg.seed, rel), bit_depth=bits)
            lr = _on_grid(lr, bits)
        else:
            lr = _paired_lr(lr_index.get(_stem(rel), []), gt, cfg)
        return Case(name=rel, stem=_stem(rel), gt=gt, lr=lr, bits=bits)

    result = run_batch(paths, load, desc="read", name=lambda p: p.relative_to(gt_root).as_posix(), progress=progress)
    return _one_channel_count(result.ok, result.failures)


def _one_channel_count(cases: list[Case], failures: list[tuple[str, str]]) -> tuple[list[Case], list[tuple[str, str]]]:
    """Models take one channel count: images unlike the first readable one are failures."""
    if not cases:
        return cases, failures
    c0 = cases[0].gt.shape[2]
    keep = [c for c in cases if c.gt.shape[2] == c0]
    failures = failures + [(c.name, f"has {c.gt.shape[2]} channels, {cases[0].name} has {c0}; evaluate grey and "
                            "colour images in separate runs") for c in cases if c.gt.shape[2] != c0]  # fmt: skip
    return keep, failures


def _paired_lr(found: list[Path], gt: np.ndarray, cfg: EvalConfig) -> np.ndarray:
    if len(found) != 1:
        why = "no LR image with this name" if not found else f"several LR files share this name: {found}"
        raise ValueError(f"{why} in {cfg.lr_dir}")
    lr, _ = read_image(found[0])
    want = (gt.shape[0] // cfg.scale, gt.shape[1] // cfg.scale, gt.shape[2])
    if lr.shape != want:
        raise ImageError(found[0], f"LR shape {lr.shape} does not match GT {gt.shape} / scale {cfg.scale} = {want}")
    return lr


# ----------------------------------------------------------------------------------------------------------
# measuring


def score(sr: np.ndarray, case: Case, scale: int) -> dict[str, float]:
    """Metrics of an SR image already on the case's grid ([0, 1] floats); see the module docstring."""
    peak = case.peak
    p, g = np.rint(sr.astype(np.float64) * peak), np.rint(case.gt.astype(np.float64) * peak)
    kw: dict[str, Any] = {"data_range": peak, "crop_border": scale}
    back = np.clip(imresize(sr.astype(np.float64), size=case.lr.shape[:2]), 0.0, 1.0)
    return {
        "psnr_y": psnr(p, g, y_channel=True, **kw),
        "ssim_y": ssim(p, g, y_channel=True, **kw),
        "psnr_rgb": psnr(p, g, **kw),
        "ssim_rgb": ssim(p, g, **kw),
        "lr_psnr": psnr(back, case.lr.astype(np.float64), data_range=1.0),
        "hfen_y": hfen(p, g, y_channel=True, **kw),
        "gmsd_y": gmsd(p, g, y_channel=True, **kw),
        "hf_ratio_y": hf_energy_ratio(p, g, y_channel=True, **kw),
    }


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc malloc_trim), so that memory an earlier
    method freed is not silently reused and missed by the next method's RSS growth."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory growth in MiB over the `track()` sections of a block (model load and upscale calls, so
    metrics and figures do not count): CUDA max_memory_allocated, or the CPU resident set size sampled every
    `interval` s by a thread (ru_maxrss is a process-wide high-water mark, so it cannot isolate a method)."""

    def __init__(self, device: str, interval: float = 0.02) -> None:
        self.cuda, self.interval, self.mb = device.startswith("cuda"), interval, math.nan
        self._stop, self._active = threading.Event(), threading.Event()
        self._base = self._peak = 0

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            if self._active.is_set():
                self._peak = max(self._peak, _rss_bytes())

    @contextmanager
    def track(self) -> Iterator[None]:
        """A section whose memory counts."""
        if self.cuda:
            yield
            return
        self._active.set()
        try:
            yield
        finally:
            self._peak = max(self._peak, _rss_bytes())
            self._active.clear()

    def __enter__(self) -> PeakMemory:
        _release_free_memory()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.mb = max(0, self._peak - self._base) / 2**20


def parse_model(spec: str) -> tuple[str, Mode | None]:
    """'SOURCE[:faithful|:sharp]' -> (source, mode); mode None when the spec names none (faithful)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail in MODES and not Path(spec).exists():
        return head, "sharp" if tail == "sharp" else "faithful"
    return spec, None


def _base_name(src: str) -> str:
    p = Path(src)
    if src == "bicubic" or not p.exists():
        base = p.name or src
    elif p.parent.name == "checkpoints":
        base = p.parent.parent.name
    elif p.is_file():
        base = p.parent.parent.name if p.parent.parent.name == "checkpoints" else p.stem
    else:
        base = p.resolve().name
    return re.sub(r"[^A-Za-z0-9._-]", "_", base) or "model"


def method_names(sources: Sequence[str]) -> list[str]:
    """Display names: 'bicubic', a run's folder name (for RUN/checkpoints/step_N), a folder / file / shipped
    name otherwise; duplicates get '-2', '-3', ...; characters outside [A-Za-z0-9._-] become '_'."""
    return [spec.name for spec in method_specs(sources)]


@dataclass(frozen=True)
class MethodSpec:
    """One `--model` argument: what to load, in which mode, its name in the tables and in file names."""

    source: str
    mode: Mode | None
    name: str  # 'mri-x4', 'mri-x4 (sharp)', 'mri-x4 (faithful)' (when asked for by name), 'bicubic-2', ...
    slug: str  # the name in file names: 'mri-x4', 'mri-x4_sharp', ...


def method_specs(models: Sequence[str]) -> list[MethodSpec]:
    """The methods of `--model` arguments (see `method_names`); 'MODEL:sharp' is named 'MODEL (sharp)' and
    written to sr/MODEL_sharp/; a duplicate of the same source and mode gets '-2', '-3', ... on its base name."""
    out: list[MethodSpec] = []
    for spec in models:
        source, mode = parse_model(spec)
        base = cand = _base_name(source)
        k = 2
        while True:
            name, slug = (cand, cand) if mode is None else (f"{cand} ({mode})", f"{cand}_{mode}")
            if all(name != m.name and slug != m.slug for m in out):
                break
            cand, k = f"{base}-{k}", k + 1
        out.append(MethodSpec(source=source, mode=mode, name=name, slug=slug))
    return out


def run_dir_of(source: str) -> Path | None:
    """The training run folder of a checkpoint source (the one holding log.csv), or None."""
    if source == "bicubic":
        return None
    p = Path(source)
    if not p.exists():
        from ldsr.pipeline import shipped_models

        p = shipped_models().get(source, p)
        if not p.exists():
            return None
    for d in (p, *p.resolve().parents[:3]):
        if (d / "log.csv").is_file():
            return d
    return None


def _upscale(up: Any, lr: np.ndarray, cfg: EvalConfig, seed: int, mem: PeakMemory,
             mode: Mode | None = None) -> tuple[Any, float]:  # fmt: skip
    """(UpscaleResult, seconds); diffusion models in `mode` (None: faithful) with their draws (std=True)."""
    kw: dict[str, Any] = {"seed": seed}
    if up.kind in DIFFUSION_KINDS:
        kw.update(sampler=cfg.sampler, steps=cfg.steps, samples=cfg.draws, mode=mode or "faithful", std=True)
    with mem.track(), _autocast(up, cfg.precision):
        t0 = time.perf_counter()
        out = up.upscale(lr, **kw)
        seconds = time.perf_counter() - t0
    return out, seconds


def _autocast(up: Any, precision: PrecisionName) -> Any:
    """torch.autocast on the model's device for bf16 / fp16 (as `ldsr upscale --precision`); fp32: a no-op."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    device = getattr(up, "device", None)
    return torch.autocast(getattr(device, "type", "cpu"), dtype=dtype, enabled=dtype is not None)


def calibration(sr: np.ndarray, draws: np.ndarray | None, case: Case, scale: int,
                std: np.ndarray | None = None) -> float:  # fmt: skip
    """Share of pixels whose |SR - GT| exceeds 3x the spread of the draws, on the GT grid, Y (grey: its channel),
    crop = scale. `sr` is on the grid ([0, 1] floats); `draws` (S, H, W, C) in [0, 1] are put on the grid, then
    their Y's std over S is the predicted spread. Without draws a grey image's `std` map serves; else NaN."""
    peak = case.peak
    if draws is not None and len(draws) >= 2:
        ys = np.stack([rgb_to_y(quantize(d, case.bits).astype(np.float64), data_range=peak) for d in draws])
        spread = ys.std(axis=0)  # (H, W, 1) in grid units
    elif std is not None and case.gt.shape[2] == 1:
        spread = np.asarray(std, dtype=np.float64).reshape(case.gt.shape) * peak
    else:
        return math.nan
    p, g = np.rint(sr.astype(np.float64) * peak), np.rint(case.gt.astype(np.float64) * peak)
    y_p, y_g = rgb_to_y(p, data_range=peak), rgb_to_y(g, data_range=peak)  # (H, W, 1)
    return float(calibration_map(y_p, y_g, spread, data_range=peak, crop_border=scale).mean())


def _sr_path(out_dir: Path, method: str, case: Case, seed_dir: str = "") -> Path:
    suffix = ".tif" if case.bits == 16 and case.gt.shape[2] == 3 else ".png"
    return out_dir / "sr" / method / seed_dir / f"{case.stem}{suffix}"


def flat(stem: str) -> str:
    """A relative stem as one file-name component (figures live in one folder)."""
    return stem.replace("/", "__")


def _method_run(up: Any, spec: MethodSpec, cfg: EvalConfig) -> MethodRun:
    """The MethodRun of a loaded model: its sampler, steps, draws and NFE in the spec's mode."""
    from ldsr.pipeline.upscaler import SHARP_DRAWS

    diffusion = up.kind in DIFFUSION_KINDS
    if spec.mode is not None and not diffusion:
        raise ValueError(f"--model {spec.source}:{spec.mode}: a {up.kind} model has one output, no modes")
    sharp = spec.mode == "sharp"
    draws = 1
    sampler = steps = None
    if diffusion:
        draws = cfg.draws if cfg.draws is not None else SHARP_DRAWS if sharp else getattr(up, "default_samples", 1)
        sampler = cfg.sampler or getattr(up, "default_sampler", None)
        steps = cfg.steps or getattr(up, "sharp_steps" if sharp else "default_steps", None)
        if sampler == "ddpm":  # ancestral sampling runs the whole (truncated) chain whatever `steps` says
            steps = int(up.nfe(steps, sampler))
    return MethodRun(method=spec.name, source=spec.source, kind=up.kind, params=int(up.n_params), steps=steps,
                     nfe=int(up.nfe(steps, sampler) * draws if diffusion else up.nfe()), draws=draws,
                     sampler=sampler, device=cfg.device, mode=(spec.mode or "faithful") if diffusion else None,
                     slug=spec.slug)  # fmt: skip


def run_method(spec: MethodSpec, cases: Sequence[Case], cfg: EvalConfig) -> MethodRun:
    """Load one method, warm it up on the first image, then upscale, save and measure every image."""
    from ldsr import pipeline

    method = spec.name
    with PeakMemory(cfg.device) as mem:
        with mem.track():
            channels = cases[0].gt.shape[2] if cases else None
            up = pipeline.load(spec.source, scale=cfg.scale, channels=channels, device=cfg.device)
        run = _method_run(up, spec, cfg)
        diffusion = up.kind in DIFFUSION_KINDS
        n_seeds = cfg.samples if diffusion else 1
        if cases:
            try:
                _upscale(up, cases[0].lr, cfg, cfg.seed, mem, run.mode)  # warm-up, not timed
            except ValueError:
                pass  # the image's own call below reports it

        def one(ic: tuple[int, Any], up: Any = up) -> Any:
            return _one_image(up, ic[0], ic[1], run, n_seeds, cfg, mem)

        result = run_batch(list(enumerate(cases)), one,
                           desc=method, name=lambda ic: f"{method}: {ic[1].name}", progress=False)  # fmt: skip
        del up
    run.peak_mb, run.failures = mem.mb, result.failures
    return run


def _one_image(up: Any, index: int, case: Case, run: MethodRun, n_seeds: int, cfg: EvalConfig,
               mem: PeakMemory) -> None:  # fmt: skip
    """Upscale one image with seeds seed + k (k < n_seeds), save each SR, append its Row to `run`."""
    scores, times = [], []
    first: np.ndarray | None = None
    for k in range(n_seeds):
        res, seconds = _upscale(up, case.lr, cfg, cfg.seed + k, mem, run.mode)
        sr = np.asarray(res.image, dtype=np.float32)
        if sr.shape != case.gt.shape:
            raise ValueError(f"SR output shape {sr.shape} differs from the GT {case.gt.shape}")
        sr = _on_grid(sr, case.bits)
        seed_dir = "" if k == 0 else f"seed_{cfg.seed + k}"
        write_image(_sr_path(cfg.out_dir, run.file_name, case, seed_dir), quantize(sr, case.bits),
                    bit_depth=case.bits)  # fmt: skip
        scores.append(score(sr, case, cfg.scale))
        scores[-1]["calibration"] = calibration(sr, res.samples, case, cfg.scale, res.std)
        times.append(seconds)
        first = sr if first is None else first
    assert first is not None
    if index < cfg.heatmaps:
        _heatmap(first, case, run.file_name, cfg)
    if index < N_COMPARISON:
        run.shown[case.stem] = first
        run.shown_scores[case.stem] = (scores[0]["psnr_y"], scores[0]["ssim_y"])
    mean = {key: float(np.mean([s[key] for s in scores])) for key in METRIC_KEYS}
    run.per_seed.append([s["psnr_y"] for s in scores])
    run.per_seed_ssim.append([s["ssim_y"] for s in scores])
    run.rows.append(Row(method=run.method, image=case.name, height=case.gt.shape[0], width=case.gt.shape[1],
                        channels=case.gt.shape[2], data_range=case.peak, **mean,
                        psnr_y_std=float(np.std([s["psnr_y"] for s in scores])),
                        ssim_y_std=float(np.std([s["ssim_y"] for s in scores])), samples=n_seeds,
                        seconds=float(np.mean(times)),
                        sr_path=_sr_path(Path("."), run.file_name, case).as_posix(), mode=run.mode or "",
                        calibration=float(np.mean([s["calibration"] for s in scores]))))  # fmt: skip


def _heatmap(sr: np.ndarray, case: Case, method: str, cfg: EvalConfig) -> None:
    """ssim_<method>_<image>.png: the SSIM(Y) map of one SR image (`method` as in file names)."""
    from ldsr.evaluation.heatmap import save_ssim_heatmap

    p, g = np.rint(sr.astype(np.float64) * case.peak), np.rint(case.gt.astype(np.float64) * case.peak)
    smap = ssim_map(p, g, data_range=case.peak, crop_border=cfg.scale, y_channel=True)
    save_ssim_heatmap(smap, cfg.out_dir / f"ssim_{method}_{flat(case.stem)}.png",
                      title=f"{method}  {case.stem}  SSIM(Y) {smap.mean():.4f}")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# provenance and tables


def provenance(cfg: EvalConfig, cases: Sequence[Case]) -> dict[str, Any]:
    """Where the numbers come from and how they were measured (written into every result file)."""
    from ldsr import __version__
    from ldsr.pipeline.upscaler import SHARP_DRAWS

    ranges = sorted({c.peak for c in cases})
    return {
        "gt_dir": str(Path(cfg.gt_dir).resolve()),
        "n_images": len(cases),
        "lr_source": f"dir {Path(cfg.lr_dir).resolve()}"
        if cfg.lr_dir is not None
        else f"preset {cfg.preset}, seed {cfg.seed} (rng_for(seed, relative name))",  # fmt: skip
        "scale": cfg.scale,
        "metric_channels": "Y (BT.601, MATLAB rgb2ycbcr, not rounded; grey: its channel) and RGB (all channels)",
        "crop_border": cfg.scale,
        "data_range": ranges[0] if len(ranges) == 1 else "per image from the gt bit depth: " + str(ranges),
        "grid": "SR and GT quantised to the GT bit depth (8-bit: 255, otherwise 65535) before measuring",
        "ssim": f"gaussian window {SSIM_WINDOW}x{SSIM_WINDOW}, sigma {SSIM_SIGMA}, valid region",
        "ssim_k1": SSIM_K1,
        "ssim_k2": SSIM_K2,
        "lr_consistency": f"PSNR(MATLAB bicubic(SR, 1/{cfg.scale}), LR input), data_range 1.0",
        "sampler": cfg.sampler or "each model's sr.sampler",
        "steps": cfg.steps or "each model's sr.steps (sharp mode: sr.sharp_steps)",
        "samples": cfg.samples,
        "draws": f"each model's sr.samples (sharp mode: {SHARP_DRAWS})" if cfg.draws is None else cfg.draws,
        "modes": "faithful: the mean of the decoded draws (ldsr upscale without --std-map decodes the draws' mean "
        "latent once: within 0.09 dB PSNR Y on the demo images); sharp: the first draw (the others give its spread)",
        "calibration": "share of pixels with |SR - GT| > 3 x the std of the draws, Y on the GT grid, crop = scale "
        "(diffusion models; null for the others)",
        "seed": cfg.seed,
        "timing": "wall time of one upscale call, after one warm-up call on the first image",
        "peak_memory": "CUDA max_memory_allocated growth over load + upscale calls"
        if cfg.device.startswith("cuda")
        else "growth of process RSS during load + upscale calls, sampled every 20 ms, after gc + malloc_trim "
        "(in-process: one-time library set-up counts for the first method that needs it)",  # fmt: skip
        "ldsr_version": __version__,
        "device": cfg.device,
        "precision": cfg.precision,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": cfg.command,
    }


def _num(x: Any) -> Any:
    return str(x) if isinstance(x, float) and not math.isfinite(x) else x


def write_results_csv(path: Path, prov: dict[str, Any], runs: Sequence[MethodRun]) -> None:
    cols = list(Row.__dataclass_fields__)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        for key, value in prov.items():
            f.write(f"# {key}: {value}\n")
        writer = csv.writer(f)
        writer.writerow(cols)
        for run in runs:
            for row in run.rows:
                writer.writerow([repr(v) if isinstance(v, float) else v for v in asdict(row).values()])


def write_summary_json(path: Path, doc: dict[str, Any]) -> None:
    def clean(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list):
            return [clean(v) for v in o]
        return _num(o)

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean(doc), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _params(n: int) -> str:
    return "0" if n == 0 else f"{n / 1e3:.1f}K" if n < 1e6 else f"{n / 1e6:.2f}M"


def _pm(mean: float, std: float, fmt: str, samples: int) -> str:
    return f"{mean:{fmt}} ± {std:{fmt}}" if samples > 1 else f"{mean:{fmt}}"


def _calibration_cell(value: Any) -> str:
    return "/" if value is None or not math.isfinite(value) else f"{100 * value:.2f}%"


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown Table 5.1: Method | Steps | PSNR | SSIM | Params, then the extra measurements."""
    head = ["Method", "Steps (NFE)", "PSNR Y", "SSIM Y", "Params", "PSNR RGB", "SSIM RGB", "LR-PSNR", "HFEN Y",
            "GMSD Y", "HF ratio Y", "calib. >3σ", "s/image", "peak MB", "device"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        steps = "/" if r["steps"] is None else f"{r['steps']} ({r['nfe']})"
        if r.get("draws", 1) > 1:
            steps += f", {'1 of' if r.get('mode') == 'sharp' else 'mean of'} {r['draws']}"
        cells = [r["method"], steps, _pm(r["psnr_y"], r["psnr_y_std"], ".2f", r["samples"]),
                 _pm(r["ssim_y"], r["ssim_y_std"], ".4f", r["samples"]), _params(r["params"]), f"{r['psnr_rgb']:.2f}",
                 f"{r['ssim_rgb']:.4f}", f"{r['lr_psnr']:.2f}", f"{r['hfen_y']:.4f}", f"{r['gmsd_y']:.4f}",
                 f"{r['hf_ratio_y']:.3f}", _calibration_cell(r.get("calibration")), f"{r['seconds_per_image']:.3g}",
                 f"{r['peak_mb']:.1f}", r["device"]]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def write_summary_md(path: Path, prov: dict[str, Any], rows: Sequence[dict[str, Any]], notes: Sequence[str],
                     failures: Sequence[tuple[str, str]]) -> None:  # fmt: skip
    parts = ["# ldsr evaluate", "", summary_table(rows), "",
             "Means over images. PSNR in dB. With samples > 1: mean ± std over seeds of the test-set mean. "
             "calib. >3σ: calibration, the share of pixels whose error exceeds 3x the spread of the diffusion "
             "model's draws ('/': no draws).", "",
             "## Provenance", ""]  # fmt: skip
    parts += [f"- {k}: {v}" for k, v in prov.items()]
    if notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    if failures:
        parts += ["", "## Failed", ""] + [f"- {n}: {r}" for n, r in failures]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------
# orchestration


@dataclass
class EvalReport:
    runs: list[MethodRun]
    summary: list[dict[str, Any]]
    failures: list[tuple[str, str]]
    notes: list[str]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def read_loss_log(run_dir: Path) -> tuple[list[float], list[float]]:
    """(steps, loss) of a run's log.csv; rows without a finite loss are skipped."""
    steps, losses = [], []
    with open(run_dir / "log.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            try:
                s, v = float(r.get("step") or "nan"), float(r.get("loss") or "nan")
            except ValueError:
                continue
            if math.isfinite(s) and math.isfinite(v):
                steps.append(s)
                losses.append(v)
    return steps, losses


def _loss_curves(runs: Sequence[MethodRun], notes: list[str]) -> dict[str, tuple[list[float], list[float]]]:
    curves = {}
    for run in runs:
        if run.kind == "bicubic":
            continue
        d = run_dir_of(run.source)
        curve = read_loss_log(d) if d is not None else ([], [])
        if curve[0]:
            curves[run.method] = curve
        else:
            notes.append(f"loss curve: no training log.csv found next to {run.source} ({run.method}); skipped")
    return curves


def _figures(cfg: EvalConfig, cases: Sequence[Case], runs: Sequence[MethodRun], summary: list[dict[str, Any]],
             notes: list[str]) -> None:  # fmt: skip
    from ldsr.evaluation import figures

    out = Path(cfg.out_dir)
    for case in cases[:N_COMPARISON]:
        panels = [(f"{r.method}\n{r.shown_scores[case.stem][0]:.2f} dB, SSIM {r.shown_scores[case.stem][1]:.3f}",
                   r.shown[case.stem]) for r in runs if case.stem in r.shown]  # fmt: skip
        figures.comparison_grid(out / f"comparison_{flat(case.stem)}.png", lr=case.lr, panels=panels, hr=case.gt,
                                title=f"{case.stem}  (x{cfg.scale}; PSNR / SSIM on Y)")  # fmt: skip
    curves = _loss_curves(runs, notes)
    if curves:
        figures.loss_curves(out / "loss_curves.png", curves)
    else:
        notes.append("loss_curves.png not written: no trained model with a log.csv")
    names = [s["method"] for s in summary]
    figures.time_memory(out / "time_memory.png", names, [s["seconds_per_image"] for s in summary],
                        [s["peak_mb"] for s in summary], device=cfg.device)  # fmt: skip
    figures.params_vs_psnr(out / "params_vs_psnr.png", names, [s["params"] for s in summary],
                           [s["psnr_y"] for s in summary])  # fmt: skip


def evaluate(cfg: EvalConfig, *, progress: bool = False) -> EvalReport:
    """Run every method on every image and write results.csv, summary.md/.json, sr/ and the figures."""
    cfg.validate()
    cases, failures = load_cases(cfg, progress=progress)
    runs = []
    for spec in method_specs(cfg.models):
        run = run_method(spec, cases, cfg)
        failures += run.failures
        runs.append(run)
        gc.collect()
    summary = [r.summary() for r in runs]
    notes: list[str] = []
    if cases:
        _figures(cfg, cases, runs, summary, notes)
    prov = provenance(cfg, cases)
    out = Path(cfg.out_dir)
    write_results_csv(out / "results.csv", prov, runs)
    doc = {"provenance": prov, "methods": summary, "notes": notes,
           "failures": [{"name": n, "reason": r} for n, r in failures]}  # fmt: skip
    write_summary_json(out / "summary.json", doc)
    write_summary_md(out / "summary.md", prov, summary, notes, failures)
    return EvalReport(runs=runs, summary=summary, failures=failures, notes=notes)
