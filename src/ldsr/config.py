"""Typed run configurations: YAML -> nested dataclasses, unknown keys are errors, `a.b=value` overrides.

A run config file looks like (see ARCHITECTURE.md and configs/)::

    inherit: base.yaml        # optional: a file (relative to this one) whose keys this file overrides
    task: sr
    channels: 1
    scale: 4
    data: {...}                # ldsr.data.datasets.DataConfig
    train: {...}               # ldsr.training.loop.TrainConfig
    sr: {...}                  # ldsr.models.sr.SRConfig (the section named by `task`)

The model sections (`autoencoder`, `sr`, `baseline`) are typed by their own modules' dataclasses; they are
imported lazily in `RunConfig.resolve()` so that this module imports even while one of them is missing.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from ldsr.data.config import DataConfig
from ldsr.training.config import TrainConfig

T = TypeVar("T")

Task = Literal["autoencoder", "sr", "baseline", "generate", "colorize"]

# task / section name -> (module, config class); the section a task trains has the task's name.
SECTIONS: dict[str, tuple[str, str]] = {
    "autoencoder": ("ldsr.models.autoencoder", "AutoencoderConfig"),
    "sr": ("ldsr.models.sr", "SRConfig"),
    "baseline": ("ldsr.models.baselines", "BaselineConfig"),
    "generate": ("ldsr.models.generation", "GenerationConfig"),
    "colorize": ("ldsr.models.colorize", "ColorizeConfig"),
}
SCALES = (2, 3, 4, 8)


# ----------------------------------------------------------------------------------------------------------
# generic dict -> dataclass


def _where(path: str) -> str:
    return f"'{path}'" if path else "the config"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Check / convert one value against a type annotation; raise ValueError naming `path` on a mismatch."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin is Literal:
        return _convert_literal(tp, value, path)
    if origin is Union or isinstance(tp, types.UnionType):
        return _convert_union(tp, value, path)
    if value is None:
        raise ValueError(f"{_where(path)}: must not be null (expected {_type_name(tp)})")
    if origin in (list, Sequence) or tp is list:
        return _convert_list(tp, value, path)
    if origin is tuple or tp is tuple:
        return _convert_tuple(tp, value, path)
    if origin in (dict, Mapping) or tp is dict:
        return _convert_dict(tp, value, path)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return value if isinstance(value, tp) else from_dict(tp, value, path)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _convert_enum(tp, value, path)
    return _convert_scalar(tp, value, path)


def _convert_literal(tp: Any, value: Any, path: str) -> Any:
    args = typing.get_args(tp)
    for a in args:
        # `1 == True` in Python: compare types too so that `channels: true` is not accepted as 1.
        if value == a and type(value) is type(a):
            return a
    raise ValueError(f"{_where(path)}: expected one of {list(args)}, got {value!r}")


def _convert_union(tp: Any, value: Any, path: str) -> Any:
    """The first member type of an `X | Y | None` annotation that accepts the value (None only if allowed)."""
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise ValueError(f"{_where(path)}: must not be null (expected {_type_name(tp)})")
    errors = []
    for a in args:
        if a is type(None):
            continue
        try:
            return _convert(a, value, path)
        except ValueError as e:
            errors.append(str(e))
    raise ValueError(
        errors[0] if len(errors) == 1 else f"{_where(path)}: {value!r} matches no type of {_type_name(tp)}"
    )


def _convert_list(tp: Any, value: Any, path: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{_where(path)}: expected a list, got {value!r}")
    args = typing.get_args(tp)
    item = args[0] if args else Any
    return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]


def _convert_tuple(tp: Any, value: Any, path: str) -> tuple[Any, ...]:
    """`tuple[X, ...]` (any length), `tuple[X, Y]` (exactly those) or a bare `tuple`; YAML gives a list."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{_where(path)}: expected a list, got {value!r}")
    args = typing.get_args(tp)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if args and len(args) != len(value):
        raise ValueError(f"{_where(path)}: expected {len(args)} values, got {len(value)}: {value!r}")
    if not args:
        return tuple(value)
    return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


