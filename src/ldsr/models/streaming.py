"""Streamed autoencoding: the encoder and decoder run layer by layer in row strips (exact, ~1 feature map of memory).

A convolutional autoencoder's peak memory is set by its full-resolution layers, and a plain forward holds several
full-size temporaries per residual block: the GroupNorm output, the activation, each convolution's output, the
nearest-upsampled map before the up-sampler's convolution. Here every feature map is a list of row strips and
each layer is computed strip by strip:

    GroupNorm(x):       statistics (mean, var) per (sample, group), combined from the strips' moments;
    conv(act(norm(x))): every output row strip [r0, r1) from input rows [r0 s - p, (r1 - 1) s + k - p) (stride s,
                        kernel k, padding p; zero rows past the border), normalised and activated strip by strip;
    upsample + conv:    the strip's input rows are upsampled (nearest, x2) just before its convolution;
    residual block:     out = (shortcut(x) + conv2(act(norm2(h)))) / s with h = conv1(act(norm1(x))), added into
                        x's strips when the shortcut is the identity; otherwise conv1 and the 1x1 shortcut read x
                        in one pass.

A pass frees each input strip as soon as no later output strip reads it, so a layer holds about its output plus
what is left of its input: the peak is about one full-resolution map (two for an identity residual block) plus a
few strips, against about five maps for the plain forward. GroupNorm needs the whole map's statistics before the
first strip is normalised, so each map is read twice (statistics, then strips); the convolutions cost what they
cost in the plain forward. A mid-block with self-attention (at the latent's resolution, f^2 times smaller) runs
unchanged on the whole map. Supported: diffusers' ``Decoder`` / ``Encoder`` with GroupNorm
(``norm_type="group"``), ``UpDecoderBlock2D`` / ``DownEncoderBlock2D`` blocks (the autoencoders of
``ldsr.models.autoencoder``); `supports_streaming` says whether a module qualifies.

Beyond about 2048^2 outputs even one full-resolution map is too much (2 GiB for 32 channels at 4096^2): a map
larger than `SPILL_BYTES` keeps its strips in an unnamed temporary file (in TMPDIR), written once and read back
strip by strip, bit for bit, so a pass holds a few strips of it. Mid-blocks without self-attention stream like the
up / down blocks (their plain 3x3 convolutions would hold im2col buffers of 9x a latent-sized map).
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeGuard, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # diffusers is imported lazily at run time (supports_streaming tolerates a missing module)
    from diffusers.models.autoencoders.vae import Decoder, Encoder
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.upsampling import Upsample2D

# Elements per row strip (8 MB in fp32): rows = this // (N C W), at least 2. Thinner strips recompute more halo rows
# (norm + SiLU of the rows a 3x3 convolution shares with its neighbours): 2 MB strips decoded a 512^2 latent of
# mri-x4 about 20 % slower (4-row strips at 4096 columns).
STRIP_ELEMENTS = 1 << 21
# A feature map larger than this keeps its strips in a temporary file (_Map): 256 MiB is a 2048 x 2048 map of 16
# fp32 channels. The tiny autoencoders' decoders (16 / 32 channels at full / half resolution) spill one map per layer
# from about 2048^2 outputs on; a 4096^2 decode of mri-x4 then peaks at ~0.75 GB instead of over 2 GB.
SPILL_BYTES = 1 << 28

Rows = Callable[[int, int], torch.Tensor]  # (a, b) -> rows [a, b) of a convolution's input, (N, C, b - a, W)
_M = TypeVar("_M", bound=nn.Module)


def _entries(modules: Iterable[nn.Module] | None, kind: type[_M]) -> list[_M]:
    """A ModuleList's modules (None: no modules), each checked to be a `kind` (diffusers' ModuleLists hold plain
    ``Module`` for a type checker; `_supports_decoder` / `_supports_encoder` have checked the exact types)."""
    out = list(modules or ())
    for m in out:
        if not isinstance(m, kind):
            raise ValueError(f"streaming expected a {kind.__name__}, not {type(m).__name__}")
    return cast(list[_M], out)  # every entry is a `kind` (checked above; mypy cannot narrow a list)


class _Map:
    """A feature map (N, C, H, W) held as row strips, so that strips no later layer needs can be freed early.

    A map of more than `SPILL_BYTES` (given its expected `height`) keeps its strips in an unnamed temporary file
    instead: each strip is written once when computed and read back when a pass needs it (the last few stay in
    memory), so the process holds a few strips rather than a full-resolution map; the operating system's page cache
    keeps what is hot. Values are stored bit for bit, so spilling changes no result."""

    def __init__(self, height: int = 0, spill_bytes: int | None = None) -> None:
        self.expected = height  # rows the map will have (decides spilling at the first strip; 0: never spill)
        self.limit = SPILL_BYTES if spill_bytes is None else spill_bytes
        self.strips: list[torch.Tensor | None] = []  # in memory (None: freed or on file)
        self.bounds: list[tuple[int, int]] = []
        self.height = 0
        self.shape = (0, 0, 0)  # (N, C, W)
        self._file: io.BufferedRandom | None = None
        self._disk: list[tuple[int, tuple[int, ...], torch.dtype] | None] = []  # (offset, shape, dtype) per strip
        self._end = 0
        self._cache: dict[int, torch.Tensor] = {}  # strips read back last (a conv's window spans at most 3)

    @classmethod
    def split(cls, x: torch.Tensor) -> _Map:
        m = cls()
        for t in x.split(_strip_rows(x.shape[0], x.shape[1], x.shape[3]), dim=2):
            m.append(t)
        return m

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def append(self, t: torch.Tensor) -> None:
        """Add the next strip (N, C, rows, W)."""
        if not self.bounds:
            self.shape = (t.shape[0], t.shape[1], t.shape[3])
            nbytes = t[:, :, :1].numel() * t.element_size() * self.expected
            if nbytes > self.limit:
                self._file = cast(io.BufferedRandom, tempfile.TemporaryFile(prefix="ldsr-stream-"))
        self.bounds.append((self.height, self.height + t.shape[2]))
        self.height += t.shape[2]
        if self._file is None:
            self.strips.append(t)
            self._disk.append(None)
            return
        self.strips.append(None)
        self._disk.append((self._end, tuple(t.shape), t.dtype))
        self._write(len(self._disk) - 1, t)
        self._end += t.numel() * t.element_size()

    def _write(self, i: int, t: torch.Tensor) -> None:
        at = self._disk[i]
        assert self._file is not None and at is not None
        self._file.seek(at[0])
        self._file.write(t.detach().contiguous().view(torch.uint8).numpy().data)

    def strip(self, i: int) -> torch.Tensor:
        """Strip i (read back from the file when spilled)."""
        t = self.strips[i]
        if t is not None:
            return t
        if i in self._cache:
            return self._cache[i]
        at = self._disk[i]
        if at is None or self._file is None:
            raise RuntimeError(f"strip {i} was already freed")  # a bug in the pass order
        offset, shape, dtype = at
        buf = bytearray(math.prod(shape) * dtype.itemsize)
        self._file.seek(offset)
        self._file.readinto(buf)
        t = torch.frombuffer(buf, dtype=torch.uint8).view(dtype).reshape(shape)
        if len(self._cache) >= 3:
            self._cache.pop(next(iter(self._cache)))
        self._cache[i] = t
        return t

    def store(self, i: int, t: torch.Tensor) -> None:
        """Replace strip i (same shape) by t, e.g. after an in-place update of `strip(i)`."""
        if self._disk[i] is None:
            self.strips[i] = t
            return
        self._write(i, t)
        if i in self._cache:
            self._cache[i] = t

    def rows(self, a: int, b: int) -> torch.Tensor:
        """Rows [a, b) (a view when they lie in one strip)."""
        parts = []
        for i, (lo, hi) in enumerate(self.bounds):
            if hi > a and lo < b:
                parts.append(self.strip(i)[:, :, max(a, lo) - lo : min(b, hi) - lo])
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)

    def free_below(self, row: int) -> None:
        """Drop every strip whose rows all come before `row` (no later output strip of the pass reads them); the
        file of a spilled map is closed (and its space returned) when every strip is dropped."""
        for i, (_, hi) in enumerate(self.bounds):
            if hi <= row:
                self.strips[i] = None
                self._disk[i] = None
                self._cache.pop(i, None)
        if self._file is not None and all(d is None for d in self._disk):
            self._file.close()
            self._file = None

    def stats(self, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (biased) variance per (sample, group), each (N, G): strip moments combined in float64."""
        s1 = s2 = None
        count = 0
        for i in range(len(self.bounds)):
            t = self.strip(i)
            n = t.shape[0]
            var, mean = torch.var_mean(t.reshape(n, groups, -1).float(), dim=-1, unbiased=False)  # (N, G)
            k = t[0, 0].numel() * (t.shape[1] // groups)
            m, v = mean.double(), var.double()
            s1 = k * m if s1 is None else s1 + k * m
            s2 = k * (v + m * m) if s2 is None else s2 + k * (v + m * m)
            count += k
        assert s1 is not None and s2 is not None
        mean = s1 / count
        return mean, (s2 / count - mean * mean).clamp_min(0.0)

    def full(self) -> torch.Tensor:
        return torch.cat([self.strip(i) for i in range(len(self.bounds)) if self._live(i)], dim=2)

    def _live(self, i: int) -> bool:
        return self.strips[i] is not None or self._disk[i] is not None


def _strip_rows(n: int, c: int, w: int) -> int:
    return max(2, STRIP_ELEMENTS // max(1, n * c * w))


def _plain_resnet(r: nn.Module) -> bool:
    from diffusers.models.resnet import ResnetBlock2D

    return (type(r) is ResnetBlock2D and r.time_emb_proj is None and r.upsample is None and r.downsample is None
            and isinstance(r.nonlinearity, nn.SiLU) and isinstance(r.norm1, nn.GroupNorm)
            and isinstance(r.norm2, nn.GroupNorm))  # fmt: skip


def _supports_decoder(decoder: nn.Module) -> TypeGuard[Decoder]:
    from diffusers.models.autoencoders.vae import Decoder
    from diffusers.models.unets.unet_2d_blocks import UpDecoderBlock2D
    from diffusers.models.upsampling import Upsample2D

    if type(decoder) is not Decoder or not isinstance(decoder.conv_norm_out, nn.GroupNorm):
        return False
    if not isinstance(decoder.conv_act, nn.SiLU):
        return False
    for block in decoder.up_blocks:
        if type(block) is not UpDecoderBlock2D or not all(_plain_resnet(r) for r in block.resnets):
            return False
        for u in block.upsamplers or ():
            if (
                type(u) is not Upsample2D
                or not (u.use_conv and u.interpolate)
                or u.use_conv_transpose
                or u.norm is not None
            ):
                return False
    return True


def supports_streaming(module: nn.Module) -> bool:
    """True for a diffusers ``Decoder`` or ``Encoder`` whose layers streaming knows (GroupNorm, SiLU, resnets,
    nearest x2 / stride-2 convolutions); False for anything else, including a diffusers release whose module
    layout differs (the plain forward is then used)."""
    try:
        return _supports_decoder(module) or _supports_encoder(module)
    except (ImportError, AttributeError):
        return False


Affine = tuple[torch.Tensor, torch.Tensor]  # per-channel (scale, shift), each (N, C, 1, 1) float32


def _affine(gn: nn.GroupNorm, stats: tuple[torch.Tensor, torch.Tensor]) -> Affine:
    """GroupNorm(x) = x * scale + shift per (sample, channel), from the map's group statistics (N, G)."""
    mean, var = stats
    n, c, g = mean.shape[0], gn.num_channels, gn.num_groups
    rstd = torch.rsqrt(var + gn.eps)  # (N, G), float64
    scale = rstd.repeat_interleave(c // g, dim=1)  # (N, C)
    shift = -mean.repeat_interleave(c // g, dim=1) * scale
    if gn.affine:
        w, b = gn.weight.double(), gn.bias.double()
        scale, shift = scale * w, shift * w + b
    return scale.float().view(n, c, 1, 1), shift.float().view(n, c, 1, 1)


def _norm_act(x: torch.Tensor, affine: Affine) -> torch.Tensor:
    """silu(GroupNorm(x)) of a strip x (N, C, rows, W) with the whole map's statistics, in one fused pass (fp32, as
    GroupNorm under autocast) plus an in-place SiLU."""
    scale, shift = affine
    return F.silu(torch.addcmul(shift, x.float(), scale), inplace=True).to(x.dtype)


def _conv_strip(
    conv: nn.Conv2d, rows: Rows, height: int, r0: int, r1: int, pad: tuple[int, int, int, int] | None = None
) -> torch.Tensor:
    """Output rows [r0, r1) of `conv` (stride s, kernel k) over a virtual input of `height` rows given by `rows`,
    zero-padded by `pad` = (left, right, top, bottom) (default: the conv's own symmetric padding).

    Output row r reads padded rows [r s, r s + k), i.e. input rows [r s - top, r s + k - top)."""
    s, k = conv.stride[0], conv.kernel_size[0]
    if pad is None:
        p, q = _padding(conv)
        pad = (q, q, p, p)
    left, right, top, _ = pad
    lo, hi = r0 * s - top, (r1 - 1) * s + k - top
    a, b = max(lo, 0), min(hi, height)
    x = F.pad(rows(a, b), (left, right, a - lo, hi - b))  # zero rows / columns where the padding would be
    return F.conv2d(x, conv.weight, conv.bias, stride=s)  # (N, C_out, r1 - r0, W_out)


def _check_conv(conv: nn.Module | None, stride: int = 1) -> nn.Conv2d:
    """`conv` itself, when it is a zero-padded square Conv2d of `stride` (stride 1: 'same' size); else ValueError."""
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"streaming supports zero-padded convolutions with stride {stride} here, not {conv}")
    k, p = conv.kernel_size, conv.padding
    if (conv.stride != (stride, stride) or conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros"
            or isinstance(p, str) or k[0] != k[1] or (stride == 1 and k[0] != 2 * p[0] + 1)):  # fmt: skip
        raise ValueError(f"streaming supports zero-padded convolutions with stride {stride} here, not {conv}")
    return conv


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    """(rows, columns) of `conv`'s zero padding; `_check_conv` has rejected the string forms ('same', 'valid')."""
    p = conv.padding
    if isinstance(p, str):
        raise ValueError(f"streaming needs numeric padding, not {conv}")
    return p[0], p[1]


def _norm_conv(
    conv: nn.Conv2d, gn: nn.GroupNorm, x: _Map, free: bool, shortcut: nn.Conv2d | None = None
) -> tuple[_Map, _Map | None]:
    """conv(silu(gn(x))) strip by strip, and `shortcut(x)` (1x1) in the same pass; with `free`, x's strips are
    dropped as soon as the pass is past them."""
    _check_conv(conv)
    affine = _affine(gn, x.stats(gn.num_groups))
    p = _padding(conv)[0]
    out, side = _Map(x.height), (_Map(x.height) if shortcut is not None else None)
    for r0, r1 in x.bounds:
        out.append(_conv_strip(conv, lambda a, b: _norm_act(x.rows(a, b), affine), x.height, r0, r1))
        if side is not None and shortcut is not None:
            side.append(_conv_strip(shortcut, x.rows, x.height, r0, r1))
        if free:
            x.free_below(r1 - p)  # the next strip reads rows from r1 - p on
    return out, side


def _resnet(block: ResnetBlock2D, x: _Map) -> _Map:
    """ResnetBlock2D without time embedding; x is consumed (its strips are freed or overwritten).

    Identity shortcut: out = x + conv2(...), accumulated into x's strips (peak: x and h). Otherwise conv1 and the
    shortcut read x in one pass that frees x behind it (peak: about one x)."""
    shortcut = block.conv_shortcut
    if shortcut is not None:
        _check_conv(shortcut)
    h, side = _norm_conv(block.conv1, block.norm1, x, free=shortcut is not None, shortcut=shortcut)  # (N, C', H, W)
    out = x if side is None else side
    affine = _affine(block.norm2, h.stats(block.norm2.num_groups))
    conv2 = _check_conv(block.conv2)
    p = _padding(conv2)[0]
    for i, (r0, r1) in enumerate(out.bounds):
        y = _conv_strip(conv2, lambda a, b: _norm_act(h.rows(a, b), affine), h.height, r0, r1)
        t = out.strip(i)
        t += y
        if block.output_scale_factor != 1:
            t /= block.output_scale_factor
        out.store(i, t)
        h.free_below(r1 - p)
    return out


def _upsample(up: Upsample2D, x: _Map) -> _Map:
    """Upsample2D: nearest x2 then conv, (N, C, H, W) -> (N, C, 2H, 2W), never holding the (N, C, 2H, 2W)
    upsampled map; x's strips are freed behind the pass."""
    conv = _check_conv(up.conv)
    p = _padding(conv)[0]
    n, c, w = x.shape
    w2, height = 2 * w, 2 * x.height

    def rows(a: int, b: int) -> torch.Tensor:  # rows [a, b) of the nearest-x2 map: input rows a//2 ... (b-1)//2
        lo = a // 2
        u = F.interpolate(x.rows(lo, (b - 1) // 2 + 1), scale_factor=2.0, mode="nearest")
        return u[:, :, a - 2 * lo : b - 2 * lo]

    step = _strip_rows(n, max(c, conv.out_channels), w2)
    out = _Map(height)
    for r0 in range(0, height, step):
        r1 = min(r0 + step, height)
        out.append(_conv_strip(conv, rows, height, r0, r1))
        x.free_below((r1 - p) // 2)  # the next strip reads upsampled rows from r1 - p on
    return out


def _downsample(down: Downsample2D, x: _Map) -> _Map:
    """Downsample2D: 3x3 stride-2 conv, after a (0, 1, 0, 1) zero pad when its padding is 0 (diffusers' encoders);
    x's strips are freed behind the pass."""
    conv = _check_conv(down.conv, stride=2)
    k = conv.kernel_size[0]
    p = _padding(conv)[0]
    if down.padding == 0:  # F.pad(x, (0, 1, 0, 1)), then conv without padding
        pad = (0, 1, 0, 1)
    else:
        pad = (p, p, p, p)
    left, right, top, bottom = pad
    n, c, w = x.shape
    height = (x.height + top + bottom - k) // 2 + 1
    w_out = (w + left + right - k) // 2 + 1
    step = _strip_rows(n, max(c, conv.out_channels), w_out)
    out = _Map(height)
    for r0 in range(0, height, step):
        r1 = min(r0 + step, height)
        out.append(_conv_strip(conv, x.rows, x.height, r0, r1, pad=pad))
        x.free_below(r1 * 2 - top)  # the next strip reads input rows from r1 s - top on
    return out


def _conv_in(conv: nn.Module, x: torch.Tensor, dtype: torch.dtype | None = None) -> _Map:
    """conv(x) of a whole tensor x (N, C, H, W) as a map, strip by strip (optionally cast to `dtype`)."""
    conv = _check_conv(conv)
    n, _, height, w = x.shape
    step = _strip_rows(n, conv.out_channels, w)
    out = _Map(height)
    for r0 in range(0, height, step):
        y = _conv_strip(conv, lambda a, b: x[:, :, a:b], height, r0, min(r0 + step, height))
        out.append(y if dtype is None else y.to(dtype))
    return out


def _mid(block: nn.Module, x: _Map) -> _Map:
    """A ``UNetMidBlock2D`` at the latent's resolution (x is consumed): streamed when it has no self-attention (its
    resnets then run like the others; the plain forward's 3x3 convolutions hold im2col buffers of 9x a map, 1.2 GB
    for a 1024^2 latent of 32 channels); with attention, the plain forward on the whole map."""
    from diffusers.models.resnet import ResnetBlock2D

    attentions = list(getattr(block, "attentions", None) or ())
    resnets = list(getattr(block, "resnets", None) or ())
    if resnets and all(a is None for a in attentions) and all(_plain_resnet(r) for r in resnets):
        for r in _entries(resnets, ResnetBlock2D):
            x = _resnet(r, x)
        return x
    return _Map.split(block(x.full(), None))


def _supports_encoder(encoder: nn.Module) -> TypeGuard[Encoder]:
    from diffusers.models.autoencoders.vae import Encoder
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.unets.unet_2d_blocks import DownEncoderBlock2D

    if type(encoder) is not Encoder:
        return False
    for block in encoder.down_blocks:
        if type(block) is not DownEncoderBlock2D or not all(_plain_resnet(r) for r in block.resnets):
            return False
        for d in block.downsamplers or ():
            if type(d) is not Downsample2D or not d.use_conv or d.norm is not None:
                return False
    return True


def encode_streamed(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The diffusers ``Encoder`` forward of x (N, C, H, W) -> (N, c, H/f, W/f), streamed in row strips: conv_in,
    the down blocks' resnets and stride-2 convolutions strip by strip; the mid-block and output layers at the
    latent's resolution unchanged."""
    if not _supports_encoder(encoder):
        raise ValueError(
            f"encode_streamed supports diffusers' Encoder with GroupNorm down blocks, not {type(encoder).__name__}"
        )
    if encoder.training:
        raise ValueError("encode_streamed is for inference: put the encoder in eval mode (dropout) first")
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.unets.unet_2d_blocks import DownEncoderBlock2D

    with torch.no_grad():
        h = _conv_in(encoder.conv_in, x)  # (N, C_0, H, W)
        for block in _entries(encoder.down_blocks, DownEncoderBlock2D):
            for r in _entries(block.resnets, ResnetBlock2D):
                h = _resnet(r, h)
            for d in _entries(block.downsamplers, Downsample2D):
                h = _downsample(d, h)  # (N, C, H/2, W/2)
        h = _mid(encoder.mid_block, h)  # (N, C_top, H/f, W/f)
        if isinstance(encoder.conv_norm_out, nn.GroupNorm) and isinstance(encoder.conv_act, nn.SiLU):
            return _norm_conv(encoder.conv_out, encoder.conv_norm_out, h, free=True)[0].full()
        return encoder.conv_out(encoder.conv_act(encoder.conv_norm_out(h.full())))


def decode_streamed(decoder: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The diffusers ``Decoder`` forward of z (N, c, h, w) -> (N, C, h f, w f), streamed in row strips (module doc)."""
    if not _supports_decoder(decoder):
        raise ValueError(
            f"decode_streamed supports diffusers' Decoder with GroupNorm up blocks, not {type(decoder).__name__}"
        )
    if decoder.training:
        raise ValueError("decode_streamed is for inference: put the decoder in eval mode (dropout) first")
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.unets.unet_2d_blocks import UpDecoderBlock2D
    from diffusers.models.upsampling import Upsample2D

    with torch.no_grad():
        dtype = next(iter(decoder.up_blocks.parameters())).dtype
        x = _conv_in(decoder.conv_in, z, dtype)  # (N, C_top, h, w): the latent grid
        x = _mid(decoder.mid_block, x)
        for block in _entries(decoder.up_blocks, UpDecoderBlock2D):
            for r in _entries(block.resnets, ResnetBlock2D):
                x = _resnet(r, x)
            for u in _entries(block.upsamplers, Upsample2D):
                x = _upsample(u, x)  # (N, C, 2H, 2W)
        # conv_norm_out is a GroupNorm (_supports_decoder checked it); mypy infers diffusers' other branch, SpatialNorm
        norm = cast(nn.GroupNorm, decoder.conv_norm_out)
        return _norm_conv(decoder.conv_out, norm, x, free=True)[0].full()  # (N, C_img, H, W)


@contextlib.contextmanager
def streamed(module: nn.Module) -> Iterator[bool]:
    """Within the block a diffusers ``Decoder`` / ``Encoder`` `module(x)` runs streamed (`decode_streamed` /
    `encode_streamed`) when it qualifies and is in eval mode; yields whether it does."""
    if module.training or not supports_streaming(module):
        yield False
        return
    if hasattr(module, "up_blocks"):  # a Decoder (supports_streaming accepted it)
        module.forward = lambda z, latent_embeds=None: decode_streamed(module, z)
    else:
        module.forward = lambda x: encode_streamed(module, x)
    try:
        yield True
    finally:
        del module.forward
