"""Denoising networks: diffusers `UNet2DModel` sizes as a visible dict of factories (as DiT's `DiT_models`).

Each factory is `(in_channels, out_channels, sample_size) -> UNet2DModel`. For SR, `in_channels` counts the
noisy target plus the concatenated condition. The spatial size must be divisible by 2**(levels - 1):
tiny 2, compact 4, small 4, base 8.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ldsr.models.params import count_parameters as count_parameters  # re-exported: callers count a UNet's here

if TYPE_CHECKING:  # diffusers and torch load only when a network is built (the CLI reads the names)
    from diffusers.models.unets.unet_2d import UNet2DModel  # not `diffusers.UNet2DModel`, a placeholder to mypy


def unet_tiny(in_channels: int, out_channels: int, sample_size: int) -> UNet2DModel:
    """2 levels (16, 32), 1 ResNet block each, no attention: for tests (~0.16M parameters)."""
    from diffusers.models.unets.unet_2d import UNet2DModel

    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )


def unet_compact(in_channels: int, out_channels: int, sample_size: int) -> UNet2DModel:
    """3 levels (32, 64, 128), 1 ResNet block each, self-attention at the lowest resolution: CPU-trainable in
    under an hour, ~2.7M parameters (~5 MB in fp16, within a shipped model's budget)."""
    from diffusers.models.unets.unet_2d import UNet2DModel

    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=32,
        norm_num_groups=8,
    )


def unet_small(in_channels: int, out_channels: int, sample_size: int) -> UNet2DModel:
    """3 levels (64, 128, 256), 2 ResNet blocks each, self-attention at the lowest resolution: CPU-sized."""
    from diffusers.models.unets.unet_2d import UNet2DModel

    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=(64, 128, 256),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=32,
        norm_num_groups=32,
    )


def unet_base(in_channels: int, out_channels: int, sample_size: int) -> UNet2DModel:
    """4 levels (128, 256, 256, 512), 2 ResNet blocks each, attention at the two lowest resolutions: GPU-sized."""
    from diffusers.models.unets.unet_2d import UNet2DModel

    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=(128, 256, 256, 512),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=64,
        norm_num_groups=32,
    )


UNET_PRESETS: dict[str, Callable[[int, int, int], UNet2DModel]] = {
    "tiny": unet_tiny,
    "compact": unet_compact,
    "small": unet_small,
    "base": unet_base,
}

# Total downsampling of each preset's UNet: its input side must be a multiple of this.
UNET_DOWNSAMPLING: dict[str, int] = {"tiny": 2, "compact": 4, "small": 4, "base": 8}
