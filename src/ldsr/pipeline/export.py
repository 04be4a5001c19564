"""Export a trained SR / baseline checkpoint as a shipped model: `ldsr/assets/models/<name>/` (package data).

A shipped model folder holds only what inference needs::

    <name>/
        ema.safetensors   EMA weights (float16 by default; metadata: the source's config + "dtype")
        config.json       the source checkpoint's info + "exported_from" and "dtype"; paths relative, no machine's
        MODEL_CARD.md     rendered: facts from the checkpoint, prose notes, and results read from the summary of
                          the evaluation run that measured each number (`render_card`, experiments/render_cards.py)

`ldsr.pipeline.load("<name>")` reads it like any checkpoint folder (float16 weights are cast back to float32).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ldsr.io import atomic_path
from ldsr.models.checkpoint import CONFIG_FILE, EMA_FILE, MODEL_FILE, load_weights, read_info, resolve_checkpoint
from ldsr.pipeline.upscaler import MODELS_DIR

CARD_FILE = "MODEL_CARD.md"
SAMPLER_DEFAULTS = (
    "sampler",
    "steps",
    "eta",
    "samples",
    "sharp_steps",
    "consistency",
    "attention_radius",
)  # sr.* fields a shipped model may re-default
_RESERVED = ("bicubic",)  # names `ldsr.pipeline.load` answers itself


def _check_name(name: str) -> None:
    bad = [s for s in ("/", "\\", os.sep, os.altsep or "/") if s in name]
    if not name or bad or name in (".", "..") or name.startswith(".") or name.strip() != name or "\0" in name:
        raise ValueError(f"model name {name!r} must be a plain folder name (no path separators, not hidden)")
    if name in _RESERVED:
        raise ValueError(f"model name {name!r} is reserved")


def _weights_file(checkpoint: str | os.PathLike[str]) -> Path:
    """The safetensors file `load_weights(..., ema=True)` reads (for its metadata)."""
    p = resolve_checkpoint(checkpoint)
    if p.name == CONFIG_FILE:
        p = p.parent
    if p.is_dir():
        return p / EMA_FILE if (p / EMA_FILE).is_file() else p / MODEL_FILE
    return p


def _with_sampler_defaults(info: Mapping[str, Any], defaults: Mapping[str, Any], source: object) -> dict[str, Any]:
    """A copy of `info` whose config.sr carries `defaults`, validated as an SRConfig."""
    from ldsr.config import from_dict
    from ldsr.models.sr import SRConfig

    cfg = dict(info.get("config") or {})
    if cfg.get("task") != "sr":
        raise ValueError(f"{source}: sampler defaults only apply to diffusion (sr) checkpoints")
    bad = sorted(set(defaults) - set(SAMPLER_DEFAULTS))
    if bad:
        raise ValueError(f"unknown sampler default(s) {bad}; allowed: {', '.join(SAMPLER_DEFAULTS)}")
    resolved = from_dict(SRConfig, {**cfg["sr"], **defaults}, "sr")  # types checked, the field named on error
    resolved.validate()
    sr = dataclasses.asdict(resolved)
    return {**info, "config": {**cfg, "sr": sr}}


def portable(value: Any, root: str | os.PathLike[str]) -> Any:
    """`value` (JSON-like) with every absolute path string made relative to `root` (POSIX separators).

    A shipped config names no folder of the machine it was trained on: `/work/main/runs/cpu/x` becomes
    `runs/cpu/x` and `/work/shared/data/mri` becomes `../shared/data/mri` for root `/work/main`."""
    if isinstance(value, Mapping):
        return {k: portable(v, root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v, root) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        try:
            return Path(os.path.relpath(value, os.fspath(root))).as_posix()
        except ValueError:  # another drive on Windows: keep the last component only
            return Path(value).name
    return value


@dataclass(frozen=True)
class SummaryRow:
    """One method's row of an `ldsr evaluate` summary (Y-channel means over the images)."""

    method: str
    psnr_y: float
    ssim_y: float
    params: float | None = None  # None: not recorded
    steps: int | None = None  # sampler steps (None: not a diffusion model)
    nfe: int | None = None  # network evaluations per image
    draws: int = 1  # draws of x_T averaged per image


