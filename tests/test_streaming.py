"""ldsr.models.streaming: the strip-by-strip encoder and decoder forwards equal diffusers' forwards, and are wired into
encode/decode and the latent upscale."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ldsr.models import streaming
from ldsr.models.autoencoder import Autoencoder, AutoencoderConfig
from ldsr.models.streaming import decode_streamed, encode_streamed, streamed, supports_streaming


def _autoencoder(kind: str, preset: str, channels: int) -> Autoencoder:
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(kind=kind, factor=4, preset=preset, latent_channels=3), channels).eval()
    for m in ae.modules():  # GroupNorm affine parameters away from (1, 0), so that a wrong statistic shows
        if isinstance(m, nn.GroupNorm):
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)
    return ae


_CASES = [
    ("vae", "tiny", 1, (10, 14)),
    ("vqvae", "tiny", 3, (9, 8)),
    ("vae", "small", 1, (16, 12)),
    ("vqvae", "small", 3, (7, 20)),
]
_STRIPS = [1 << 19, 64]  # default strips; 2-row strips everywhere


@pytest.mark.parametrize("kind,preset,channels,size", _CASES)
@pytest.mark.parametrize("strip_elements", _STRIPS)
def test_streamed_decoder_equals_the_plain_forward(
    kind: str, preset: str, channels: int, size: tuple[int, int], strip_elements: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streaming, "STRIP_ELEMENTS", strip_elements)
    dec = _autoencoder(kind, preset, channels).net.decoder
    assert supports_streaming(dec)
    z = torch.randn(2, dec.conv_in.in_channels, *size)
    z[0, :, : size[0] // 2] *= 0.01  # a flat half, as MRI background: statistics must be the whole map's
    with torch.no_grad():
        plain = dec(z)
        out = decode_streamed(dec, z)
    assert out.shape == plain.shape == (2, channels, 4 * size[0], 4 * size[1])
    assert float((out - plain).abs().max()) < 1e-4


@pytest.mark.parametrize("kind,preset,channels,size", _CASES)
@pytest.mark.parametrize("strip_elements", _STRIPS)
def test_streamed_encoder_equals_the_plain_forward(
    kind: str, preset: str, channels: int, size: tuple[int, int], strip_elements: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stride-2 convolutions after diffusers' (0, 1, 0, 1) pad, strip by strip, on odd latent sizes."""
    monkeypatch.setattr(streaming, "STRIP_ELEMENTS", strip_elements)
    enc = _autoencoder(kind, preset, channels).net.encoder
    assert supports_streaming(enc)
    x = torch.rand(2, channels, 4 * size[0], 4 * size[1]) * 2 - 1
    x[0, :, : 2 * size[0]] = -1.0  # a flat half
    with torch.no_grad():
        plain = enc(x)
        out = encode_streamed(enc, x)
    assert out.shape == plain.shape and out.shape[-2:] == size
    assert float((out - plain).abs().max()) < 1e-4


def test_autoencoder_decode_streamed_flag() -> None:
    ae = _autoencoder("vqvae", "tiny", 1)
    z = torch.randn(1, 3, 12, 12)
    x = torch.rand(1, 1, 48, 48) * 2 - 1
    with torch.no_grad():
        assert float((ae.decode(z, streamed=True) - ae.decode(z)).abs().max()) < 1e-4
        assert float((ae.encode(x, streamed=True) - ae.encode(x)).abs().max()) < 1e-4
    assert "forward" not in ae.net.decoder.__dict__ and "forward" not in ae.net.encoder.__dict__  # patches removed
    ae.train()  # train mode: the plain forward (dropout, gradients), whatever the flag
    with streamed(ae.net.decoder) as active:
        assert not active
    out = ae.decode(z, streamed=True)
    assert out.requires_grad


def test_unsupported_decoders_and_modes_raise() -> None:
    conv = nn.Conv2d(3, 3, 3, padding=1)
    assert not supports_streaming(conv)
    with pytest.raises(ValueError, match="Decoder"):
        decode_streamed(conv, torch.zeros(1, 3, 4, 4))
    with streamed(conv) as active:
        assert not active
    dec = _autoencoder("vae", "tiny", 1).net.decoder.train()
    with pytest.raises(ValueError, match="eval mode"):
        decode_streamed(dec, torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="Encoder"):
        encode_streamed(dec, torch.zeros(1, 1, 16, 16))


