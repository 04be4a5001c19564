"""Planning an `ldsr upscale` job before any computation (torch-free).

Every input file is read once here, so that each problem is named before the first network call:
- job-level refusals (`JobError`, exit 2, nothing computed): an output format that cannot be written, `-o` equal
  to `-i`, an output that would overwrite an input, two outputs with one name, a folder that cannot be written;
- per-file refusals (the file is named on one line, the others go on, exit 1): unreadable or corrupt files,
  NaN pixels, images too small, channel counts the model does not take (unless `--channels` asks for the
  conversion), an alpha channel that would be dropped (same), a frame that does not exist, an image whose
  content does not say which model fits (without `-m`).

Output names (documented in the README and `ldsr upscale --help`):
- one input and `-o` with a suffix: that file; otherwise `<output>/<relative folder>/<stem><suffix>`, the
  suffix `.dcm` for DICOM inputs and `.png` for all others;
- a file with several frames / slices processed whole (`--frames all`, the default) gives one output per frame,
  `<stem>_f<k>` with k the frame (DICOM, TIFF page) or slice (NIfTI, along `--axis`) index, zero-padded;
- except a multi-frame DICOM written as DICOM (`-o NAME.dcm`, or a folder job), which stays ONE multi-frame DICOM
  (`ldsr.io.write_dicom_frames`: every frame, NumberOfFrames kept, Rows / Columns and PixelSpacing updated);
  its spread maps are per frame, `<stem>_f<k>_std.png`, its single draws multi-frame DICOMs `<stem>_s<k>.dcm`;
- a NIfTI volume stays a volume (`ldsr.pipeline.regions.upscale_volume`: in-plane, slice by slice along
  `--axis`, voxel size and affine updated) when `-o` names a .nii / .nii.gz file, and in a folder job with
  `--frames all` (the default), as `<stem>.nii.gz` (`.nii` for a .nii input); `-o NAME.png` or `--frames
  middle|N` give 2D slices as above;
- beside each output: its spread map `<stem>_std.png` (8-bit, 2 x the per-pixel std over the draws; a volume's
  `<stem>_std.nii.gz`, float32 in the volume's units), always in `--mode sharp` and with `--std-map`, and with
  `--reduce none` the single draws `<stem>_s<k>`; every output records in its metadata how it was made
  (`ldsr.io.read_provenance`: a sharp-mode output is a posterior sample);
- two inputs that would share an output name (x.png and x.tif in one folder): the input whose suffix already is
  the output's keeps `x.png`, the others keep their whole name (`x.tif.png`). Names that still collide stop the
  job before it starts, naming the files.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ldsr.io import OUTPUT_SUFFIXES, SUFFIXES, ImageError, ImageMeta, list_images, read_frames, suffix_of

ChannelChoice = Literal["grey", "rgb"]
CHANNELS_OF: dict[str, int] = {"grey": 1, "rgb": 3}
MIN_SIDE = 8  # LR pixels: below this an image holds too little for x2 - x8 SR (and for reflect padding)
ALPHA_NOTE = "alpha channel dropped"
VOLUME_SUFFIXES = (".nii", ".nii.gz")
NIFTI_NOTE = "written as PNG slices (-o NAME.nii.gz, or a folder with --frames all, keeps the volume)"
VOLUME_NOTE = "upscaled in-plane slice by slice, written as a NIfTI volume (voxel size and affine updated)"
STACK_NOTE = "written as one multi-frame DICOM (Rows / Columns and PixelSpacing updated)"
# Suffixes that make `-o NAME` look like one image file rather than a folder.
IMAGE_LIKE = {*SUFFIXES, *OUTPUT_SUFFIXES, ".webp", ".bmp", ".gif", ".jp2", ".heic"}

# (image, format) -> (model key, the channels that model takes or None for any)
Chooser = Callable[[np.ndarray, str], tuple[str, int | None]]


class JobError(ValueError):
    """The job as a whole cannot run (exit 2 before any computation)."""


@dataclass(frozen=True)
class Request:
    """What the user asked for, as far as planning needs it."""

    input: Path
    output: Path
    channels: ChannelChoice | None = None
    frames: str = "all"  # "all" | "middle" | an integer (negative counts from the end)
    axis: int = 2
    std_map: bool = False  # --std-map, always in sharp mode
    keep_draws: bool = False  # --reduce none: every draw is written (<stem>_s<k>)


@dataclass
class Item:
    """One input file: which frames are upscaled by which model, and where each result goes."""

    src: Path
    fmt: str
    frames: list[int]  # indices into read_frames(src, axis=...)
    n_frames: int
    model: str
    notes: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)  # one per frame (one for a volume)
    extras: list[Path] = field(default_factory=list)  # std maps, single draws
    volume: bool = False  # a NIfTI volume written back as one NIfTI volume
    stack: bool = False  # every frame of a multi-frame DICOM written back as one multi-frame DICOM


@dataclass
class Plan:
    items: list[Item]
    failures: list[tuple[str, str]]
    single: bool


def convert_channels(image: np.ndarray, channels: ChannelChoice | None) -> np.ndarray:
    """The conversion `--channels` asks for: grey -> RGB by repetition, RGB -> grey by BT.601 luminance."""
    if channels is None or image.shape[2] == CHANNELS_OF[channels]:
        return image
    if channels == "rgb":
        return np.repeat(image, 3, axis=2)
    return (image @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None].astype(np.float32)


def select_frames(n: int, frames: str, path: Path) -> list[int]:
    """`--frames all|middle|N` -> frame indices of a file with n frames."""
    if frames == "all":
        return list(range(n))
    if frames == "middle":
        return [n // 2]
    k = int(frames)
    if not -n <= k < n:
        raise ImageError(path, f"frame {k} out of range (the file has {n} frame{'s' if n != 1 else ''})")
    return [k % n]


def _describe(c: int) -> str:
    return "grey (1-channel)" if c == 1 else "colour (3-channel)"


def _check_channels(path: Path, meta: ImageMeta, image: np.ndarray, req: Request) -> np.ndarray:
    """Refuse a dropped alpha channel unless --channels asked for one; apply the asked conversion."""
    if ALPHA_NOTE in meta.notes and req.channels is None:
        raise ImageError(
            path, "has an alpha channel, which SR would drop; pass --channels rgb (or grey) to upscale its colour only"
        )
    return convert_channels(image, req.channels)


def inspect_file(path: Path, req: Request, choose: Chooser) -> Item:
    """Read one input and decide its frames, model and conversions; ValueError (one line) when it cannot run."""
    frames = read_frames(path, axis=req.axis)
    picked = select_frames(len(frames), req.frames, path)
    image, meta = frames[picked[0]]
    for k in picked:
        h, w = frames[k][0].shape[:2]
        if min(h, w) < MIN_SIDE:
            raise ImageError(path, f"is {h}x{w} pixels, too small for SR (minimum side {MIN_SIDE})")
        if not np.isfinite(frames[k][0]).all():
            raise ImageError(path, "contains NaN or inf values")
    image = _check_channels(path, meta, image, req)
    model, wants = choose(image, meta.format)
    have = image.shape[2]
    if wants is not None and have != wants:
        fix = "grey" if wants == 1 else "rgb"
        raise ImageError(path, f"is {_describe(have)} but {model} takes {_describe(wants)} images; "
                         f"pass --channels {fix} to convert it")  # fmt: skip
    notes = []
    if req.channels is not None and meta.channels != have:
        notes.append(f"converted to {req.channels} as --channels asked")
    if len(frames) > 1:
        notes.append(f"{len(picked)} of {len(frames)} {'slices' if meta.format == 'nifti' else 'frames'}")
    return Item(path, meta.format, picked, len(frames), model, notes)


def list_inputs(req: Request) -> tuple[list[Path], bool]:
    """The input files and whether the job is a single file; JobError when there is nothing to do."""
    if not req.input.exists():
        raise JobError(f"{req.input}: no such file or folder")
    if req.input.is_file():
        return [req.input], True
    out = req.output.resolve()
    if out == req.input.resolve():
        raise JobError(f"{req.output}: the output folder is the input folder; choose another -o")
    # Outputs of an earlier run inside the input folder are not inputs.
    files = [p for p in list_images(req.input) if not p.resolve().is_relative_to(out)]
    if not files:
        raise JobError(f"{req.input}: no supported images found")
    return files, False


def check_output_format(req: Request, single: bool) -> None:
    """A single-file job's `-o` suffix must be a format ldsr writes; a folder `-o` must not be a file."""
    if not single or not _is_file_output(req):
        if req.output.is_file():
            raise JobError(f"{req.output}: is a file; a folder job needs an output folder")
        if not single and suffix_of(req.output) in IMAGE_LIKE and not req.output.is_dir():
            raise JobError(f"{req.output}: a folder of inputs needs an output folder, not an image file name")
        return
    suffix = suffix_of(req.output)
    if suffix in VOLUME_SUFFIXES:
        if suffix_of(req.input) not in VOLUME_SUFFIXES:
            raise JobError(f"{req.output}: NIfTI output needs a NIfTI volume input (got {req.input.name})")
        if req.frames != "all":
            raise JobError(f"{req.output}: NIfTI output keeps the whole volume; --frames picks 2D slices (-o NAME.png)")
        return
    if suffix not in OUTPUT_SUFFIXES:
        raise JobError(f"{req.output}: unsupported output format {suffix} (supported: {', '.join(OUTPUT_SUFFIXES)})")
    if suffix == ".dcm" and suffix_of(req.input) not in (".dcm", ""):
        raise JobError(f"{req.output}: DICOM output needs a DICOM input (got {req.input.name})")


