"""Inference: `load(name_or_checkpoint) -> Upscaler`, folder jobs and model export."""

from ldsr.pipeline.upscaler import MODELS_DIR, Upscaler, UpscaleResult, load, shipped_models

__all__ = ["MODELS_DIR", "UpscaleResult", "Upscaler", "load", "shipped_models"]
