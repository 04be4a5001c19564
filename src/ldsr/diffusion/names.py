"""Option names of the diffusion core, torch-free (the CLI builds its choices from them)."""

from __future__ import annotations

from typing import Literal, get_args

SamplerName = Literal["ddpm", "ddim", "dpmpp"]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