def _md_params(text: str) -> float | None:
    m = re.fullmatch(r"([\d.]+)([KM]?)", text.strip())
    return None if m is None else float(m.group(1)) * {"": 1.0, "K": 1e3, "M": 1e6}[m.group(2)]


def _md_row(cells: Mapping[str, str]) -> SummaryRow:
    """A row of the summary.md table `ldsr evaluate` writes (`Steps (NFE)` like `1 (8), mean of 8` or `/`)."""
    m = re.match(r"(\d+) \((\d+)\)(?:, \w+ of (\d+))?", cells["Steps (NFE)"].strip())
    return SummaryRow(
        method=cells["Method"].strip(),
        psnr_y=float(cells["PSNR Y"].split()[0]),
        ssim_y=float(cells["SSIM Y"].split()[0]),
        params=_md_params(cells.get("Params", "")),
        steps=int(m.group(1)) if m else None,
        nfe=int(m.group(2)) if m else None,
        draws=int(m.group(3)) if m and m.group(3) else 1,
    )


def _read_summary_md(text: str, path: Path) -> tuple[dict[str, Any], dict[str, SummaryRow]]:
    lines = text.splitlines()
    try:
        top = next(i for i, line in enumerate(lines) if line.startswith("| Method |"))
    except StopIteration:
        raise ValueError(f"{path}: no '| Method |' table (not an ldsr evaluate summary)") from None
    header = [c.strip() for c in lines[top].strip("|").split("|")]
    rows: dict[str, SummaryRow] = {}
    for line in lines[top + 2 :]:
        if not line.startswith("|"):
            break
        row = _md_row(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
        rows[row.method] = row
    prov: dict[str, Any] = {}
    section = ""
    for line in lines:
        section = line[3:].strip() if line.startswith("## ") else section
        if section == "Provenance" and line.startswith("- ") and ": " in line:
            key, _, value = line[2:].partition(": ")
            prov[key] = int(value) if value.isdigit() else value
    return prov, rows


def read_summary(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, SummaryRow]]:
    """(provenance, rows by method name) of an `ldsr evaluate` run: its summary.json, or its summary.md (the
    runs whose JSON was not kept: the table's rounded numbers, as the report printed them)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        return _read_summary_md(text, path)
    data = json.loads(text)
    fields = {f.name for f in dataclasses.fields(SummaryRow)}
    rows = {m["method"]: SummaryRow(**{k: v for k, v in m.items() if k in fields}) for m in data["methods"]}
    return dict(data.get("provenance") or {}), rows


@dataclass(frozen=True)
class CardResult:
    """A results line of a model card: the model's row and the rows it is compared with, from one summary."""

    title: str  # what was measured, e.g. "Held-out test split, bsrgan LR, seed 0"
    summary: str  # the summary file, as the card names it
    n_images: int
    rows: tuple[tuple[str, SummaryRow], ...]  # (label, row); the first is the model itself

    def line(self) -> str:
        def sampling(r: SummaryRow) -> str:
            if r.steps is None:
                return ""
            draws = f" x mean of {r.draws} draws" if r.draws > 1 else ", one draw"
            evals = f"{r.nfe} evaluation{'s' if r.nfe != 1 else ''}"
            return f" ({r.steps} step{'s' if r.steps > 1 else ''}{draws}, {evals})"

        parts = [f"{label} {r.psnr_y:.2f} dB / {r.ssim_y:.4f}{sampling(r)}" for label, r in self.rows[:1]]
        parts += [f"{label} {r.psnr_y:.2f} / {r.ssim_y:.4f}" for label, r in self.rows[1:]]
        return f"- {self.title}, {self.n_images} images (PSNR / SSIM, Y; `{self.summary}`): " + "; ".join(parts)


def card_result(
    title: str, summary: str | os.PathLike[str], methods: Mapping[str, str], *, shown: str | None = None
) -> CardResult:
    """Read `methods` (card label -> the method name in the summary; the first is the model) from a summary."""
    prov, rows = read_summary(summary)
    missing = [m for m in methods.values() if m not in rows]
    if missing:
        raise ValueError(f"{summary}: no row for {missing} (rows: {', '.join(rows)})")
    picked = tuple((label, rows[m]) for label, m in methods.items())
    return CardResult(title, shown or str(summary), int(prov.get("n_images", 0)), picked)