def _is_file_output(req: Request) -> bool:
    return bool(req.output.suffix) and not req.output.is_dir()


def _stem(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if suffix and name.lower().endswith(suffix) else name


def _base_output(item: Item, req: Request, single: bool, whole_name: bool) -> tuple[Path, str]:
    """(output path without frame tag, its suffix) for one item."""
    if single and _is_file_output(req):
        return req.output, suffix_of(req.output)
    suffix = ".dcm" if item.fmt == "dicom" else ".png"
    if item.volume:
        suffix = suffix_of(item.src) if suffix_of(item.src) in VOLUME_SUFFIXES else ".nii.gz"
    rel = item.src.relative_to(req.input) if not single else Path(item.src.name)
    name = rel.name if whole_name else _stem(rel.name, suffix_of(item.src))
    return req.output / rel.parent / (name + suffix), suffix


def frame_tag(item: Item, k: int) -> str:
    """`_f<k>`, frame k's tag in output names (zero-padded to the file's frame count, at least 3 digits)."""
    return f"_f{k:0{max(3, len(str(item.n_frames - 1)))}d}"


def _frame_outputs(base: Path, suffix: str, item: Item) -> list[Path]:
    if len(item.frames) == 1 or item.volume or item.stack:
        return [base]  # one frame asked for (or a plain image, a volume, a multi-frame DICOM): no frame tag
    stem = _stem(base.name, suffix)
    return [base.with_name(f"{stem}{frame_tag(item, k)}{suffix}") for k in item.frames]


def assign_outputs(items: list[Item], req: Request, single: bool) -> None:
    """Fill `item.outputs` with the naming rule of the module docstring (collisions keep the whole name)."""
    for it in items:
        if it.fmt == "nifti":
            file_out = single and _is_file_output(req)
            it.volume = suffix_of(req.output) in VOLUME_SUFFIXES if file_out else req.frames == "all"
            it.notes.append(VOLUME_NOTE if it.volume else NIFTI_NOTE)
        elif it.fmt == "dicom" and len(it.frames) > 1:
            file_out = single and _is_file_output(req)
            it.stack = suffix_of(req.output) == ".dcm" if file_out else True  # folder jobs write DICOM as .dcm
            if it.stack:
                it.notes.append(STACK_NOTE)
    bases = {id(it): _base_output(it, req, single, whole_name=False) for it in items}
    groups: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        groups[str(bases[id(it)][0]).lower()].append(it)  # case-folded: safe on case-insensitive disks too
    for group in groups.values():
        if len(group) < 2:
            continue
        for it in group:
            base, suffix = bases[id(it)]
            if suffix_of(it.src) != suffix:
                bases[id(it)] = _base_output(it, req, single, whole_name=True)
    for it in items:
        base, suffix = bases[id(it)]
        it.outputs = _frame_outputs(base, suffix, it)


def add_extras(item: Item, req: Request, draws: int) -> None:
    """The std map (`<stem>_std.png`; a volume's `<stem>_std.nii.gz`, a multi-frame DICOM's `<stem>_f<k>_std.png`)
    and, with --reduce none, draws 1.. (`<stem>_s<k>`, not for volumes) of every output."""
    item.extras = []
    if item.volume:  # one volume: its spread as one volume, no single draws
        if req.std_map and draws > 1:
            suffix = suffix_of(item.outputs[0])
            item.extras.append(item.outputs[0].with_name(f"{_stem(item.outputs[0].name, suffix)}_std{suffix}"))
        return
    if item.stack:  # one multi-frame DICOM: a spread map per frame, each draw a multi-frame DICOM
        out = item.outputs[0]
        suffix = suffix_of(out)
        stem = _stem(out.name, suffix)
        if req.std_map and draws > 1:
            item.extras += [out.with_name(f"{stem}{frame_tag(item, k)}_std.png") for k in item.frames]
        if req.keep_draws:
            item.extras += [out.with_name(f"{stem}_s{k}{suffix}") for k in range(1, draws)]
        return
    for out in item.outputs:
        suffix = suffix_of(out)
        stem = _stem(out.name, suffix)
        if req.std_map and draws > 1:
            item.extras.append(out.with_name(f"{stem}_std.png"))
        if req.keep_draws:
            item.extras += [out.with_name(f"{stem}_s{k}{suffix}") for k in range(1, draws)]


def check_outputs(items: list[Item], inputs: list[Path]) -> None:
    """No output overwrites an input or another output; every output folder can be created and written."""
    sources = {p.resolve(): p for p in inputs}
    seen: dict[str, Path] = {}
    for it in items:
        for out in it.outputs + it.extras:
            if out.resolve() in sources:
                raise JobError(f"{out}: would overwrite the input {sources[out.resolve()]}; choose another -o")
            key = str(out.resolve()).lower()
            if key in seen:
                raise JobError(f"{seen[key]} and {it.src} would both be written to {out}; rename one of them")
            if out.is_dir():
                raise JobError(f"{out}: is a folder, cannot write an image there")
            seen[key] = it.src
    for folder in sorted({out.parent for it in items for out in it.outputs + it.extras}):
        _check_writable(folder)


def _check_writable(folder: Path) -> None:
    """The nearest existing ancestor must be a folder this process may write into (it creates the rest)."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise JobError(f"{folder}: cannot create the output folder ({probe} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise JobError(f"{folder}: cannot write there (permission denied on {probe})")


def plan_job(
    req: Request,
    choose: Chooser,
    on_failure: Callable[[str, str], None],
    on_checked: Callable[[Path], None] | None = None,
) -> Plan:
    """List, read and check every input; per-file problems go to `on_failure(path, reason)` and the plan goes
    on without them; job-level problems raise JobError. Outputs are named but extras are not (they need the
    models' draws: `add_extras`, then `check_outputs`)."""
    files, single = list_inputs(req)
    check_output_format(req, single)
    if single and req.output.resolve() == req.input.resolve():
        raise JobError(f"{req.output}: would overwrite the input; choose another -o")
    items, failures = [], []
    for path in files:
        try:
            items.append(inspect_file(path, req, choose))
        except (ValueError, OSError) as e:
            reason = str(e)
            if reason.startswith(f"{path}: "):
                reason = reason[len(str(path)) + 2 :]
            failures.append((str(path), reason))
            on_failure(str(path), reason)
        if on_checked is not None:
            on_checked(path)
    assign_outputs(items, req, single)
    return Plan(items, failures, single)
