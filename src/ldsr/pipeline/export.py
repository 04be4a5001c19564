"""Export a trained SR / baseline checkpoint as a shipped model: `models/<name>/` (see `ldsr.pipeline`).

A shipped model folder holds only what inference needs::

    models/<name>/
        ema.safetensors   EMA weights (float16 by default; metadata: the source's config + "dtype")
        config.json       the source checkpoint's info + "exported_from" and "dtype"
        MODEL_CARD.md     what the model was trained on and how, from the checkpoint and the given card entries

`ldsr.pipeline.load("<name>")` reads it like any checkpoint folder (float16 weights are cast back to float32).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ldsr.io import atomic_path
from ldsr.models.checkpoint import CONFIG_FILE, EMA_FILE, MODEL_FILE, load_weights, read_info, resolve_checkpoint
from ldsr.pipeline.upscaler import MODELS_DIR

CARD_FILE = "MODEL_CARD.md"
SAMPLER_DEFAULTS = ("sampler", "steps", "eta", "samples")  # sr.* fields a shipped model may re-default
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


def _shown_path(p: object) -> str:
    """A data path as the card shows it: relative to the working directory (the repository) when possible."""
    try:
        return os.path.relpath(str(p))
    except ValueError:  # another drive on Windows
        return str(p)


def _fmt_size(n: int) -> str:
    return f"{n / 2**20:.2f} MB ({n:,} bytes)"


def _card(
    name: str,
    info: Mapping[str, Any],
    *,
    source: Path,
    n_params: int,
    kind: str,
    dtype: str,
    size: int,
    extra: Mapping[str, Any],
) -> str:
    """MODEL_CARD.md text: only values read from the checkpoint or passed in `extra`."""
    cfg = info.get("config") or {}
    data = cfg.get("data") or {}
    train = cfg.get("train") or {}
    extra = dict(extra)
    licence = extra.pop("licence", None) or extra.pop("license", None)
    lines = [f"# {name}", ""]
    lines += [
        f"- Task: {cfg.get('task')} ({kind}), x{cfg.get('scale')}, {cfg.get('channels')}-channel input",
    ]
    if cfg.get("task") == "baseline":
        lines.append(f"- Architecture: {(cfg.get('baseline') or {}).get('arch')}")
    elif cfg.get("task") == "sr":
        sr = cfg.get("sr") or {}
        lines.append(
            f"- Architecture: {sr.get('space')}-space diffusion, UNet preset {sr.get('unet')}, "
            f"T={sr.get('timesteps')} ({sr.get('schedule')}), prediction {sr.get('prediction')}"
            + (", residual on the bicubic-upsampled LR (SRDiff-style)" if sr.get("residual") else "")
        )
        ae = cfg.get("autoencoder") or {}
        if ae:
            lines.append(
                f"- Autoencoder: {ae.get('kind')} f={ae.get('factor')}, preset {ae.get('preset')}, "
                f"{ae.get('latent_channels')} latent channels"
            )
    lines += [
        f"- Parameters: {n_params:,}",
        f"- Weights: {EMA_FILE}, {dtype}, {_fmt_size(size)}",
        f"- ldsr version: {info.get('ldsr_version')}",
        "",
        "## Training",
        "",
        f"- Training data: {', '.join(map(_shown_path, data.get('train') or [])) or '(none recorded)'}"
        f" (split: {data.get('split')})",
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
        f"- Exported from: {_shown_path(source)}",
    ]
    if cfg.get("task") == "sr":
        sr = cfg.get("sr") or {}
        n = int(sr.get("samples", 1))
        lines += [
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
                "For a sharp sample (texture, less fidelity) use `--steps 10 --samples 1`; for an "
                "uncertainty map `--steps 10 --samples 8 --std-map`."
            )
    if extra:
        lines += ["", "## Results and notes", ""]
        lines += [f"- {k}: {v}" for k, v in extra.items()]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from ldsr.pipeline.upscaler import load",
        "",
        f'sr = load("{name}").upscale(lr_image)  # (h, w, C) array in [0, 1]',
        "```",
        "",
    ]
    return "\n".join(lines)


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


def export_model(
    checkpoint: str | Path,
    name: str,
    *,
    out_root: Path = MODELS_DIR,
    half: bool = True,
    card: dict | None = None,
    max_mb: float = 25.0,
    sampler_defaults: Mapping[str, Any] | None = None,
) -> Path:
    """Write `out_root/<name>/` (ema.safetensors, config.json, MODEL_CARD.md) from a trained SR or baseline
    checkpoint (folder, run dir or safetensors file). Returns the folder.

    Raises ValueError for a name that is not a plain folder name, an autoencoder (or other non-SR) checkpoint,
    or weights larger than `max_mb` megabytes (checked before anything is written).

    `sampler_defaults` (keys of SAMPLER_DEFAULTS) replace the trained config's `sr.sampler/steps/eta/samples`:
    the inference defaults chosen after training (e.g. from a steps sweep); the weights are unchanged."""
    _check_name(name)
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

    up = load(source)
    with safe_open(str(_weights_file(source)), framework="pt") as f:
        meta = dict(f.metadata() or {})
    meta.update(
        {"format": "pt", "dtype": json.dumps(dtype), "config": json.dumps(info["config"])}
    )  # read_info JSON-decodes metadata values

    folder = Path(out_root) / name
    folder.mkdir(parents=True, exist_ok=True)
    if not _holds(folder / EMA_FILE, state, meta):  # a re-export of the same weights keeps the file's bytes
        with atomic_path(folder / EMA_FILE) as tmp:
            save_file(state, str(tmp), metadata=meta)
    size = (folder / EMA_FILE).stat().st_size
    if size > max_mb * 2**20:  # metadata pushed it over: do not leave it behind
        (folder / EMA_FILE).unlink()
        raise ValueError(f"{name}: {EMA_FILE} is {_fmt_size(size)}, over the {max_mb} MB limit for shipped models")
    out_info = {**info, "exported_from": str(source), "dtype": dtype}
    with atomic_path(folder / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(out_info, indent=2), encoding="utf-8")
    text = _card(
        name, info, source=source, n_params=up.n_params, kind=up.kind, dtype=dtype, size=size, extra=card or {}
    )
    with atomic_path(folder / CARD_FILE) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return folder
