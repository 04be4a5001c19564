"""ldsr.tiling: tile layout, exactness for local decoders, bounded error with receptive fields, wiring."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ldsr.tiling import decode_tiled, tile_starts


@pytest.mark.parametrize("n,tile,overlap", [(5, 8, 2), (8, 8, 2), (9, 8, 2), (32, 8, 2), (33, 16, 4), (100, 16, 0)])
def test_tile_starts_cover_with_overlap(n: int, tile: int, overlap: int) -> None:
    starts = tile_starts(n, tile, overlap)
    assert starts[0] == 0 and starts[-1] + min(tile, n) == n
    covered = torch.zeros(n, dtype=torch.bool)
    for s in starts:
        covered[s : s + tile] = True
    assert bool(covered.all())
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # neighbours share >= overlap


def test_bad_tiles_raise() -> None:
    with pytest.raises(ValueError, match="overlap < tile"):
        tile_starts(10, 4, 4)
    with pytest.raises(ValueError, match="latents"):
        decode_tiled(lambda z: z, torch.zeros(3, 4, 4), factor=4, tile=2)


def _pointwise_decoder(c_z: int = 3, c: int = 2, f: int = 4) -> nn.Module:
    """1x1 convolutions and nearest upsampling: each output pixel depends on one latent position."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(c_z, 8, 1), nn.SiLU(), nn.Upsample(scale_factor=f), nn.Conv2d(8, c, 1))


def test_pointwise_decoder_tiles_exactly() -> None:
    dec = _pointwise_decoder()
    z = torch.randn(2, 3, 19, 23)
    full = dec(z)
    for tile in (4, 8, 16, 64):
        assert torch.allclose(decode_tiled(dec, z, factor=4, tile=tile), full, atol=1e-5), tile


def test_local_decoder_error_is_small_and_only_near_seams() -> None:
    """A 3x3-conv decoder (receptive field of 2 latent positions) differs from the whole decode only where a tile
    border cut its receptive field; with a quarter-tile overlap that difference is small."""
    torch.manual_seed(0)
    dec = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Upsample(scale_factor=4),
                        nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 1, 3, padding=1))  # fmt: skip
    z = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        full = dec(z)
        tiled = decode_tiled(dec, z, factor=4, tile=16, overlap=4)
        err = (tiled - full).abs()
        assert float(err.mean()) < 0.03 * float(full.abs().mean())
        assert float((err > 1e-5).float().mean()) < 0.35  # exact away from the seams
        # one tile: the whole decode, exactly
        assert torch.equal(decode_tiled(dec, z, factor=4, tile=40), full)


def test_latent_upscale_with_decode_tile(tmp_path) -> None:  # noqa: ANN001
    from ldsr.autoencoder import Autoencoder, AutoencoderConfig
    from ldsr.sr import SRConfig, build_model

    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(kind="vae", factor=4, preset="tiny", latent_channels=3), 1)
    model = build_model(SRConfig(space="latent", unet="tiny", timesteps=10, sampler="ddim", steps=2), 1, 4,
                        autoencoder=ae).eval()  # fmt: skip
    lr = torch.rand(1, 1, 32, 32) * 2 - 1
    whole = model.upscale(lr, generator=torch.Generator().manual_seed(0))
    tiled = model.upscale(lr, generator=torch.Generator().manual_seed(0), decode_tile=16)
    big = model.upscale(lr, generator=torch.Generator().manual_seed(0), decode_tile=32)
    assert tiled.shape == whole.shape == (1, 1, 1, 128, 128)
    assert torch.equal(big, whole)  # a tile as large as the latent: decoded whole
    assert float((tiled - whole).abs().mean()) < 0.1  # the same image up to seams and tile-local attention
    with pytest.raises(ValueError, match="decode_tile"):
        model.upscale(lr, decode_tile=-1)
