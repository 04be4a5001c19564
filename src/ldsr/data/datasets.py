"""Training and validation data: HR folders degraded on the fly, or paired folders written by `ldsr degrade`.

Samples are addressed by a global sample number `k` (0, 1, 2, ... over the whole run), not by file index:
file = permutation(epoch)[k mod n] with epoch = k // n, and every random choice of sample k (crop, flips,
degradation) comes from `rng_for(seed, f"sample/{k}")`. A run that resumes at step s therefore sees exactly
the samples it would have seen without stopping (`SampleStream(start=s * batch)`), with any `num_workers`.

Items are `{"hr": (C, H, W), "lr": (C, H/s, W/s), "name": str}`, tensors float32 in [-1, 1]. With
`data.device_degrade` the HR-folder dataset leaves out "lr" and adds `"seed"` (a per-sample int drawn from
the sample's generator) and `"bits"` (8 or 16); the training loop then makes the LR batch on its device with
`ldsr.data.degrade_torch.degrade_batch(hr, cfg, generator_for(batch["seed"]), scale=..., bit_depth=batch["bits"])`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ldsr.data.config import DataConfig
from ldsr.data.splits import NO_RULES, SplitChoice, SplitRules, filter_split, load_split_rules, split_of

if TYPE_CHECKING:
    from ldsr.data.degrade import DegradeConfig

Item = dict[str, Any]
MULTI_FRAME_SUFFIXES = (".dcm", ".nii", ".nii.gz", ".tif", ".tiff")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601, as ldsr.evaluation.metrics.rgb_to_y


# ----------------------------------------------------------------------------------------------------------
# array helpers


def to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, 1|3) -> (H, W, channels): grey -> RGB repeats, RGB -> grey is BT.601 luminance."""
    c = arr.shape[2]
    if c == channels:
        return arr
    if c == 1 and channels == 3:
        return np.repeat(arr, 3, axis=2)
    if c == 3 and channels == 1:
        return (arr.astype(np.float32) @ LUMA)[:, :, None]
    raise ValueError(f"cannot convert {c} channels to {channels}")


def _hwc_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W, C) float in [0, 1] -> (C, H, W) float32 in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1)
    return t * 2.0 - 1.0


def _augment(arrays: list[np.ndarray], rng: np.random.Generator, flips: bool, rot90: bool) -> list[np.ndarray]:
    """The same flips / rotation on every array (HR and LR of a pair)."""
    if flips:
        if rng.random() < 0.5:
            arrays = [a[:, ::-1] for a in arrays]
        if rng.random() < 0.5:
            arrays = [a[::-1, :] for a in arrays]
    if rot90:
        k = int(rng.integers(0, 4))
        if k:
            arrays = [np.rot90(a, k, axes=(0, 1)) for a in arrays]
    return arrays


def _encode(arr: np.ndarray, bit_depth: int) -> np.ndarray:
    """[0, 1] floats -> the compact cache type (exact for 8/16-bit sources)."""
    if bit_depth <= 8:
        return np.round(arr * 255.0).astype(np.uint8)
    if bit_depth <= 16:
        return np.round(arr * 65535.0).astype(np.uint16)
    return arr.astype(np.float32)