def _convert_dict(tp: Any, value: Any, path: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{_where(path)}: expected a mapping, got {value!r}")
    args = typing.get_args(tp)
    kt, vt = args if args else (Any, Any)
    return {_convert(kt, k, f"{path}.{k}"): _convert(vt, v, f"{path}.{k}") for k, v in value.items()}


def _convert_enum(tp: type[enum.Enum], value: Any, path: str) -> enum.Enum:
    try:
        return tp(value)
    except ValueError:
        raise ValueError(f"{_where(path)}: expected one of {[m.value for m in tp]}, got {value!r}") from None


def _to_bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"{_where(path)}: expected true or false, got {value!r}")


def _to_int(value: Any, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{_where(path)}: expected an integer, got {value!r}")


def _to_float(value: Any, path: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    # YAML 1.1 reads `1e-4` (no dot) as a string.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"{_where(path)}: expected a number, got {value!r}")


def _to_str(value: Any, path: str) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"{_where(path)}: expected a string, got {value!r}")


def _to_path(value: Any, path: str) -> Path:
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise ValueError(f"{_where(path)}: expected a path, got {value!r}")


# scalar annotation -> its checker / converter (bool is not an int here, and an int is not a bool)
_SCALARS: dict[type, Callable[[Any, str], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
    Path: _to_path,
}


def _convert_scalar(tp: Any, value: Any, path: str) -> Any:
    """bool / int / float / str / Path by their rules, any other class by isinstance."""
    if isinstance(tp, type):
        convert = _SCALARS.get(tp)
        if convert is not None:
            return convert(value, path)
        if isinstance(value, tp):
            return value
        raise ValueError(f"{_where(path)}: expected {_type_name(tp)}, got {value!r}")
    raise TypeError(f"{_where(path)}: unsupported annotation {tp!r} in a config dataclass")


def from_dict(cls: type[T], d: Mapping[str, Any] | None, path: str = "") -> T:
    """Build dataclass `cls` from a mapping: every key must be a field (else ValueError naming the key path and
    the allowed keys), every value must match its annotation (else ValueError); missing keys take defaults."""
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass")
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise ValueError(f"{_where(path)}: expected a mapping of {cls.__name__} fields, got {d!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise ValueError(f"unknown config key '{key_path}'; allowed keys: {', '.join(sorted(fields))}")
        kwargs[key] = _convert(hints[key], value, key_path)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = f" in '{path}'" if path else ""
        raise ValueError(f"missing config key(s){where}: {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ValueError as e:
        # __post_init__ validation: make sure the message says where.
        msg = str(e)
        raise ValueError(msg if not path or path in msg else f"'{path}': {msg}") from None


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config -> plain dict of YAML/JSON types (tuples become lists); `from_dict` inverts it."""
    out = _plain(cfg)
    if not isinstance(out, dict):
        raise TypeError(f"expected a dataclass config, got {type(cfg).__name__}")
    # Sections that are not present stay out of the file.
    return {k: v for k, v in out.items() if not (k in SECTIONS and v is None)}


class _Loader(yaml.SafeLoader):
    """safe_load with YAML 1.2 booleans: only true / false. YAML 1.1 also reads yes / no / on / off as booleans,
    which would turn `train.precision: no` (accelerate's name for full precision) into False."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


# ----------------------------------------------------------------------------------------------------------
# the run config


def section_class(name: str) -> type:
    """The dataclass of model section `name` (lazy import of its module)."""
    mod_name, cls_name = SECTIONS[name]
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name == mod_name:
            raise ValueError(f"config section '{name}' needs module {mod_name}, which is not available") from e
        raise
    return getattr(mod, cls_name)


@dataclass
class RunConfig:
    """Everything one training run needs; stored resolved in every checkpoint."""

    task: Task
    channels: Literal[1, 3] = 1
    scale: int = 4
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Typed by their modules' dataclasses after `resolve()`; a raw mapping (or None) before.
    autoencoder: Any = None
    sr: Any = None
    baseline: Any = None
    generate: Any = None
    colorize: Any = None

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"'scale': expected one of {list(SCALES)}, got {self.scale}")

    def resolve(self) -> RunConfig:
        """Convert every present model section to its dataclass (unknown keys error); the task's own
        section is created with its defaults when absent. Returns self."""
        for name in SECTIONS:
            value = getattr(self, name)
            if value is None and name != self.task:
                continue
            cls = section_class(name)
            if not isinstance(value, cls):
                section: Any = from_dict(cls, value, name)
                check = getattr(section, "validate", None)
                if callable(check):  # e.g. SRConfig.validate(): choices checked at load time, not at build time
                    check()
                setattr(self, name, section)
        return self

    @property
    def model_config(self) -> Any:
        """The section of the task being trained (resolved)."""
        return getattr(self.resolve(), self.task)


def config_from_dict(d: Mapping[str, Any], *, resolve: bool = True) -> RunConfig:
    """A RunConfig from a plain dict (e.g. the one stored in a checkpoint)."""
    cfg = from_dict(RunConfig, d)
    return cfg.resolve() if resolve else cfg


# ----------------------------------------------------------------------------------------------------------
# YAML files, inheritance, overrides


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        raise ValueError(f"{path}: config inheritance cycle: {' -> '.join(str(p) for p in (*chain, path))}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: config file not found") from None
    try:
        d = _load_yaml(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a config file must be a mapping, got {type(d).__name__}")
    parent = d.pop("inherit", None)
    if parent is None:
        return d
    if not isinstance(parent, str):
        raise ValueError(f"{path}: 'inherit' must be a file name, got {parent!r}")
    base = _read_yaml(path.parent / parent, (*chain, path))
    return _deep_merge(base, d)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.lr=1e-4` -> (['train', 'lr'], 1e-4); the value is parsed by yaml.safe_load."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
    parts = key.split(".")
    if any(not p for p in parts):
        raise ValueError(f"override {item!r}: empty component in key {key!r}")
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ValueError(f"override {item!r}: cannot parse value: {e}") from None
    return parts, value


def apply_overrides(d: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides to a raw config dict (unknown keys are caught later by `from_dict`)."""
    out = json.loads(json.dumps(d))  # deep copy of plain YAML data
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for i, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            elif not isinstance(nxt, dict):
                raise ValueError(f"override {item!r}: '{'.'.join(parts[: i + 1])}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _resolve_path(p: str, base: Path) -> str:
    """A relative input path: relative to the config file's folder if it exists there, else to the cwd."""
    path = Path(p).expanduser()
    if path.is_absolute():
        return str(path)
    if (base / path).exists():
        return str((base / path).resolve())
    if path.exists():
        return str(path.resolve())
    return p


def _resolve_input_paths(d: dict[str, Any], base: Path) -> None:
    data = d.get("data")
    if isinstance(data, dict):
        for key in ("train", "val", "split_rules"):
            if isinstance(data.get(key), list):
                data[key] = [_resolve_path(p, base) if isinstance(p, str) else p for p in data[key]]
        if isinstance(data.get("paired"), str):
            data["paired"] = _resolve_path(data["paired"], base)
    inputs = (("sr", "autoencoder"), ("sr", "init_from"), ("baseline", "init_from"), ("baseline", "vgg_weights"),
              ("generate", "autoencoder"), ("colorize", "autoencoder"), ("colorize", "init_from"))  # fmt: skip
    for section, key in inputs:
        sec = d.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str):
            sec[key] = _resolve_path(sec[key], base)


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = (), *, resolve: bool = True) -> RunConfig:
    """Read a YAML run config (following `inherit:`), apply `key=value` overrides, check every key and type.

    Relative input paths (data.train / data.val / data.split_rules / data.paired / sr.autoencoder / sr.init_from /
    baseline.init_from / baseline.vgg_weights) are made absolute: relative to the config file's folder when they
    exist there, else to the current directory.
    """
    path = Path(path)
    d = apply_overrides(_read_yaml(path), overrides)
    _resolve_input_paths(d, path.resolve().parent)
    if "task" not in d:
        raise ValueError(f"{path}: missing 'task' (one of {list(typing.get_args(Task))})")
    try:
        return config_from_dict(d, resolve=resolve)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