def _fmt_size(n: int) -> str:
    return f"{n / 2**20:.2f} MB ({n:,} bytes)"


def _arch_lines(cfg: Mapping[str, Any]) -> list[str]:
    """The architecture entries of a card: the baseline's arch, or the diffusion model and its autoencoder."""
    if cfg.get("task") == "baseline":
        return [f"- Architecture: {(cfg.get('baseline') or {}).get('arch')}"]
    sr, ae = cfg.get("sr") or {}, cfg.get("autoencoder") or {}
    lines = [
        f"- Architecture: {sr.get('space')}-space diffusion, UNet preset {sr.get('unet')}, "
        f"T={sr.get('timesteps')} ({sr.get('schedule')}), prediction {sr.get('prediction')}"
        + (", residual on the bicubic-upsampled LR (SRDiff-style)" if sr.get("residual") else "")
    ]
    if ae:
        lines.append(
            f"- Autoencoder: {ae.get('kind')} f={ae.get('factor')}, preset {ae.get('preset')}, "
            f"{ae.get('latent_channels')} latent channels"
        )
    return lines


def _sampler_lines(sr: Mapping[str, Any]) -> list[str]:
    """The sampler defaults a diffusion model loads with, and what the one-step default returns."""
    n = int(sr.get("samples", 1))
    lines = [
        "",
        "## Sampler defaults",
        "",
        f"- Sampler: {sr.get('sampler')}, steps: {sr.get('steps')}, eta: {sr.get('eta')}, "
        f"draws averaged per image: {n}",
    ]
    if sr.get("steps") == 1 and sr.get("sampler") in ("ddim", "dpmpp"):
        how = (
            "in one evaluation"
            if n == 1
            else f"averaged over {n} draws of x_T (x_T keeps a few per cent of signal, so each estimate depends "
            f"on it slightly), {n} evaluations"
        )
        lines.append(
            "- One step from x_T lands on the network's x0 estimate at the start of the chain, "
            f"E[x0 | LR] (Tweedie): the posterior mean, the most faithful output, {how}. "
            "For a sharp sample (texture, less fidelity) use `--mode sharp`: one posterior draw, always "
            "written with the spread over its draws and marked as a sample in the file."
        )
    return lines


def _card(
    name: str,
    info: Mapping[str, Any],
    *,
    n_params: int,
    kind: str,
    size: int,
    notes: Mapping[str, Any],
    results: Sequence[CardResult] = (),
) -> str:
    """MODEL_CARD.md text: values read from the checkpoint info, `notes` (prose entries) and `results`
    (numbers, each read from the summary of the evaluation run that measured it)."""
    cfg = info.get("config") or {}
    data, train = cfg.get("data") or {}, cfg.get("train") or {}
    notes = dict(notes)
    licence = notes.pop("licence", None) or notes.pop("license", None)
    lines = [
        f"# {name}",
        "",
        f"- Task: {cfg.get('task')} ({kind}), x{cfg.get('scale')}, {cfg.get('channels')}-channel input",
    ]
    lines += _arch_lines(cfg)
    lines += [
        f"- Parameters: {n_params:,}",
        f"- Weights: {EMA_FILE}, {info.get('dtype', 'float32')}, {_fmt_size(size)}",
        f"- ldsr version: {info.get('ldsr_version')}",
        "",
        "## Training",
        "",
        f"- Training data: {', '.join(map(str, data.get('train') or [])) or '(none recorded)'}"
        f" (split: {data.get('split')}" + (f", rules: {data['split_rules']}" if data.get("split_rules") else "") + ")",
    ]
    if data.get("paired"):
        lines.append(f"- Paired data: {data.get('paired')}")
    lines += [
        f"- Licence of the training data / weights: {licence if licence is not None else 'not recorded'}",
        f"- Degradation preset: {data.get('degradation')}"
        + (f" (validation: {data['val_degradation']})" if data.get("val_degradation") else ""),
        f"- HR crop: {data.get('hr_size')} px",
        f"- Steps: {info.get('step')} (of {train.get('steps')} configured), batch {train.get('batch_size')}, "
        f"lr {train.get('lr')}, EMA decay {train.get('ema_decay')} (EMA weights: {info.get('ema')})",
        f"- Exported from: {info.get('exported_from')}",
    ]
    if cfg.get("task") == "sr":
        lines += _sampler_lines(cfg.get("sr") or {})
    if results:
        lines += ["", "## Results", "", *(r.line() for r in results)]
    if notes:
        lines += ["", "## Notes", "", *(f"- {k}: {v}" for k, v in notes.items())]
    lines += ["", "## Usage", "", "```python", "import ldsr", ""]
    lines += [f'sr = ldsr.load("{name}").upscale(lr_image).image  # (h, w, C) array in [0, 1] -> (h*s, w*s, C)']
    return "\n".join([*lines, "```", ""])


