"""Neighbourhood self-attention for the UNets' attention blocks: every token attends to the tokens within a radius.

The UNets are trained on small crops (mri-x4: HR 128, so its attention level sees 8 x 8 tokens) and then run on
whole images whose attention level has thousands of tokens. With global attention (i) every token's softmax
spreads over far more keys than in training, and (ii) a tile of a tiled upscale sees other keys than the same
tokens untiled, so tiles disagree where they overlap (docs/BENCHMARKS.md, "Seams"). Neighbourhood attention of
radius r (query (i, j) attends to the keys (u, v) with |u - i| <= r and |v - j| <= r inside the image; Hassani et
al. 2023, "Neighborhood Attention Transformer", without their border shift so that it stays translation
equivariant) is global on anything up to r + 1 tokens a side, hence identical to the trained model on its
training crops when r + 1 >= the training size, and local like a convolution beyond: a tile then computes what the
untiled image computes except within r tokens of its border, which the tile blend already down-weights.

Computed by blocks with a halo (HaloNet, Vaswani et al. 2021): the queries of each b x b block attend to the
(b + 2r)^2 keys around it, masked to each query's window; memory is O(tokens * (b + 2r)^2 / b^2) scores.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@functools.lru_cache(maxsize=32)
def _block_masks(h: int, w: int, radius: int, block: int, device: torch.device) -> torch.Tensor:
    """Boolean (nH nW, b^2, (b + 2r)^2): query q of block k may attend key position p of its halo window.

    Cached: every attention call of every sampler step and tile of one grid size needs the same (read-only) mask."""
    k = block + 2 * radius
    nh, nw = -(-h // block), -(-w // block)
    # Relative window: query at (i, j) in the block, key at (u, v) in the halo (block offset -r).
    i = torch.arange(block, device=device)
    u = torch.arange(k, device=device) - radius
    near = (u[None, :] - i[:, None]).abs() <= radius  # (b, b + 2r)
    rel = near[:, None, :, None] & near[None, :, None, :]  # (b, b, b + 2r, b + 2r)
    rel = rel.reshape(block * block, k * k)
    # Keys inside the image: unfold a validity map padded like the keys.
    valid = torch.zeros(nh * block + 2 * radius, nw * block + 2 * radius, dtype=torch.bool, device=device)
    valid[radius : radius + h, radius : radius + w] = True
    win = valid.unfold(0, k, block).unfold(1, k, block)  # (nH, nW, b + 2r, b + 2r)
    return rel[None] & win.reshape(nh * nw, 1, k * k)  # (nH nW, b^2, (b + 2r)^2)


def neighborhood_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, radius: int,
                           block: int | None = None) -> torch.Tensor:  # fmt: skip
    """Softmax attention of q over the keys within `radius` (Chebyshev, inside the image) of each query.

    q, k, v: (N, heads, H, W, d) -> (N, heads, H, W, d). Equal to global attention when H, W <= radius + 1.
    `block`: query block side (default radius + 1, so that every padded query still has a key in its window).
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0 tokens, got {radius}")
    b = radius + 1 if block is None else block
    if not 1 <= b <= radius + 1:
        raise ValueError(f"block must be in [1, radius + 1] = [1, {radius + 1}], got {b}")
    n, heads, h, w, d = q.shape
    nh, nw, kk = -(-h // b), -(-w // b), b + 2 * radius
    ph, pw = nh * b - h, nw * b - w
    # Queries in blocks: (N, heads, nH nW, b^2, d)
    qb = F.pad(q, (0, 0, 0, pw, 0, ph)).reshape(n, heads, nh, b, nw, b, d).permute(0, 1, 2, 4, 3, 5, 6)
    qb = qb.reshape(n, heads, nh * nw, b * b, d)

    def halo(x: torch.Tensor) -> torch.Tensor:  # (N, heads, H, W, d) -> (N, heads, nH nW, (b + 2r)^2, d)
        x = F.pad(x, (0, 0, radius, radius + pw, radius, radius + ph))
        x = x.unfold(2, kk, b).unfold(3, kk, b)  # (N, heads, nH, nW, d, kk, kk)
        return x.permute(0, 1, 2, 3, 5, 6, 4).reshape(n, heads, nh * nw, kk * kk, d)

    mask = _block_masks(h, w, radius, b, q.device)  # (nH nW, b^2, kk^2)
    out = F.scaled_dot_product_attention(qb, halo(k), halo(v), attn_mask=mask)  # (N, heads, nH nW, b^2, d)
    out = out.reshape(n, heads, nh, nw, b, b, d).permute(0, 1, 2, 4, 3, 5, 6).reshape(n, heads, nh * b, nw * b, d)
    return out[:, :, :h, :w]


class NeighborhoodAttnProcessor:
    """A diffusers attention processor for the UNets' spatial self-attention blocks, attending within `radius`.

    Mirrors diffusers' AttnProcessor2_0 for 4-D input without cross-attention or masks (what UNet2DModel's
    attention blocks run); inputs of at most radius + 1 tokens a side give the same result as it.
    """

    def __init__(self, radius: int) -> None:
        if radius < 0:
            raise ValueError(f"radius must be >= 0 tokens, got {radius}")
        self.radius = radius

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: object,
                 **kwargs: object) -> torch.Tensor:  # fmt: skip
        if hidden_states.ndim != 4 or encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("neighborhood attention is for 4-D spatial self-attention without a mask")
        residual = hidden_states
        n, c, h, w = hidden_states.shape
        x = hidden_states.view(n, c, h * w).transpose(1, 2)  # (N, HW, C)
        if attn.group_norm is not None:
            x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
        heads = attn.heads
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)  # (N, HW, inner)
        d = k.shape[-1] // heads
        q, k, v = (t.view(n, h, w, heads, d).permute(0, 3, 1, 2, 4) for t in (q, k, v))  # (N, heads, H, W, d)
        out = neighborhood_attention(q, k, v, self.radius)  # (N, heads, H, W, d)
        out = out.permute(0, 2, 3, 1, 4).reshape(n, h * w, heads * d).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))  # linear, dropout
        out = out.transpose(1, 2).reshape(n, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextlib.contextmanager
def local_attention(unet: nn.Module, radius: int | None) -> Iterator[None]:
    """Within the block the UNet's self-attention blocks attend within `radius` tokens (None: global, unchanged)."""
    if radius is None:
        yield
        return
    from diffusers.models.attention_processor import Attention

    blocks = [m for m in unet.modules() if isinstance(m, Attention)]
    saved = [m.processor for m in blocks]
    for m in blocks:
        m.set_processor(NeighborhoodAttnProcessor(radius))  # type: ignore[arg-type]  # any callable processor
    try:
        yield
    finally:
        for m, p in zip(blocks, saved):
            m.set_processor(p)
