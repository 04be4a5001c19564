"""Checkpoints: folders of safetensors weights + JSON config, written atomically, read without pickle.

Layout of a run::

    run_dir/checkpoints/step_000100/
        model.safetensors   raw weights (metadata: config, model_config, ldsr_version, step)
        ema.safetensors     EMA weights (= the raw weights when a run keeps no EMA); what `upscale` loads
        config.json         {"config": RunConfig dict, "model_config": ..., "ldsr_version": ..., "step": ...}
        state/              training state for --resume: <name>.json + <name>.safetensors per entry
    run_dir/checkpoints/latest   text file with the name of the newest checkpoint folder

A checkpoint folder is first written under a hidden temporary name beside its final name and renamed when
complete, so a crash never leaves a partial `step_*` folder; `latest` is replaced atomically afterwards.
Arbitrary nested state (optimizer state dicts, RNG states) is stored as JSON structure + a flat safetensors
file of its tensors (`save_tree` / `load_tree`); nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ldsr import __version__
from ldsr.io import atomic_path

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
CONFIG_FILE = "config.json"
STATE_DIR = "state"
LATEST_FILE = "latest"
CHECKPOINTS_DIR = "checkpoints"


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


# ----------------------------------------------------------------------------------------------------------
# tensors


def _plain_state(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies: safetensors refuses shared storage (tied weights) and views."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k] = v.detach().to("cpu", copy=True).contiguous()
    return out


def _state_of(m: nn.Module | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    return m.state_dict() if isinstance(m, nn.Module) else m


def save_weights(
    path: str | os.PathLike[str],
    state: nn.Module | Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """One safetensors file (atomic), tied / shared tensors stored as separate copies."""
    meta = {"format": "pt", **(metadata or {})}
    with atomic_path(path) as tmp:
        save_file(_plain_state(_state_of(state)), str(tmp), metadata=dict(meta))


def _metadata(
    config: Mapping[str, Any], model_config: Mapping[str, Any] | None, step: int, extra: Mapping[str, Any] | None
) -> dict[str, str]:
    meta = {
        "config": json.dumps(config, sort_keys=False),
        "ldsr_version": __version__,
        "step": str(int(step)),
    }
    if model_config is not None:
        meta["model_config"] = json.dumps(model_config)
    for k, v in (extra or {}).items():
        meta[k] = json.dumps(v)
    return meta


# ----------------------------------------------------------------------------------------------------------
# nested state <-> JSON + safetensors


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy arrays / scalars
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint state")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
        if "__ndarray__" in obj:
            import numpy as np

            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        raise ValueError(f"unexpected object in checkpoint state: {sorted(obj)}")
    return obj


def save_tree(folder: str | os.PathLike[str], name: str, tree: Any) -> None:
    """Store nested dicts / lists / tuples / numbers / strings / tensors / numpy arrays as
    `folder/name.json` + `folder/name.safetensors` (atomic files; no pickle)."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(tree, tensors)
    with atomic_path(folder / f"{name}.safetensors") as tmp:
        save_file(_plain_state(tensors), str(tmp))
    with atomic_path(folder / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(structure), encoding="utf-8")


def load_tree(folder: str | os.PathLike[str], name: str, device: str | torch.device = "cpu") -> Any:
    """Inverse of `save_tree`."""
    folder = Path(folder)
    structure = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    tensors = load_file(str(folder / f"{name}.safetensors"), device=str(device))
    return _decode(structure, tensors)


# ----------------------------------------------------------------------------------------------------------
# checkpoint folders


