"""`ldsr study create`: a blind, randomised rating study from an `ldsr evaluate` report folder.

A study folder holds
- `study.json`: the design (format `ldsr-study/1`): methods, images, trials (image x method), one presentation
  order per rater slot (a seeded shuffle with repeated trials inserted for the consistency measure) and the
  invitation codes;
- `images/<id>.png`: 8-bit PNG copies of the HR references (the GT cropped to a multiple of the scale, as
  `ldsr evaluate` measured it) and of the SR outputs, each under a random opaque id, so that neither a method
  name nor a file name reaches a URL or the page;
- `ratings.sqlite`: the ratings, created by `ldsr study serve`.
"""

from __future__ import annotations

import csv
import json
import math
import secrets
import shutil
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "ldsr-study/1"
STUDY_FILE = "study.json"
DB_FILE = "ratings.sqlite"
IMAGES_DIR = "images"
ID_HEX = 16  # opaque ids: 16 lower-case hex digits (64 random bits)
METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "lr_psnr")
# The four-point scale of the reference thesis's subjective study (Table 5.2).
SCALE_LABELS: dict[int, str] = {
    4: "Excellent: good texture and clarity, high contrast",
    3: "Good",
    2: "Fair",
    1: "Poor: completely blurred",
}


class StudyError(ValueError):
    """A study folder or an evaluate report that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class Trial:
    """One candidate to rate: the SR output of `method` on image `image` (index into Study.images)."""

    id: str
    image: int
    method: str
    candidate: str  # image id of the SR output
    metrics: dict[str, float]  # this image's row of the evaluate results.csv (may be empty)


@dataclass(frozen=True)
class Study:
    """A loaded study.json."""

    root: Path
    study_id: str
    seed: int
    methods: tuple[str, ...]
    images: tuple[dict[str, str], ...]  # {"name": relative GT name, "reference": image id}
    trials: dict[str, Trial]
    orders: tuple[tuple[str, ...], ...]  # per rater slot: trial ids in presentation order
    codes: tuple[str, ...]
    doc: dict[str, Any]  # study.json as read
    image_ids: frozenset[str] = frozenset()  # every reference and candidate id

    @property
    def n_raters(self) -> int:
        return len(self.orders)

    def image_file(self, image_id: str) -> Path | None:
        """The file of an image id, or None for anything that is not one of this study's ids."""
        if image_id not in self.image_ids:
            return None
        return self.root / IMAGES_DIR / f"{image_id}.png"


# ----------------------------------------------------------------------------------------------------------
# reading an evaluate report


