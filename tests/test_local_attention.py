"""Neighbourhood attention (ldsr.models.local_attention): exact against a loop, global when small, local like a conv."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from ldsr.models.local_attention import NeighborhoodAttnProcessor, local_attention, neighborhood_attention
from ldsr.models.sr import SRConfig


def _loop(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, r: int) -> torch.Tensor:
    """Reference: each query's softmax over the keys of its clipped (2r + 1)^2 window, one query at a time."""
    n, heads, h, w, d = q.shape
    out = torch.empty_like(q)
    for i in range(h):
        for j in range(w):
            ks = k[:, :, max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1].reshape(n, heads, -1, d)
            vs = v[:, :, max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1].reshape(n, heads, -1, d)
            a = torch.softmax((ks @ q[:, :, i, j, :, None])[..., 0] / d**0.5, dim=-1)  # (N, heads, keys)
            out[:, :, i, j] = (a[..., None] * vs).sum(dim=-2)
    return out


@pytest.mark.parametrize(("h", "w", "r", "block"), [(5, 7, 2, None), (11, 9, 3, 2), (13, 6, 0, None), (9, 9, 4, 5)])
def test_matches_a_loop_over_queries(h: int, w: int, r: int, block: int | None) -> None:
    g = torch.Generator().manual_seed(h * w + r)
    q, k, v = (torch.randn(2, 3, h, w, 4, generator=g) for _ in range(3))
    torch.testing.assert_close(neighborhood_attention(q, k, v, r, block), _loop(q, k, v, r), atol=1e-5, rtol=1e-5)


def test_global_up_to_radius_plus_one_tokens_and_local_beyond() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 8, 8, 4, generator=g) for _ in range(3))
    flat = [t.reshape(1, 2, 64, 4) for t in (q, k, v)]
    full = torch.nn.functional.scaled_dot_product_attention(*flat).reshape(1, 2, 8, 8, 4)
    torch.testing.assert_close(neighborhood_attention(q, k, v, 7), full, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(neighborhood_attention(q, k, v, 3), full, atol=1e-3)


def test_a_crop_agrees_with_the_whole_grid_away_from_its_border() -> None:
    """Translation equivariance, what makes tiles agree with the untiled image: queries more than r tokens inside
    a crop see the same keys in the crop as in the whole grid."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 1, 24, 20, 4, generator=g) for _ in range(3))
    r = 3
    whole = neighborhood_attention(q, k, v, r)
    crop = neighborhood_attention(*(t[:, :, 5:17, 4:16] for t in (q, k, v)), r)  # (1, 1, 12, 12, 4)
    torch.testing.assert_close(crop[:, :, r:-r, r:-r], whole[:, :, 5 + r : 17 - r, 4 + r : 16 - r], atol=1e-5,
                               rtol=1e-5)  # fmt: skip
    assert not torch.allclose(crop[:, :, 0, 0], whole[:, :, 5, 4], atol=1e-3)  # at the crop's border it differs


def test_bad_arguments() -> None:
    q = torch.zeros(1, 1, 4, 4, 2)
    with pytest.raises(ValueError, match="radius"):
        neighborhood_attention(q, q, q, -1)
    with pytest.raises(ValueError, match="block"):
        neighborhood_attention(q, q, q, 2, block=4)
    with pytest.raises(ValueError, match="radius"):
        NeighborhoodAttnProcessor(-2)
    with pytest.raises(ValueError, match="attention_radius"):
        dataclasses.replace(SRConfig(), attention_radius=-1).validate()


def _block() -> Attention:
    """A spatial self-attention block as UNet2DModel's AttnDownBlock2D builds it."""
    torch.manual_seed(0)
    return Attention(32, heads=2, dim_head=16, norm_num_groups=8, residual_connection=True, bias=True,
                     upcast_softmax=True, _from_deprecated_attn_block=True).eval()  # fmt: skip


def test_processor_equals_diffusers_on_small_grids_and_the_context_restores_it() -> None:
    attn = _block()
    unet = torch.nn.Sequential(attn)
    x = torch.randn(2, 32, 6, 5)
    with torch.no_grad():
        ref = attn(x)
        with local_attention(unet, 5):  # 6 x 5 tokens <= radius + 1: global
            assert isinstance(attn.processor, NeighborhoodAttnProcessor)
            torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-5)
        with local_attention(unet, 1):
            local = attn(x)
        with local_attention(unet, None):  # None: unchanged
            torch.testing.assert_close(attn(x), ref)
    assert isinstance(attn.processor, AttnProcessor2_0)
    assert not torch.allclose(local, ref, atol=1e-4)
    with pytest.raises(ValueError, match="4-D"):
        NeighborhoodAttnProcessor(1)(attn, x.flatten(2).transpose(1, 2))
