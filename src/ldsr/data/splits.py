"""Train / held-out split rules of docs/DATA_SPLITS.md, decided from a file's path alone.

| data | held-out (test) |
|---|---|
| `mri/brain-tumor-figshare/{0,1,2}/N.jpg` (`figshare_K_NNNN.jpg`) | the last 10 % of each class folder by index |
| `mri/colin27` slices (`..._zNNN.png`; frames z of a NIfTI volume there, axial) | z >= 120 |
| `histology/cmu1-small-region/tiles150` (`cmu1sr_yYYYY_xXXXX.png`) | y >= 2400 |
| `histology/kather2016` (`image_I_label_K.png`, fixtures `kather2016_I_label_K_150.png`) | index >= 80 |

For the figshare set "the last 10 %" is taken as the last ceil(0.1 n) files of each class folder of the full
release (n = 930, 705, 1115), which gives the fixed index cut-offs in `FIGSHARE_TEST_FROM`; a fixed cut-off
keeps a file's split independent of which other files happen to be listed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Literal, TypeVar

Split = Literal["train", "test"]
SplitChoice = Literal["all", "train", "test"]

# class folder -> first held-out index (sorted numerically; the last ceil(10 %) of the class).
FIGSHARE_TEST_FROM: dict[int, int] = {0: 1748, 1: 638, 2: 2639}
COLIN27_TEST_FROM_Z = 120
CMU1_TEST_FROM_Y = 2400
KATHER2016_TEST_FROM = 80

_FIGSHARE_FIXTURE = re.compile(r"^figshare_(\d+)_(\d+)$")
_COLIN_Z = re.compile(r"_z(\d+)$")
_CMU1 = re.compile(r"^cmu1sr_y(\d+)_x(\d+)$")
_KATHER_SRC = re.compile(r"^image_(\d+)_label_\d+$")
_KATHER_FIXTURE = re.compile(r"^kather2016_(\d+)_label_\d+(?:_\d+)?$")

P = TypeVar("P", str, Path, PurePath)


def _stem(p: PurePath) -> str:
    name = p.name
    for suffix in (".nii.gz",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return p.stem


def _figshare(parts: tuple[str, ...], stem: str) -> Split | None:
    m = _FIGSHARE_FIXTURE.match(stem)
    if m:
        cls, idx = int(m.group(1)), int(m.group(2))
    elif "brain-tumor-figshare" in parts and len(parts) >= 2 and parts[-2].isdigit() and stem.isdigit():
        cls, idx = int(parts[-2]), int(stem)
    else:
        return None
    if cls not in FIGSHARE_TEST_FROM:
        return None
    return "test" if idx >= FIGSHARE_TEST_FROM[cls] else "train"


def split_of(path: str | os.PathLike[str], frame: int | None = None) -> Split | None:
    """'train' or 'test' for a file of a known data set (by folder and file name), None for any other file.

    `frame` is the axial slice index of a multi-frame volume; it decides the split of a Colin27 volume, whose
    slices are the same anatomy as the `_zNNN` PNG slices (None: the volume as a whole, undecided)."""
    p = PurePath(os.fspath(path))
    parts = tuple(p.parts)
    stem = _stem(p)
    lower_parts = tuple(s.lower() for s in parts)

    s = _figshare(lower_parts, stem.lower())
    if s is not None:
        return s
    if any("colin27" in part for part in lower_parts):
        m = _COLIN_Z.search(stem)
        if m:
            return "test" if int(m.group(1)) >= COLIN27_TEST_FROM_Z else "train"
        if frame is not None and _is_volume(p) and "colin27" in lower_parts[:-1]:  # the full volume's own z
            return "test" if frame >= COLIN27_TEST_FROM_Z else "train"
    m = _CMU1.match(stem)
    if m:
        return "test" if int(m.group(1)) >= CMU1_TEST_FROM_Y else "train"
    m = _KATHER_FIXTURE.match(stem)
    if m is None and "kather2016" in lower_parts:
        m = _KATHER_SRC.match(stem)
    if m:
        return "test" if int(m.group(1)) >= KATHER2016_TEST_FROM else "train"
    return None


def _is_volume(p: PurePath) -> bool:
    return p.name.lower().endswith((".nii", ".nii.gz"))


def filter_split(paths: Iterable[P], split: SplitChoice) -> list[P]:
    """Keep the paths of `split`; files of no known data set are kept whatever the split ('all' keeps all)."""
    if split not in ("all", "train", "test"):
        raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
    items = list(paths)
    if split == "all":
        return items
    return [p for p in items if split_of(p) in (None, split)]