def test_residual_latent_upscale_encodes_and_decodes_streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    from ldsr.models.sr import SRConfig, build_model

    calls: list[tuple[str, tuple[int, ...]]] = []
    dec, enc = streaming.decode_streamed, streaming.encode_streamed
    monkeypatch.setattr(
        streaming, "decode_streamed", lambda m, z: calls.append(("decode", tuple(z.shape))) or dec(m, z)
    )
    monkeypatch.setattr(
        streaming, "encode_streamed", lambda m, x: calls.append(("encode", tuple(x.shape))) or enc(m, x)
    )
    ae = _autoencoder("vae", "tiny", 1)
    cfg = SRConfig(space="latent", unet="tiny", timesteps=10, sampler="ddim", steps=2, residual=True)
    model = build_model(cfg, 1, 4, autoencoder=ae).eval()
    lr = torch.rand(1, 1, 24, 24) * 2 - 1
    out = model.upscale(lr, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, 1, 96, 96)
    assert calls == [("encode", (1, 1, 96, 96)), ("decode", (1, 3, 24, 24))]  # z(bicubic(LR)), then the result


def test_streamed_under_bf16_autocast_is_as_accurate_as_the_plain_forward() -> None:
    """Mixed precision (the GPU path; bf16 autocast on CPU here): normalisation in fp32, convolutions in bf16."""
    ae = _autoencoder("vae", "small", 3)
    z, x = torch.randn(1, 3, 16, 16), torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ref_d, ref_e = ae.net.decoder(z), ae.net.encoder(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pairs = [(ae.net.decoder(z), decode_streamed(ae.net.decoder, z), ref_d),
                     (ae.net.encoder(x), encode_streamed(ae.net.encoder, x), ref_e)]  # fmt: skip
    for plain, out, ref in pairs:
        err_plain, err = float((plain.float() - ref).abs().max()), float((out.float() - ref).abs().max())
        assert err < max(2 * err_plain, 1e-2), (err, err_plain)


@pytest.mark.parametrize("kind,preset,channels,size", _CASES[:2])
def test_spilled_maps_give_the_same_bits_and_hold_few_strips(
    kind: str, preset: str, channels: int, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every map on file (SPILL_BYTES 0, 2-row strips): decode and encode equal the in-memory streamed ones exactly,
    and no spilled map ever holds more than its read-back cache of strips in memory."""
    monkeypatch.setattr(streaming, "STRIP_ELEMENTS", 64)
    ae = _autoencoder(kind, preset, channels)
    z = torch.randn(1, ae.net.decoder.conv_in.in_channels, *size)
    x = torch.rand(1, channels, 4 * size[0], 4 * size[1]) * 2 - 1
    with torch.no_grad():
        dec_mem, enc_mem = decode_streamed(ae.net.decoder, z), encode_streamed(ae.net.encoder, x)
    held: list[int] = []
    spilled: list[bool] = []
    strip = streaming._Map.strip

    def counting(self: streaming._Map, i: int) -> torch.Tensor:
        spilled.append(self.spilled)
        if self.spilled:
            held.append(sum(t is not None for t in self.strips) + len(self._cache))
        return strip(self, i)

    monkeypatch.setattr(streaming, "SPILL_BYTES", 0)
    monkeypatch.setattr(streaming._Map, "strip", counting)
    with torch.no_grad():
        dec_file, enc_file = decode_streamed(ae.net.decoder, z), encode_streamed(ae.net.encoder, x)
    assert torch.equal(dec_file, dec_mem) and torch.equal(enc_file, enc_mem)
    assert any(spilled) and held and max(held) <= 3


def test_a_spilled_map_reads_back_rows_updates_and_frees() -> None:
    m = streaming._Map(height=6, spill_bytes=0)
    x = torch.arange(2 * 3 * 6 * 4, dtype=torch.float32).reshape(2, 3, 6, 4)
    for t in x.split(2, dim=2):
        m.append(t.clone())
    assert m.spilled and m.height == 6 and m.shape == (2, 3, 4)
    assert torch.equal(m.rows(1, 5), x[:, :, 1:5]) and torch.equal(m.full(), x)
    t = m.strip(1)
    t += 1
    m.store(1, t)
    assert torch.equal(m.rows(2, 4), x[:, :, 2:4] + 1)
    mean, var = m.stats(3)
    y = x.clone()
    y[:, :, 2:4] += 1
    v, mu = torch.var_mean(y.reshape(2, 3, -1).double(), dim=-1, unbiased=False)
    assert torch.allclose(mean, mu) and torch.allclose(var, v)
    m.free_below(4)
    with pytest.raises(RuntimeError, match="already freed"):
        m.rows(0, 2)
    m.free_below(6)
    assert not m.spilled  # file closed once every strip is dropped


def test_blockwise_quantizer_equals_diffusers_and_a_streamed_vq_decode_the_plain_one() -> None:
    from ldsr.models.autoencoder import quantize_blocks

    ae = _autoencoder("vqvae", "tiny", 1)
    z = torch.randn(2, 3, 11, 9)
    with torch.no_grad():
        ref = ae.net.quantize(z)[0]
        assert torch.equal(quantize_blocks(ae.net.quantize, z, block=7), ref)
        assert torch.allclose(ae.decode(z, streamed=True), ae.decode(z), atol=1e-4)
