"""Train / held-out split rules as data: a rule file per dataset, used only when a config names it.

A user's folder without rules is used whole (every file is in every split). The project's own datasets have
rule files in `experiments/splits/` (figshare, Colin27, CMU-1, Kather 2016; docs/DATA_SPLITS.md), named by the
experiment configs as `data.split_rules: [experiments/splits/figshare.yaml, ...]`. A rule file (YAML or JSON)::

    dataset: cmu1                       # a name, for messages
    rules:
      - match: '(?:^|/)cmu1sr_y(?P<index>\\d+)_x\\d+$'   # regex searched in the lower-case POSIX path, no suffix
        test_from: 2400                 # index >= 2400 -> "test", else "train"
      - match: '(?:^|/)(?P<group>\\d+)/(?P<index>\\d+)$'
        test_from: {0: 1748, 1: 638}    # a threshold per `group` (a group not listed: the rule does not apply)
      - match: '(?:^|/)colin27/[^/]+$'
        volume: true                    # a multi-frame volume: the frame (slice) index is the index
        test_from: 120

The first rule whose pattern matches (and applies) decides; a file no rule decides belongs to no split (kept).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar

Split = Literal["train", "test"]
SplitChoice = Literal["all", "train", "test"]

P = TypeVar("P", str, Path, PurePath)

_VOLUME_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class SplitRule:
    """One pattern: `index >= test_from` (per `group` when a mapping) is held out."""

    pattern: re.Pattern[str]
    test_from: int | Mapping[str, int]
    volume: bool = False  # the index is a volume's frame, not a number in the name

    def split(self, key: str, frame: int | None, is_volume: bool) -> Split | None:
        m = self.pattern.search(key)
        if m is None:
            return None
        if self.volume:
            if frame is None or not is_volume:
                return None
            index = frame
        else:
            index = int(m.group("index"))
        if isinstance(self.test_from, Mapping):
            group = m.groupdict().get("group")
            if group is None or str(int(group)) not in self.test_from:
                return None
            threshold = self.test_from[str(int(group))]
        else:
            threshold = self.test_from
        return "test" if index >= threshold else "train"


@dataclass(frozen=True)
class SplitRules:
    """The rules of one or more datasets (the files they came from, for messages)."""

    rules: tuple[SplitRule, ...] = ()
    sources: tuple[str, ...] = ()

    def split_of(self, path: str | os.PathLike[str], frame: int | None = None) -> Split | None:
        """'train' / 'test' for a file a rule decides, None for any other file (or a volume as a whole)."""
        p = PurePath(os.fspath(path))
        name = p.name.lower()
        is_volume = name.endswith(_VOLUME_SUFFIXES)
        stem = next((name[: -len(s)] for s in _VOLUME_SUFFIXES if name.endswith(s)), PurePath(name).stem)
        key = PurePath(*[s.lower() for s in p.parts[:-1]], stem).as_posix()
        for rule in self.rules:
            s = rule.split(key, frame, is_volume)
            if s is not None:
                return s
        return None


NO_RULES = SplitRules()


def _rule(raw: Any, where: str) -> SplitRule:
    if not isinstance(raw, Mapping) or set(raw) - {"match", "test_from", "volume"} or "match" not in raw:
        raise ValueError(f"{where}: a rule is a mapping with 'match', 'test_from' and optional 'volume'")
    try:
        pattern = re.compile(str(raw["match"]))
    except re.error as e:
        raise ValueError(f"{where}: bad 'match' pattern {raw['match']!r}: {e}") from None
    volume = bool(raw.get("volume", False))
    if not volume and "index" not in pattern.groupindex:
        raise ValueError(f"{where}: pattern {pattern.pattern!r} needs a named group 'index' (or volume: true)")
    t = raw.get("test_from")
    if isinstance(t, Mapping):
        if "group" not in pattern.groupindex or not all(isinstance(v, int) for v in t.values()):
            raise ValueError(f"{where}: a per-group test_from needs a group 'group' and integer thresholds")
        test_from: int | Mapping[str, int] = {str(int(k)): int(v) for k, v in t.items()}
    elif isinstance(t, int) and not isinstance(t, bool):
        test_from = t
    else:
        raise ValueError(f"{where}: test_from must be an integer or a mapping group -> integer, got {t!r}")
    return SplitRule(pattern, test_from, volume)


def load_split_rules(files: Sequence[str | os.PathLike[str]]) -> SplitRules:
    """Read rule files (YAML or JSON, see the module docstring); no files: no rules (every folder used whole)."""
    import yaml

    rules: list[SplitRule] = []
    for f in files:
        path = Path(f)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"{path}: cannot read split rules ({e.strerror or e})") from None
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(data, Mapping) or not isinstance(data.get("rules"), list) or not data["rules"]:
            raise ValueError(f"{path}: split rules need a non-empty 'rules' list")
        rules += [_rule(r, f"{path}: rule {i + 1}") for i, r in enumerate(data["rules"])]
    return SplitRules(tuple(rules), tuple(str(f) for f in files))


def split_of(path: str | os.PathLike[str], frame: int | None = None, rules: SplitRules = NO_RULES) -> Split | None:
    """'train' or 'test' for a file `rules` decide (by folder and file name), None for any other file.

    `frame` is the slice index of a multi-frame volume; a `volume: true` rule decides by it (None: the volume as a
    whole, undecided)."""
    return rules.split_of(path, frame)


def filter_split(paths: Iterable[P], split: SplitChoice, rules: SplitRules = NO_RULES) -> list[P]:
    """Keep the paths of `split`; files no rule decides are kept whatever the split ('all' keeps all)."""
    if split not in ("all", "train", "test"):
        raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
    items = list(paths)
    if split == "all":
        return items
    return [p for p in items if rules.split_of(p) in (None, split)]