def _holds(path: Path, state: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> bool:
    """True if the safetensors file at `path` already has exactly these tensors and metadata.

    safetensors writes its metadata in no fixed order, so writing the same weights twice gives different bytes;
    checking first keeps a re-export (new card text, same weights) from changing a committed binary."""
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            if dict(f.metadata() or {}) != dict(meta) or set(f.keys()) != set(state):
                return False
            return all(
                (t := f.get_tensor(k)).dtype == v.dtype and t.shape == v.shape and torch.equal(t, v)
                for k, v in state.items()
            )
    except (SafetensorError, OSError):  # unreadable or truncated: rewrite it
        return False


def _portable_meta(meta: Mapping[str, str], root: str | os.PathLike[str]) -> dict[str, str]:
    """safetensors metadata (JSON-encoded values; `format` and `ldsr_version` are plain text) made portable."""
    out: dict[str, str] = {}
    for k, v in meta.items():
        try:
            decoded = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
            continue
        out[k] = json.dumps(portable(decoded, root))
    return out


def _write_weights(folder: Path, state: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> None:
    if not _holds(folder / EMA_FILE, state, meta):  # a re-export of the same weights keeps the file's bytes
        with atomic_path(folder / EMA_FILE) as tmp:
            save_file(dict(state), str(tmp), metadata=dict(meta))


def write_half_folder(
    out: str | os.PathLike[str], state: Mapping[str, torch.Tensor], info: Mapping[str, Any], card: str,
    *, max_mb: float = 25.0, config_extra: Mapping[str, Any] | None = None,
) -> float:  # fmt: skip
    """A shipped folder from a checkpoint record outside the SR export (a colorizer, a generator): the float32
    tensors of `state` in fp16 with `info` (minus ldsr_version / ema) as weights metadata, config.json = `info`
    plus `config_extra`, and MODEL_CARD.md = `card`. Returns the folder's size in MB; ValueError over `max_mb`."""
    from ldsr import __version__
    from ldsr.models.checkpoint import save_weights

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    half = {k: v.half() if v.dtype == torch.float32 else v for k, v in state.items()}
    meta = {k: json.dumps(v) for k, v in info.items() if k not in ("ldsr_version", "ema")}
    save_weights(folder / EMA_FILE, half, {**meta, "ldsr_version": __version__})
    with atomic_path(folder / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps({**info, **(config_extra or {})}, indent=2), encoding="utf-8")
    with atomic_path(folder / CARD_FILE) as tmp:
        tmp.write_text(card, encoding="utf-8")
    size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    if size > max_mb:
        raise ValueError(f"{folder}: {size:.1f} MB exceeds the {max_mb} MB budget of a shipped model")
    return size


def make_portable(folder: str | os.PathLike[str], root: str | os.PathLike[str]) -> None:
    """Rewrite a shipped model's config.json and weights metadata with paths relative to `root`; the tensors
    are read back and written unchanged (checked)."""
    folder = Path(folder)
    with safe_open(str(folder / EMA_FILE), framework="pt") as f:
        meta = dict(f.metadata() or {})
        state = {k: f.get_tensor(k) for k in f.keys()}
    _write_weights(folder, state, _portable_meta(meta, root))
    with safe_open(str(folder / EMA_FILE), framework="pt") as f:
        if set(f.keys()) != set(state) or not all(torch.equal(f.get_tensor(k), v) for k, v in state.items()):
            raise RuntimeError(f"{folder / EMA_FILE}: tensors changed while rewriting the metadata")
    info = portable(json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")), root)
    with atomic_path(folder / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")


def render_card(
    folder: str | os.PathLike[str],
    *,
    notes: Mapping[str, Any] | None = None,
    results: Sequence[CardResult] = (),
) -> str:
    """MODEL_CARD.md text of an exported model folder (its config.json and weights) with `notes` and `results`.

    Raises ValueError when a result's first row (the model itself) records another parameter count: the summary
    row is not this model."""
    from ldsr.pipeline.upscaler import load

    folder = Path(folder)
    up = load(folder)
    for r in results:
        own = r.rows[0][1].params
        if own is not None and abs(own - up.n_params) > 0.005 * up.n_params:  # summary.md rounds to 3 digits
            raise ValueError(f"{r.summary}: row {r.rows[0][1].method!r} has {own:.0f} parameters, {folder.name} "
                             f"{up.n_params}: not this model")  # fmt: skip
    size = (folder / EMA_FILE).stat().st_size
    info = read_info(folder)
    return _card(folder.name, info, n_params=up.n_params, kind=up.kind, size=size, notes=notes or {}, results=results)


def export_model(
    checkpoint: str | Path,
    name: str,
    *,
    out_root: Path = MODELS_DIR,
    half: bool = True,
    card: dict | None = None,
    max_mb: float = 25.0,
    sampler_defaults: Mapping[str, Any] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> Path:
    """Write `out_root/<name>/` (ema.safetensors, config.json, MODEL_CARD.md) from a trained SR or baseline
    checkpoint (folder, run dir or safetensors file). Returns the folder.

    Raises ValueError for a name that is not a plain folder name, an autoencoder (or other non-SR) checkpoint,
    or weights larger than `max_mb` megabytes (checked before anything is written).

    `sampler_defaults` (keys of SAMPLER_DEFAULTS) replace the trained config's `sr.sampler/steps/eta/samples`:
    the inference defaults chosen after training (e.g. from a steps sweep); the weights are unchanged.
    Paths in the stored config and metadata are made relative to `root` (default: the working directory).
    `card` entries are the card's notes; results are added later from evaluation summaries (`render_card`)."""
    _check_name(name)
    root = Path.cwd() if root is None else root
    source = resolve_checkpoint(checkpoint).resolve()
    info = read_info(source)
    task = (info.get("config") or {}).get("task")
    if task not in ("sr", "baseline"):
        raise ValueError(
            f"{checkpoint}: a {task!r} checkpoint is not an SR model; only sr / baseline checkpoints can be exported"
        )
    if sampler_defaults:
        info = _with_sampler_defaults(info, sampler_defaults, checkpoint)
    state, _ = load_weights(source, ema=True)
    if task == "baseline":  # inference uses the generator only (a GAN checkpoint also holds its discriminator)
        state = {k: v for k, v in state.items() if k.startswith("generator.")}
    dtype = "float16" if half else "float32"
    state = {k: (v.to(getattr(torch, dtype)) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    est = sum(v.numel() * v.element_size() for v in state.values())
    if est > max_mb * 2**20:
        raise ValueError(f"{name}: weights are {_fmt_size(est)}, over the {max_mb} MB limit for shipped models")

    from ldsr.pipeline.upscaler import load  # the model must rebuild from the source before anything is written

    load(source)
    with safe_open(str(_weights_file(source)), framework="pt") as f:
        meta = dict(f.metadata() or {})
    meta.update({"dtype": json.dumps(dtype), "config": json.dumps(info["config"])})  # read_info JSON-decodes these
    meta = {**_portable_meta(meta, root), "format": "pt"}

    folder = Path(out_root) / name
    folder.mkdir(parents=True, exist_ok=True)
    _write_weights(folder, state, meta)
    size = (folder / EMA_FILE).stat().st_size
    if size > max_mb * 2**20:  # metadata pushed it over: do not leave it behind
        (folder / EMA_FILE).unlink()
        raise ValueError(f"{name}: {EMA_FILE} is {_fmt_size(size)}, over the {max_mb} MB limit for shipped models")
    out_info = portable({**info, "exported_from": str(source), "dtype": dtype}, root)
    with atomic_path(folder / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(out_info, indent=2), encoding="utf-8")
    text = render_card(folder, notes=card or {})
    with atomic_path(folder / CARD_FILE) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return folder