def _decode(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    return arr


@dataclass(frozen=True)
class Source:
    """One 2-D image: a file and, for multi-frame files, the frame index (None: the file's default)."""

    path: Path
    frame: int | None = None

    @property
    def name(self) -> str:
        return self.path.name if self.frame is None else f"{self.path.name}#{self.frame}"


def list_sources(
    folders: list[str],
    split: SplitChoice,
    *,
    frames: Literal["middle", "all"] = "middle",
    nifti_axis: int = 2,
    rules: SplitRules = NO_RULES,
) -> list[Source]:
    """Every image under `folders` (recursive), filtered by split (`rules`; none: all kept), frames if asked."""
    from ldsr.io import list_images, read_frames

    paths: list[Path] = []
    for folder in folders:
        paths.extend(list_images(folder))
    paths = filter_split(sorted(dict.fromkeys(paths)), split, rules)
    out: list[Source] = []
    for p in paths:
        if p.name.lower().endswith(MULTI_FRAME_SUFFIXES) and (frames == "all" or split_of(p, 0, rules) is not None):
            # A volume whose split is decided per slice (Colin27) is checked frame by frame, also for "middle".
            n = len(read_frames(p, axis=nifti_axis))
            picked = range(n) if frames == "all" else [n // 2]
            for i in picked:
                if split == "all" or split_of(p, i, rules) in (None, split):
                    out.append(Source(p, i) if frames == "all" and n > 1 else Source(p))
        else:
            out.append(Source(p))
    return out


class _ImageCache:
    """Decoded images converted to the model's channels, stored compactly, bounded in size."""

    def __init__(self, channels: int, enabled: bool, max_mb: int, nifti_axis: int, resize: int = 0) -> None:
        self.channels = channels
        self.resize = resize
        self.enabled = enabled
        self.max_bytes = max_mb * 1024 * 1024
        self.nifti_axis = nifti_axis
        self.store: dict[Source, np.ndarray] = {}
        self.bits: dict[Source, int] = {}
        self.nbytes = 0

    def get(self, src: Source) -> tuple[np.ndarray, int]:
        """(H, W, channels) float32 in [0, 1] and the source bit depth (8 or 16 for the degradation)."""
        hit = self.store.get(src)
        if hit is not None:
            return _decode(hit), self.bits[src]
        from ldsr.io import read_image

        arr, meta = read_image(src.path, frame=src.frame, axis=self.nifti_axis)
        arr = to_channels(arr, self.channels)
        if self.resize:
            arr = resize_shorter_side(arr, self.resize)
        bits = int(meta.bit_depth)
        if self.enabled:
            enc = _encode(arr, bits)
            if self.nbytes + enc.nbytes <= self.max_bytes:
                self.store[src] = enc
                self.bits[src] = bits
                self.nbytes += enc.nbytes
            arr = _decode(enc) if bits <= 16 else arr
        return arr, bits


def resize_shorter_side(arr: np.ndarray, side: int) -> np.ndarray:
    """(H, W, C) in [0, 1] -> MATLAB-bicubic resize whose shorter side is `side` (aspect kept), clipped to [0, 1]."""
    from ldsr.data.resize import imresize

    h, w = arr.shape[:2]
    if min(h, w) == side:
        return arr
    r = side / min(h, w)
    size = (side, max(1, round(w * r))) if h <= w else (max(1, round(h * r)), side)
    return np.clip(imresize(arr.astype(np.float32), size=size), 0.0, 1.0)


def _degrade_bits(bits: int) -> Literal[8, 16]:
    return 16 if bits > 8 else 8


def _check_crop(arr: np.ndarray, size: int, path: Path, what: str) -> None:
    from ldsr.io import ImageError

    h, w = arr.shape[:2]
    if h < size or w < size:
        raise ImageError(path, f"is {h}x{w} pixels, smaller than {what} {size}; remove it or lower {what}")


# ----------------------------------------------------------------------------------------------------------
# datasets


class _StreamDataset(Dataset[Item]):
    """Map-style dataset indexed by the global sample number k (see module doc)."""

    def __init__(self, n: int, seed: int) -> None:
        if n == 0:
            raise ValueError("no training images found")
        self.n = n
        self.seed = seed
        self._perm_epoch = -1
        self._perm = np.arange(n)

    def __len__(self) -> int:
        return self.n

    def file_index(self, k: int) -> int:
        from ldsr.data.degrade import rng_for

        epoch, pos = divmod(int(k), self.n)
        if epoch != self._perm_epoch:
            self._perm = rng_for(self.seed, f"epoch/{epoch}").permutation(self.n)
            self._perm_epoch = epoch
        return int(self._perm[pos])

    def rng(self, k: int) -> np.random.Generator:
        from ldsr.data.degrade import rng_for

        return rng_for(self.seed, f"sample/{int(k)}")


class HRFolderDataset(_StreamDataset):
    """Random `hr_size` crops of HR images; LR made on the fly with `ldsr.data.degrade.degrade`."""

    def __init__(
        self,
        sources: list[Source],
        *,
        channels: int,
        scale: int,
        hr_size: int,
        degradation: str | DegradeConfig,
        seed: int,
        flips: bool = True,
        rot90: bool = False,
        cache: bool = True,
        cache_max_mb: int = 2048,
        nifti_axis: int = 2,
        resize: int = 0,
        device_degrade: bool = False,
    ) -> None:
        super().__init__(len(sources), seed)
        if hr_size % scale:
            raise ValueError(f"data.hr_size {hr_size} must be a multiple of the scale {scale}")
        from ldsr.data.degrade import degrade_config

        self.degradation = degrade_config(degradation) if isinstance(degradation, str) else degradation
        if self.degradation.kind == "kspace" and channels != 1:
            raise ValueError(f"the kspace degradation needs 1-channel data, but the model has {channels} channels")
        self.sources = sources
        self.channels, self.scale, self.hr_size = channels, scale, hr_size
        self.device_degrade = device_degrade
        self.flips, self.rot90 = flips, rot90
        self.cache = _ImageCache(channels, cache, cache_max_mb, nifti_axis, resize)

    def __getitem__(self, k: int) -> Item:
        from ldsr.data.degrade import degrade, random_crop

        src = self.sources[self.file_index(k)]
        rng = self.rng(k)
        img, bits = self.cache.get(src)
        _check_crop(img, self.hr_size, src.path, "data.hr_size")
        hr = random_crop(img, self.hr_size, rng)
        (hr,) = _augment([hr], rng, self.flips, self.rot90)
        hr = np.ascontiguousarray(hr)
        if self.device_degrade:
            # The LR is made later on the training device; its randomness comes from this seed.
            seed = int(rng.integers(0, 2**62))
            return {"hr": _hwc_to_tensor(hr), "seed": seed, "bits": _degrade_bits(bits), "name": src.name}
        lr, _ = degrade(hr, self.scale, self.degradation, rng, bit_depth=_degrade_bits(bits))
        return {"hr": _hwc_to_tensor(hr), "lr": _hwc_to_tensor(lr), "name": src.name}


def list_pairs(
    folder: str | os.PathLike[str], split: SplitChoice, rules: SplitRules = NO_RULES
) -> list[tuple[Path, Path]]:
    """(hr, lr) file pairs of an `ldsr degrade` output folder, matched by relative path.

    The split is decided on each pair's original source path (from manifest.jsonl) when known, else on the
    relative name.
    """
    from ldsr.io import list_images

    root = Path(folder)
    hr_dir, lr_dir = root / "hr", root / "lr"
    if not hr_dir.is_dir() or not lr_dir.is_dir():
        raise ValueError(f"{root}: a paired folder needs hr/ and lr/ subfolders (the output of `ldsr degrade`)")
    sources: dict[str, str] = {}
    manifest = root / "manifest.jsonl"
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                if "hr" in rec and "source" in rec:
                    sources[str(rec["hr"])] = str(rec["source"])
    pairs: list[tuple[Path, Path]] = []
    for hr in list_images(hr_dir):
        rel = hr.relative_to(hr_dir)
        lr = lr_dir / rel
        if not lr.is_file():
            raise ValueError(f"{hr}: no matching low-resolution file {lr}")
        pairs.append((hr, lr))
    if split == "all":
        return pairs
    originals = [sources.get(f"hr/{h.relative_to(hr_dir).as_posix()}", str(h)) for h, _ in pairs]
    keep = set(filter_split(originals, split, rules))
    return [(h, lo) for h, lo in pairs if sources.get(f"hr/{h.relative_to(hr_dir).as_posix()}", str(h)) in keep]


class PairedDataset(_StreamDataset):
    """Matching random crops of fixed (hr, lr) pairs: an LR crop of hr_size/s and the HR crop s times it."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        *,
        channels: int,
        scale: int,
        hr_size: int,
        seed: int,
        flips: bool = True,
        rot90: bool = False,
        cache: bool = True,
        cache_max_mb: int = 2048,
    ) -> None:
        super().__init__(len(pairs), seed)
        if hr_size % scale:
            raise ValueError(f"data.hr_size {hr_size} must be a multiple of the scale {scale}")
        self.pairs = pairs
        self.channels, self.scale, self.hr_size = channels, scale, hr_size
        self.flips, self.rot90 = flips, rot90
        self.cache = _ImageCache(channels, cache, cache_max_mb // 2, 2)

    def load_pair(self, i: int) -> tuple[np.ndarray, np.ndarray, str]:
        from ldsr.io import ImageError

        hr_path, lr_path = self.pairs[i]
        hr, _ = self.cache.get(Source(hr_path))
        lr, _ = self.cache.get(Source(lr_path))
        s = self.scale
        if hr.shape[0] != lr.shape[0] * s or hr.shape[1] != lr.shape[1] * s:
            raise ImageError(
                hr_path, f"is {hr.shape[0]}x{hr.shape[1]}, not {s} x its LR {lr_path} ({lr.shape[0]}x{lr.shape[1]})"
            )
        return hr, lr, hr_path.name

    def __getitem__(self, k: int) -> Item:
        i = self.file_index(k)
        rng = self.rng(k)
        hr, lr, name = self.load_pair(i)
        ls = self.hr_size // self.scale
        _check_crop(lr, ls, self.pairs[i][1], "data.hr_size / scale")
        top = int(rng.integers(0, lr.shape[0] - ls + 1))
        left = int(rng.integers(0, lr.shape[1] - ls + 1))
        s = self.scale
        lr_c = lr[top : top + ls, left : left + ls]
        hr_c = hr[top * s : (top + ls) * s, left * s : (left + ls) * s]
        hr_c, lr_c = _augment([hr_c, lr_c], rng, self.flips, self.rot90)
        return {"hr": _hwc_to_tensor(hr_c), "lr": _hwc_to_tensor(lr_c), "name": name}


class ValDataset(Dataset[Item]):
    """Fixed validation items: centre crops, LR from a fixed seed per image; built once, kept in memory."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Item:
        return self.items[i]


def _spread(n: int, count: int) -> list[int]:
    if count >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, count).round().astype(int).tolist()))


