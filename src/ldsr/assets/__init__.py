"""Package data: the shipped models and the demo's sample images, found through `importlib.resources`.

    ldsr/assets/models/<name>/   config.json, ema.safetensors, MODEL_CARD.md (see `ldsr.pipeline.export`)
    ldsr/assets/samples/<group>/ the few held-out images `ldsr.cli.demo` degrades (attribution: README.md there)

Both are installed with the wheel, so `ldsr.load("mri-x4")` works outside the checkout. torch-free.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def asset_dir(*parts: str) -> Path:
    """The folder `ldsr/assets/<parts>` on the file system (wheels and editable installs are unpacked)."""
    root = resources.files(__name__)
    if not isinstance(root, Path):  # e.g. a zipped install: the models are read by path (safetensors mmap)
        raise RuntimeError(f"ldsr assets must be installed on the file system, found {root!r}")
    return root.joinpath(*parts)


MODELS_DIR = asset_dir("models")
SAMPLES_DIR = asset_dir("samples")

__all__ = ["MODELS_DIR", "SAMPLES_DIR", "asset_dir"]