def save_checkpoint(
    folder: str | os.PathLike[str],
    *,
    model: nn.Module | Mapping[str, torch.Tensor],
    ema: nn.Module | Mapping[str, torch.Tensor] | None,
    config: Mapping[str, Any],
    step: int,
    extra_state: Mapping[str, Any] | None = None,
    model_config: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    update_latest: bool = True,
) -> Path:
    """Write checkpoint folder `folder` atomically (temporary sibling folder, then rename); replace an
    existing folder of that name. `extra_state` maps names to nested state saved under `state/` (see
    `save_tree`). `metadata` adds JSON values to config.json and the safetensors metadata. With
    `update_latest`, `folder.parent/latest` then names this folder. Returns the folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    meta = _metadata(config, model_config, step, metadata)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        save_weights(tmp / MODEL_FILE, model, meta)
        save_weights(tmp / EMA_FILE, ema if ema is not None else model, meta)
        info: dict[str, Any] = {
            "config": dict(config),
            "model_config": None if model_config is None else dict(model_config),
            "ldsr_version": __version__,
            "step": int(step),
            "ema": ema is not None,
            **dict(metadata or {}),
        }
        with atomic_path(tmp / CONFIG_FILE) as f:
            f.write_text(json.dumps(info, indent=2), encoding="utf-8")
        if extra_state:
            for name, tree in extra_state.items():
                save_tree(tmp / STATE_DIR, name, tree)
        old: Path | None = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            os.replace(folder, old / folder.name)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if update_latest:
        with atomic_path(folder.parent / LATEST_FILE) as f:
            f.write_text(folder.name + "\n", encoding="utf-8")
    return folder


def latest_checkpoint(path: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint folder of a run dir or its checkpoints/ dir (from `latest`), or None."""
    p = Path(path)
    for d in (p, p / CHECKPOINTS_DIR):
        f = d / LATEST_FILE
        if f.is_file():
            target = d / f.read_text(encoding="utf-8").strip()
            if (target / CONFIG_FILE).is_file():
                return target
    return None


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint folder, a run dir / checkpoints dir (its latest checkpoint) or a .safetensors file."""
    p = Path(path)
    if p.is_file():
        if p.suffix != ".safetensors" and p.name != CONFIG_FILE:
            raise ValueError(f"{p}: not a checkpoint (expected a .safetensors file or a checkpoint folder)")
        return p
    if (p / CONFIG_FILE).is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        raise ValueError(f"{p}: not a checkpoint folder (no {CONFIG_FILE}) and no '{LATEST_FILE}' pointer in it")
    return latest


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """config.json of a checkpoint (or the same fields from a safetensors file's metadata)."""
    p = resolve_checkpoint(path)
    if p.is_dir():
        p = p / CONFIG_FILE
    if p.name == CONFIG_FILE:
        return json.loads(p.read_text(encoding="utf-8"))
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise ValueError(f"{p}: safetensors file has no ldsr config in its metadata")
    info: dict[str, Any] = {}
    for k, v in meta.items():
        if k == "format":
            continue
        if k == "ldsr_version":
            info[k] = v
        else:
            info[k] = json.loads(v)
    info["step"] = int(info.get("step", 0))
    return info


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The resolved run config (a plain dict; `ldsr.config.config_from_dict` types it) of a checkpoint."""
    return dict(read_info(path)["config"])


def load_weights(
    path_or_folder: str | os.PathLike[str], *, ema: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, run config dict) of a checkpoint folder / run dir / safetensors file. `ema` picks
    ema.safetensors (falling back to model.safetensors when absent), else model.safetensors."""
    p = resolve_checkpoint(path_or_folder)
    if p.is_dir():
        f = p / (EMA_FILE if ema else MODEL_FILE)
        if not f.is_file():
            f = p / MODEL_FILE
        if not f.is_file():
            raise ValueError(f"{p}: checkpoint folder has no {MODEL_FILE}")
    elif p.name == CONFIG_FILE:
        return load_weights(p.parent, ema=ema)
    else:
        f = p
    return load_file(str(f)), read_config(f)


def load_state(folder: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, Any]:
    """Every `state/` entry of a checkpoint folder: {name: tree}."""
    d = Path(folder) / STATE_DIR
    if not d.is_dir():
        raise ValueError(f"{folder}: checkpoint has no training state (state/): it cannot be resumed")
    return {p.stem: load_tree(d, p.stem, device) for p in sorted(d.glob("*.json"))}


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    d = Path(run_dir) / CHECKPOINTS_DIR
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("step_*") if (p / CONFIG_FILE).is_file())