def _centre(arr: np.ndarray, size: int) -> tuple[int, int]:
    return (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2


def build_val_dataset(cfg: DataConfig, *, channels: int, scale: int, seed: int) -> ValDataset | None:
    """`val_count` validation items, or None when there are none (val_count 0 or no files).

    Validation LR is always made on the CPU (numpy reference), once, also with `data.device_degrade`.
    """
    from ldsr.data.degrade import degrade, degrade_config, rng_for

    if cfg.val_count == 0:
        return None
    if cfg.hr_size % scale:
        raise ValueError(f"data.hr_size {cfg.hr_size} must be a multiple of the scale {scale}")
    items: list[Item] = []
    if not cfg.val and cfg.paired:
        pairs = list_pairs(cfg.paired, cfg.val_split, load_split_rules(cfg.split_rules))
        ds = (
            PairedDataset(pairs, channels=channels, scale=scale, hr_size=cfg.hr_size, seed=seed, cache=False)
            if pairs
            else None
        )
        for i in _spread(len(pairs), cfg.val_count) if ds else []:
            hr, lr, name = ds.load_pair(i)  # type: ignore[union-attr]
            ls = cfg.hr_size // scale
            _check_crop(lr, ls, pairs[i][1], "data.hr_size / scale")
            top, left = _centre(lr, ls)
            lr_c = lr[top : top + ls, left : left + ls]
            hr_c = hr[top * scale : (top + ls) * scale, left * scale : (left + ls) * scale]
            items.append({"hr": _hwc_to_tensor(hr_c), "lr": _hwc_to_tensor(lr_c), "name": name})
        return ValDataset(items) if items else None
    rules = load_split_rules(cfg.split_rules)
    sources = list_sources(
        cfg.val or cfg.train, cfg.val_split, frames=cfg.frames, nifti_axis=cfg.nifti_axis, rules=rules
    )
    cache = _ImageCache(channels, False, 0, cfg.nifti_axis, cfg.resize)
    preset = (
        degrade_config(cfg.val_degradation)
        if cfg.val_degradation
        else degrade_config(cfg.degradation, cfg.degradation_weights)
    )
    for i in _spread(len(sources), cfg.val_count):
        src = sources[i]
        img, bits = cache.get(src)
        _check_crop(img, cfg.hr_size, src.path, "data.hr_size")
        top, left = _centre(img, cfg.hr_size)
        hr = np.ascontiguousarray(img[top : top + cfg.hr_size, left : left + cfg.hr_size])
        lr, _ = degrade(
            hr, scale, preset, rng_for(seed, f"val/{src.path.as_posix()}/{src.frame}"), bit_depth=_degrade_bits(bits)
        )
        items.append({"hr": _hwc_to_tensor(hr), "lr": _hwc_to_tensor(lr), "name": src.name})
    return ValDataset(items) if items else None


def build_train_dataset(cfg: DataConfig, *, channels: int, scale: int, seed: int) -> _StreamDataset:
    """The training dataset of a run: paired if `cfg.paired`, else HR folders degraded on the fly."""
    common = dict(
        channels=channels, scale=scale, hr_size=cfg.hr_size, seed=seed, flips=cfg.flips, rot90=cfg.rot90,
        cache=cfg.cache, cache_max_mb=cfg.cache_max_mb,
    )  # fmt: skip
    if cfg.paired:
        pairs = list_pairs(cfg.paired, cfg.split, load_split_rules(cfg.split_rules))
        if not pairs:
            raise ValueError(f"data.paired {cfg.paired}: no image pairs (split {cfg.split!r})")
        return PairedDataset(pairs, **common)  # type: ignore[arg-type]
    if not cfg.train:
        raise ValueError("data.train is empty: give at least one HR image folder (or data.paired)")
    rules = load_split_rules(cfg.split_rules)
    sources = list_sources(cfg.train, cfg.split, frames=cfg.frames, nifti_axis=cfg.nifti_axis, rules=rules)
    if not sources:
        raise ValueError(f"no training images in {cfg.train} (split {cfg.split!r})")
    from ldsr.data.degrade import degrade_config

    degradation = degrade_config(cfg.degradation, cfg.degradation_weights)
    return HRFolderDataset(
        sources,
        degradation=degradation,
        nifti_axis=cfg.nifti_axis,
        resize=cfg.resize,
        device_degrade=cfg.device_degrade,
        **common,  # type: ignore[arg-type]  # the dict's values are typed object; each matches its parameter
    )


class SampleStream(Sampler[int]):
    """The global sample numbers start, start + 1, ... (endless): the data order is a function of the step."""

    def __init__(self, start: int = 0) -> None:
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        k = self.start
        while True:
            yield k
            k += 1
