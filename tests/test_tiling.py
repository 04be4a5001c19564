"""ldsr.models.tiling: core layout, exactness for local decoders, image-wide GroupNorm statistics, wiring into
LatentSR."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ldsr.models.tiling import decode_tiled, tile_cores


@pytest.mark.parametrize("n,tile", [(5, 8), (8, 8), (9, 8), (32, 8), (33, 16), (100, 7)])
def test_tile_cores_partition(n: int, tile: int) -> None:
    cores = tile_cores(n, tile)
    assert cores[0][0] == 0 and cores[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))  # contiguous, no overlap
    assert all(0 < hi - lo <= tile for lo, hi in cores)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="tile"):
        tile_cores(10, 0)
    with pytest.raises(ValueError, match="latents"):
        decode_tiled(lambda z: z, torch.zeros(3, 4, 4), factor=4, tile=2)
    with pytest.raises(ValueError, match="halo"):
        decode_tiled(lambda z: z, torch.zeros(1, 3, 8, 8), factor=4, tile=2, halo=-1)


def test_pointwise_decoder_tiles_exactly_without_halo() -> None:
    torch.manual_seed(0)
    dec = nn.Sequential(nn.Conv2d(3, 8, 1), nn.SiLU(), nn.Upsample(scale_factor=4), nn.Conv2d(8, 2, 1))
    z = torch.randn(2, 3, 19, 23)
    with torch.no_grad():
        full = dec(z)
        for tile in (4, 8, 16, 64):
            assert torch.allclose(decode_tiled(dec, z, factor=4, tile=tile, halo=0), full, atol=1e-6), tile


def test_conv_decoder_is_exact_once_the_halo_covers_its_receptive_field() -> None:
    """3x3 convs: one at the latent grid (radius 1 latent position), two at 4x (radius 2/4): radius < 2."""
    torch.manual_seed(0)
    dec = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Upsample(scale_factor=4),
                        nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 1, 3, padding=1))  # fmt: skip
    z = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        full = dec(z)
        assert not torch.allclose(decode_tiled(dec, z, factor=4, tile=16, halo=0), full, atol=1e-4)
        assert torch.allclose(decode_tiled(dec, z, factor=4, tile=16, halo=2), full, atol=1e-5)
        assert torch.equal(decode_tiled(dec, z, factor=4, tile=40), full)  # one tile: the whole decode


def _tiny_autoencoder(kind: str = "vae"):  # noqa: ANN202
    from ldsr.models.autoencoder import Autoencoder, AutoencoderConfig

    torch.manual_seed(0)
    return Autoencoder(AutoencoderConfig(kind=kind, factor=4, preset="tiny", latent_channels=3), 1).eval()


@pytest.mark.parametrize("kind", ["vae", "vqvae"])
def test_image_group_norm_statistics_make_the_real_decoder_exact(kind: str) -> None:
    """The tiny decoder (convolutions + 17 GroupNorms): with per-tile statistics a half-background latent decodes
    wrongly; with the image's statistics and a 16-position halo it matches the whole decode."""
    ae = _tiny_autoencoder(kind)
    norms = [m for m in ae.modules() if isinstance(m, nn.GroupNorm)]
    z = torch.randn(1, 3, 40, 36)
    z[:, :, :20] *= 0.01  # a flat "background" half: per-tile GroupNorm would amplify it
    with torch.no_grad():
        full = ae.decode(z)
        per_tile = decode_tiled(ae.decode, z, factor=4, tile=16, halo=16)
        image = decode_tiled(ae.decode, z, factor=4, tile=16, halo=16, norms=norms)
    assert float((per_tile - full).abs().max()) > 0.1
    assert float((image - full).abs().max()) < 1e-4
    assert all("forward" not in m.__dict__ for m in norms)  # the patched forwards are removed


def test_latent_upscale_with_decode_tile() -> None:
    from ldsr.models.sr import SRConfig, build_model

    model = build_model(SRConfig(space="latent", unet="tiny", timesteps=10, sampler="ddim", steps=2), 1, 4,
                        autoencoder=_tiny_autoencoder()).eval()  # fmt: skip
    lr = torch.rand(1, 1, 40, 40) * 2 - 1
    whole = model.upscale(lr, generator=torch.Generator().manual_seed(0))
    tiled = model.upscale(lr, generator=torch.Generator().manual_seed(0), decode_tile=12)
    assert tiled.shape == whole.shape == (1, 1, 1, 160, 160)
    assert float((tiled - whole).abs().max()) < 1e-4
    with pytest.raises(ValueError, match="decode_tile"):
        model.upscale(lr, decode_tile=-1)


def test_tiled_net_with_image_statistics_matches_a_group_norm_net() -> None:
    """A pointwise net with one GroupNorm: per-window statistics change it, one statistics pass makes the tiled
    evaluation exact (the GroupNorm's input does not depend on the statistics); counted windows double."""
    from ldsr.models.tiling import count_windows, tiled_net

    gn = nn.GroupNorm(2, 4)
    net = lambda x, t: gn(x) * 2 + t[:, None, None, None]  # noqa: E731
    x, t = torch.randn(3, 4, 50, 37), torch.arange(3.0)
    x[:, :, :20] *= 0.01  # windows with very different statistics
    calls: list[int] = []
    with torch.no_grad():
        full = net(x, t)
        per_window = tiled_net(net, tile=16, overlap=4, batch=5)(x, t)
        image = tiled_net(net, tile=16, overlap=4, batch=5, norms=[gn], stats_passes=1, on_call=calls.append)(x, t)
    assert float((per_window - full).abs().max()) > 0.1
    assert float((image - full).abs().max()) < 1e-4
    assert sum(calls) == 2 * 3 * count_windows(50, 37, 16, 4)
    assert "forward" not in gn.__dict__


@pytest.mark.parametrize("kind", ["vae", "vqvae"])
def test_tiled_encode_with_image_statistics_is_exact(kind: str) -> None:
    from ldsr.models.tiling import encode_tiled

    ae = _tiny_autoencoder(kind)
    norms = [m for m in ae.modules() if isinstance(m, nn.GroupNorm)]
    x = torch.rand(1, 1, 160, 144) * 2 - 1
    x[:, :, :80] = -1.0  # a background half
    with torch.no_grad():
        full = ae.encode(x)
        tiled = encode_tiled(ae.encode, x, factor=4, tile=16, halo=16, norms=norms)
    assert tiled.shape == full.shape == (1, 3, 40, 36)
    assert float((tiled - full).abs().max()) < 1e-4


def test_residual_latent_upscale_encodes_its_base_in_tiles() -> None:
    from ldsr.models.sr import SRConfig, build_model

    model = build_model(SRConfig(space="latent", unet="tiny", timesteps=10, sampler="ddim", steps=2, residual=True),
                        1, 4, autoencoder=_tiny_autoencoder()).eval()  # fmt: skip
    lr = torch.rand(1, 1, 40, 40) * 2 - 1
    whole = model.sample_grid(lr, generator=torch.Generator().manual_seed(0))
    tiled = model.sample_grid(lr, generator=torch.Generator().manual_seed(0), encode_tile=12)
    assert tiled.shape == whole.shape == (1, 1, 3, 40, 40)
    assert float((tiled - whole).abs().max()) < 1e-4