def _read_results(report: Path) -> list[dict[str, str]]:
    """The rows of results.csv (its leading '# key: value' provenance lines skipped)."""
    path = report / "results.csv"
    if not path.is_file():
        raise StudyError(f"{path}: not found (give the output folder of `ldsr evaluate`)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    need = {"method", "image", "sr_path"}
    if not rows or not need <= set(rows[0]):
        raise StudyError(f"{path}: no rows with columns {sorted(need)}")
    return rows


def _report_gt_dir(report: Path) -> Path:
    path = report / "summary.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Path(doc["provenance"]["gt_dir"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StudyError(f"{path}: cannot read provenance.gt_dir ({e}); give --gt") from e


def _report_scale(report: Path) -> int:
    try:
        doc = json.loads((report / "summary.json").read_text(encoding="utf-8"))
        return int(doc["provenance"]["scale"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _as_uint8(x: np.ndarray) -> np.ndarray:
    """(H, W, C) in [0, 1] -> uint8 0..255 (what a browser shows; 16-bit sources are rounded to 8 bits)."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def _copy_png(src: Path, dst: Path, *, scale: int | None = None) -> tuple[int, int]:
    """Write `src` as an 8-bit PNG at `dst` (cropped to a multiple of `scale` when given); return (H, W)."""
    from ldsr.io import write_image
    from ldsr.io.read import read_image

    img, _ = read_image(src)
    if scale is not None:
        from ldsr.data.degrade import crop_to_multiple  # the crop `ldsr evaluate` applies to the GT

        try:
            img = crop_to_multiple(img, scale)
        except ValueError as e:
            raise StudyError(f"{src}: {e}") from e
    write_image(dst, _as_uint8(img), bit_depth=8)
    return int(img.shape[0]), int(img.shape[1])


# ----------------------------------------------------------------------------------------------------------
# design


def repeat_gap(n: int) -> int:
    """Least number of other trials between a trial and its repeat: min(5, n // 2)."""
    return min(5, n // 2)


def max_repeats(n: int) -> int:
    """How many of n trials can be repeated with the gap: those first shown early enough."""
    return n - repeat_gap(n)


def presentation_order(trial_ids: list[str], repeats: int, rng: np.random.Generator) -> list[str]:
    """A random order of every trial, plus `repeats` distinct trials shown a second time.

    The repeated trials are drawn among the first n - gap of the shuffled order and each goes to a random
    later position with at least `gap` = min(5, n // 2) other trials in between, so that a rater judges it
    again rather than remembering the score just given.
    """
    n = len(trial_ids)
    if not 0 <= repeats <= max_repeats(n):
        raise ValueError(f"--repeats must be in [0, {max_repeats(n)}] for {n} trials, got {repeats}")
    order = [trial_ids[i] for i in rng.permutation(n)]
    gap = repeat_gap(n)
    for tid in [order[i] for i in sorted(rng.choice(n - gap, size=repeats, replace=False).tolist())]:
        first = order.index(tid)
        order.insert(int(rng.integers(first + 1 + gap, len(order) + 1)), tid)
    return order


def _pick(report: Path, rows: list[dict[str, str]], methods: list[str] | None, n_images: int | None,
          rng: np.random.Generator) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, str]]]:  # fmt: skip
    """Choose the methods and images: images with an SR output of every chosen method, `n_images` at random."""
    by_key = {(r["method"], r["image"]): r for r in rows}
    known = list(dict.fromkeys(r["method"] for r in rows))
    chosen = list(dict.fromkeys(methods)) if methods else known
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise StudyError(f"{report / 'results.csv'}: no method {unknown[0]!r} (the report has {', '.join(known)})")

    def complete(img: str) -> bool:
        return all((m, img) in by_key and (report / by_key[m, img]["sr_path"]).is_file() for m in chosen)

    images = [img for img in dict.fromkeys(r["image"] for r in rows) if complete(img)]
    if not images:
        raise StudyError(f"{report}: no image has an SR output of every method {chosen} under sr/")
    if n_images is not None:
        if n_images < 1:
            raise ValueError(f"--images must be >= 1, got {n_images}")
        if n_images < len(images):
            images = [images[i] for i in sorted(rng.choice(len(images), size=n_images, replace=False).tolist())]
    return chosen, images, by_key


def _new_id(used: set[str]) -> str:
    while True:
        value = secrets.token_hex(ID_HEX // 2)
        if value not in used:
            used.add(value)
            return value


def create_study(report_dir: Path, out_dir: Path, *, n_images: int | None = None, seed: int = 0,
                 methods: list[str] | None = None, raters: int = 20, repeats: int | None = None,
                 gt_dir: Path | None = None) -> Study:  # fmt: skip
    """Build a study folder from an evaluate report (see the module doc); return the loaded study.

    `repeats`: trials shown twice to each rater (default: 10 % of the trials, at least 1 when there are 2+).
    """
    report, out = Path(report_dir), Path(out_dir)
    if raters < 1:
        raise ValueError(f"--raters must be >= 1, got {raters}")
    if (out / STUDY_FILE).exists() or (out / DB_FILE).exists():
        raise StudyError(f"{out}: already holds a study (choose a new --out folder)")
    if out.exists() and any(out.iterdir()):
        raise StudyError(f"{out}: not empty (choose a new or empty --out folder)")
    rows = _read_results(report)
    gt_root = Path(gt_dir) if gt_dir is not None else _report_gt_dir(report)
    if not gt_root.is_dir():
        raise StudyError(f"{gt_root}: the report's ground-truth folder is missing; give --gt")
    rng = np.random.default_rng(seed)
    chosen, images, by_key = _pick(report, rows, methods, n_images, rng)
    n_trials = len(images) * len(chosen)
    n_repeats = (max(1, round(0.1 * n_trials)) if n_trials > 1 else 0) if repeats is None else repeats
    if not 0 <= n_repeats <= max_repeats(n_trials):
        raise ValueError(f"--repeats must be in [0, {max_repeats(n_trials)}] for {n_trials} trials "
                         f"(images x methods), got {n_repeats}")  # fmt: skip
    tmp = out.parent / f".{out.name}.creating"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        _write_design(report, tmp, gt_root, chosen, images, by_key, seed, raters, n_repeats, rng)
        if out.exists():
            out.rmdir()  # empty (checked above): the finished folder takes its place in one rename
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_study(out)


def _write_design(report: Path, root: Path, gt_root: Path, chosen: list[str], images: list[str],
                  by_key: dict[tuple[str, str], dict[str, str]], seed: int, raters: int, n_repeats: int,
                  rng: np.random.Generator) -> dict[str, Any]:  # fmt: skip
    """Copy the images under opaque ids and write study.json into `root`."""
    scale = _report_scale(report)
    used: set[str] = set()
    image_docs: list[dict[str, str]] = []
    trial_docs: list[dict[str, Any]] = []
    for index, name in enumerate(images):
        ref = _new_id(used)
        shape = _copy_png(gt_root / name, root / IMAGES_DIR / f"{ref}.png", scale=scale)
        image_docs.append({"name": name, "reference": ref})
        for method in chosen:
            row = by_key[method, name]
            cand = _new_id(used)
            sr_shape = _copy_png(report / row["sr_path"], root / IMAGES_DIR / f"{cand}.png")
            if sr_shape != shape:
                raise StudyError(f"{report / row['sr_path']}: size {sr_shape} differs from its reference {shape}")
            metrics = {k: v for k in METRICS if (v := _float(row.get(k, ""))) is not None}
            trial_docs.append({"id": "t" + _new_id(used), "image": index, "method": method, "candidate": cand,
                               "metrics": metrics})  # fmt: skip
    ids = [str(t["id"]) for t in trial_docs]
    orders = [presentation_order(ids, n_repeats, rng) for _ in range(raters)]
    doc = {
        "format": FORMAT,
        "study_id": secrets.token_hex(8),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "report_dir": str(report.resolve()),
        "gt_dir": str(gt_root.resolve()),
        "seed": seed,
        "scale_labels": {str(k): v for k, v in SCALE_LABELS.items()},
        "methods": chosen,
        "images": image_docs,
        "trials": trial_docs,
        "repeats": n_repeats,
        "orders": orders,
        "invitation_codes": sorted({secrets.token_urlsafe(9) for _ in range(raters)}),
    }
    (root / STUDY_FILE).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc


# ----------------------------------------------------------------------------------------------------------
# loading


def _check(cond: bool, path: Path, reason: str) -> None:
    if not cond:
        raise StudyError(f"{path}: {reason}")


def load_study(study_dir: Path) -> Study:
    """Read and check study.json (every id, order and image file); StudyError names what is wrong."""
    root = Path(study_dir)
    path = root / STUDY_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise StudyError(f"{path}: not found (create the study with `ldsr study create`)") from e
    except (OSError, ValueError) as e:
        raise StudyError(f"{path}: unreadable ({e})") from e
    _check(isinstance(doc, dict) and doc.get("format") == FORMAT, path, f"not an {FORMAT} file")
    try:
        images = tuple({"name": str(d["name"]), "reference": str(d["reference"])} for d in doc["images"])
        trials = {str(t["id"]): Trial(id=str(t["id"]), image=int(t["image"]), method=str(t["method"]),
                                      candidate=str(t["candidate"]), metrics=dict(t.get("metrics", {})))
                  for t in doc["trials"]}  # fmt: skip
        orders = tuple(tuple(str(t) for t in order) for order in doc["orders"])
        study = Study(root=root, study_id=str(doc["study_id"]), seed=int(doc["seed"]),
                      methods=tuple(str(m) for m in doc["methods"]), images=images, trials=trials, orders=orders,
                      codes=tuple(str(c) for c in doc["invitation_codes"]), doc=doc)  # fmt: skip
    except (KeyError, TypeError, ValueError) as e:
        raise StudyError(f"{path}: malformed ({type(e).__name__}: {e})") from e
    ids = [d["reference"] for d in images] + [t.candidate for t in trials.values()]
    study = replace(study, image_ids=frozenset(ids))
    hexdigits = set("0123456789abcdef")
    _check(all(len(i) == ID_HEX and set(i) <= hexdigits for i in ids), path, "an image id is not 16 hex digits")
    _check(all(0 <= t.image < len(images) and t.method in study.methods for t in trials.values()), path,
           "a trial names an unknown image or method")  # fmt: skip
    _check(bool(orders) and all(set(o) <= set(trials) for o in orders), path, "an order names an unknown trial")
    for i in ids:
        _check((root / IMAGES_DIR / f"{i}.png").is_file(), root / IMAGES_DIR / f"{i}.png", "missing")
    return study
