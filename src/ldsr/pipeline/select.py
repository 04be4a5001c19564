"""Which model for which image: an automatic choice only where the input says what it shows.

- 1-channel images (grey scans) and 1-channel DICOM / NIfTI -> an MRI model (`mri-x<s>`).
- Colour images whose stain statistics are those of H&E -> a histology model (`histology-x<s>`).
- Anything else (a colour photo, another stain) -> no choice: the caller names a model with `-m`.

The H&E test works on optical density OD_c = -log10(I_c) (Beer-Lambert: stain concentration is linear in OD).
Haematoxylin (blue-purple) and eosin (pink) both absorb green most, so on stained tissue OD_G is the largest of
the three channels, while natural photos (skin, sky, foliage, coffee) and other stains (DAB brown) mostly
are not. Measured on fixtures/histology (CMU-1, Kather 2016) and fixtures/tiff/histo8.tif: 0.98 - 1.00 of the
tissue pixels have OD_G largest; on scikit-image's astronaut, coffee, chelsea, rocket, retina, hubble and
immunohistochemistry (DAB) images: 0.002 - 0.25 (tests/test_cli_select.py). The threshold 0.8 sits in that gap.

Torch-free: reads the models' config.json with `json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Domain = Literal["mri", "histology"]
DOMAINS: tuple[Domain, ...] = ("mri", "histology")
DEFAULT_SCALE = 4  # the preferred factor when neither -m nor --scale says one

# Tissue pixels: summed OD above this (not white background) and brightest channel above DARK (not black).
TISSUE_OD = 0.3
DARK = 0.08
MIN_TISSUE = 0.05  # fraction of the image that must be tissue before the stain is judged
HE_GREEN_FRACTION = 0.8  # fraction of tissue pixels whose green OD is the largest


@dataclass(frozen=True)
class ModelInfo:
    """What the model picker needs of a checkpoint: its name, channels, factor and the domain named by it."""

    name: str
    channels: int
    scale: int
    domain: Domain | None


def model_info(name: str, folder: Path) -> ModelInfo:
    """Read `folder/config.json` (no weights, no torch); the domain comes from the name's prefix."""
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        cfg = data.get("config", data)
        channels, scale = int(cfg["channels"]), int(cfg["scale"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{folder}: unreadable model config ({e})") from e
    domain = next((d for d in DOMAINS if name.startswith(d + "-")), None)
    return ModelInfo(name, channels, scale, domain)


def model_infos(models: Mapping[str, Path]) -> dict[str, ModelInfo]:
    """`shipped_models()` (name -> folder) -> name -> ModelInfo."""
    return {name: model_info(name, path) for name, path in models.items()}


def he_statistics(image: np.ndarray) -> tuple[float, float]:
    """(tissue fraction of the image, fraction of tissue pixels whose green optical density is the largest).

    `image` is (H, W, 3) in [0, 1]; OD = -log10(max(I, 1/255)) per channel, (H, W, 3).
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != 3:
        return 0.0, 0.0
    od = -np.log10(np.clip(x, 1.0 / 255.0, 1.0))  # (H, W, 3), 0 for white
    tissue = (od.sum(axis=2) > TISSUE_OD) & (x.max(axis=2) > DARK)  # (H, W)
    frac = float(tissue.mean()) if tissue.size else 0.0
    t = od[tissue]  # (n, 3)
    if len(t) == 0:
        return frac, 0.0
    green_max = (t[:, 1] > t[:, 0]) & (t[:, 1] > t[:, 2])
    return frac, float(green_max.mean())


def is_he_stained(image: np.ndarray) -> bool:
    """True when a colour image looks like H&E-stained tissue (see the module docstring for the rule)."""
    frac, green = he_statistics(image)
    return frac >= MIN_TISSUE and green >= HE_GREEN_FRACTION


def classify(image: np.ndarray, fmt: str) -> Domain | None:
    """'mri' for 1-channel images (grey scans, DICOM, NIfTI), 'histology' for H&E colour images, else None."""
    if image.ndim == 2 or image.shape[2] == 1:
        return "mri"
    if is_he_stained(image):
        return "histology"
    return None


def choose_model(
    image: np.ndarray, fmt: str, models: Mapping[str, ModelInfo], scale: int | None = None
) -> tuple[str, Domain]:
    """The shipped model for this image, and the domain it was recognised as.

    `scale` None prefers x4. Raises ValueError (one line naming the models) when the image does not say what it
    shows or when no shipped model of its domain has its channels and the scale.
    """
    names = ", ".join([*models, "bicubic"])
    domain = classify(image, fmt)
    if domain is None:
        raise ValueError(
            f"cannot tell what this image shows (colour, not H&E-stained tissue); pass -m with one of: {names} "
            "(or a checkpoint)"
        )
    channels = 1 if image.ndim == 2 else int(image.shape[2])
    fits = [m for m in models.values() if m.domain == domain and m.channels == channels]
    if scale is not None:
        fits = [m for m in fits if m.scale == scale]
    if not fits:
        at = f" at x{scale}" if scale is not None else ""
        raise ValueError(
            f"looks like {domain} but no shipped {domain} model takes it{at}; pass -m with one of: {names}"
        )
    best = min(fits, key=lambda m: (m.scale != DEFAULT_SCALE, m.scale, m.name))
    return best.name, domain
