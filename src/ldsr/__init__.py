"""ldsr: image super-resolution with latent diffusion models, for medical and natural images."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ldsr.pipeline import Upscaler


def load(source: str, **kwargs: object) -> Upscaler:
    """`ldsr.load(checkpoint_or_name).upscale(image)`: see `ldsr.pipeline.load` (torch is imported lazily)."""
    from ldsr.pipeline import load as _load

    return _load(source, **kwargs)  # type: ignore[arg-type]
