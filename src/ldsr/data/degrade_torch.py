"""The degradation presets of `ldsr.data.degrade`, batched in torch on the tensors' device (CPU or CUDA).

A training loop that makes its LR here instead of in the CPU data loader is not starved by the loader
(`data.device_degrade: true`; the dataset then yields HR crops and a per-sample seed). Each operation agrees
with the numpy reference (tests/test_degrade_torch.py): blur, the MATLAB `imresize` down-sampling and the
k-space truncation to 1e-4; JPEG (an 8x8 DCT quantisation with libjpeg's tables, 4:2:0 chroma, written here
in torch) within 35 dB PSNR of Pillow's at the same quality; Gaussian and Rician noise in their statistics.

Randomness: every parameter (kernel sizes, sigmas, order, qualities, SNR, mixture choice) is drawn on the CPU
from the `torch.Generator` given to `degrade_batch`; the noise fields are drawn on the device from a
generator seeded by one draw of it. The same generator state gives the same LR batch on the same device.
The draws are not those of the numpy reference (a different generator); the distributions are.

Shapes: `degrade_batch` takes HR `(N, C, H, W)` in [-1, 1] (the model side) and returns LR
`(N, C, H/s, W/s)` in [-1, 1]; the operations below work on [0, 1] images.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ldsr.data.degrade import DOWN_METHODS, PRESETS, DegradeConfig, gaussian_kernel, kspace_window_1d
from ldsr.data.degrade import partial_fourier_mask as _pf_mask
from ldsr.data.resize import Kernel, axis_weights

Steps = list[dict[str, Any]]


# ----------------------------------------------------------------------------------------------------------
# random draws from a CPU torch.Generator


class Draw:
    """numpy-Generator-like draws (random, uniform, integers, choice, permutation) from a CPU torch.Generator."""

    def __init__(self, generator: torch.Generator) -> None:
        if generator.device.type != "cpu":
            raise ValueError(
                f"degrade_batch draws its parameters from a CPU torch.Generator, got one on {generator.device}"
            )
        self.g = generator

    def random(self) -> float:
        return float(torch.rand((), generator=self.g, dtype=torch.float64))

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()

    def integers(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi) (numpy's convention)."""
        return int(torch.randint(int(lo), int(hi), (), generator=self.g))

    def choice(self, p: Sequence[float]) -> int:
        return int(torch.multinomial(torch.tensor(p, dtype=torch.float64), 1, generator=self.g))

    def permutation(self, n: int) -> list[int]:
        return [int(i) for i in torch.randperm(n, generator=self.g)]

    def seed(self) -> int:
        return int(torch.randint(0, 2**62, (), generator=self.g))


def generator_for(seeds: torch.Tensor | Sequence[int]) -> torch.Generator:
    """A CPU generator determined by a batch's per-sample seeds (SHA-256 of their int64 bytes).

    The data loader's seeds depend only on the global sample numbers, so a resumed run makes the same LR.
    """
    arr = np.asarray(seeds.cpu() if isinstance(seeds, torch.Tensor) else list(seeds), dtype=np.int64)
    digest = hashlib.sha256(arr.tobytes()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % 2**63)


# ----------------------------------------------------------------------------------------------------------
# deterministic operations on (N, C, H, W) float images in [0, 1]


def _check(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected an (N, C, H, W) tensor with C in {{1, 3}}, got {getattr(x, 'shape', None)}")


def _mirror(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of a symmetric extension (d c b a | a b c d | d c b a) by `before` / `after` samples."""
    i = torch.arange(-before, n + after, device=device) % (2 * n)  # period-2n reflection, any pad width
    return torch.where(i < n, i, 2 * n - 1 - i)


def blur(x: torch.Tensor, kernel: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Convolve every channel with a 2-D odd-sided kernel, symmetric borders, clipped to [0, 1].

    `kernel` is `(kh, kw)` for the whole batch or `(N, kh, kw)` per sample (as `ldsr.data.degrade.blur`,
    whose 'reflect' / 'symmetric' border is this extension).
    """
    _check(x)
    k = torch.as_tensor(kernel, dtype=x.dtype, device=x.device)
    k = k.expand(x.shape[0], *k.shape) if k.ndim == 2 else k
    if k.ndim != 3 or k.shape[0] != x.shape[0] or k.shape[1] % 2 == 0 or k.shape[2] % 2 == 0:
        raise ValueError(f"blur kernel must be (kh, kw) or (N, kh, kw) with odd sides, got {tuple(k.shape)}")
    n, c, h, w = x.shape
    r0, r1 = k.shape[1] // 2, k.shape[2] // 2
    xp = x[:, :, _mirror(h, r0, r0, x.device)][:, :, :, _mirror(w, r1, r1, x.device)]  # (N, C, H+2r0, W+2r1)
    if k.shape[1] * k.shape[2] > 49:
        # Large kernels by FFT (as the numpy reference): the circular convolution of the padded image with
        # the kernel at the origin equals the linear one at output indices >= 2r (no wrap-around there).
        size = xp.shape[-2:]
        spec = torch.fft.rfft2(xp, s=size) * torch.fft.rfft2(k, s=size)[:, None]
        y = torch.fft.irfft2(spec, s=size)[:, :, 2 * r0 :, 2 * r1 :]
    else:
        # One group per (sample, channel): weight (N*C, 1, kh, kw); conv2d correlates, so flip the kernel.
        weight = k.flip(-1, -2).repeat_interleave(c, dim=0)[:, None]
        y = F.conv2d(xp.reshape(1, n * c, h + 2 * r0, w + 2 * r1), weight, groups=n * c).reshape(n, c, h, w)
    return y.clamp(0.0, 1.0)


def _resize_matrix(n_in: int, n_out: int, kernel: Kernel, device: torch.device) -> torch.Tensor:
    """(n_out, n_in) matrix of MATLAB imresize along one axis (antialiased; mirrored taps summed)."""
    scale = n_out / n_in
    w, idx = axis_weights(n_in, n_out, scale, kernel, antialias=kernel != "nearest")
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.repeat(np.arange(n_out), idx.shape[1]), idx.reshape(-1)), w.reshape(-1))
    return torch.as_tensor(m, dtype=torch.float32, device=device)


def imresize(x: torch.Tensor, size: tuple[int, int], kernel: Kernel = "bicubic") -> torch.Tensor:
    """MATLAB `imresize(x, [h w], kernel)` with antialiasing, as `ldsr.data.resize.imresize` (not clipped).

    Separable: y = R_h x R_w^T with the (out, in) matrices of each axis; an axis whose size does not change
    is left alone (the numpy reference skips it too).
    """
    _check(x)
    if kernel not in DOWN_METHODS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {DOWN_METHODS}")
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"size must be two positive integers, got {size}")
    y = x
    if h != x.shape[2]:
        y = torch.matmul(_resize_matrix(x.shape[2], h, kernel, x.device).to(x.dtype), y)  # (N, C, h, W)
    if w != x.shape[3]:
        y = torch.matmul(y, _resize_matrix(x.shape[3], w, kernel, x.device).to(x.dtype).T)  # (N, C, h, w)
    return y


def downsample(x: torch.Tensor, size: tuple[int, int], method: Kernel = "bicubic") -> torch.Tensor:
    """`imresize` to `size`, clipped to [0, 1] (as `ldsr.data.degrade.downsample`)."""
    return imresize(x, size, method).clamp(0.0, 1.0)


def add_gaussian_noise(
    x: torch.Tensor, sigma: float | torch.Tensor, generator: torch.Generator, per_channel: bool
) -> torch.Tensor:
    """x + N(0, sigma^2), clipped; grey noise shares one field across channels. `sigma` per sample: (N,)."""
    _check(x)
    n, c, h, w = x.shape
    field = torch.randn((n, c if per_channel else 1, h, w), generator=generator, device=x.device, dtype=x.dtype)
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    return (x + s * field).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# JPEG: libjpeg's baseline codec (as Pillow runs it) written with torch operations

_LUMA_Q = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
           14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
           49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]  # fmt: skip
_CHROMA_Q = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
             47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32  # fmt: skip


def jpeg_quant_table(quality: int, chroma: bool = False) -> np.ndarray:
    """libjpeg's jpeg_set_quality table (8, 8): base * s / 100 rounded, s = 5000/q (q < 50) or 200 - 2q,
    clamped to [1, 255] (baseline, as Pillow writes it)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must lie in [1, 100], got {quality}")
    s = 5000 // quality if quality < 50 else 200 - 2 * quality
    base = np.array(_CHROMA_Q if chroma else _LUMA_Q, dtype=np.int64)
    return np.clip((base * s + 50) // 100, 1, 255).reshape(8, 8).astype(np.float64)


def _dct_matrix(device: torch.device) -> torch.Tensor:
    # D[u, x] = C(u) / 2 cos((2x + 1) u pi / 16), C(0) = 1/sqrt(2): JPEG's 8-point DCT-II, orthonormal.
    u = np.arange(8)[:, None]
    d = 0.5 * np.cos((2 * np.arange(8)[None, :] + 1) * u * np.pi / 16)
    d[0] /= math.sqrt(2.0)
    return torch.as_tensor(d, dtype=torch.float32, device=device)


def _dct_quantise(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(N, H, W) samples 0..255 (H, W multiples of 8) -> level shift, DCT, round(F / Q) Q, IDCT, +128."""
    n, h, w = plane.shape
    d = _dct_matrix(plane.device)
    # The 2-D DCT of a block b is D b D^T; on the flattened block (64,) it is one product with kron(D, D),
    # so all blocks of the batch go through a single (M, 64) x (64, 64) matrix product.
    k = torch.kron(d, d)  # (64, 64), orthonormal: its inverse is its transpose
    b = (plane - 128.0).reshape(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4).reshape(n, -1, 64)
    coef = b @ k.T  # (N, blocks, 64)
    q = table.reshape(n, 1, 64)
    rec = (torch.round(coef / q) * q) @ k
    return rec.reshape(n, h // 8, w // 8, 8, 8).permute(0, 1, 3, 2, 4).reshape(n, h, w) + 128.0


def _pad_to(x: torch.Tensor, mult: int) -> torch.Tensor:
    # Edge replication to a multiple of `mult` (libjpeg extends partial blocks with the last row / column).
    h, w = x.shape[-2:]
    return F.pad(x[:, None], (0, -w % mult, 0, -h % mult), mode="replicate")[:, 0]


def _upsample_h2v2(c: torch.Tensor) -> torch.Tensor:
    """libjpeg's 'fancy' h2v2 chroma up-sampling: each output weighs its 4 nearest inputs 9:3:3:1 (/16)."""
    n, h, w = c.shape
    p = F.pad(c[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]  # (N, h+2, w+2)
    out = torch.empty((n, 2 * h, 2 * w), dtype=c.dtype, device=c.device)
    centre = p[:, 1:-1, 1:-1]
    for dy, oy in ((-1, 0), (1, 1)):  # output row 2i uses input row i-1 as its far row, 2i+1 uses i+1
        for dx, ox in ((-1, 0), (1, 1)):
            vert = p[:, 1 + dy : 1 + dy + h, 1:-1]
            horiz = p[:, 1:-1, 1 + dx : 1 + dx + w]
            diag = p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            out[:, oy::2, ox::2] = (9 * centre + 3 * vert + 3 * horiz + diag) / 16.0
    return out


def _jpeg8(q8: torch.Tensor, quality: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) integer-valued 0..255 -> the decoded JPEG, integer-valued 0..255."""
    n, c, h, w = q8.shape
    dev = q8.device
    lq = torch.as_tensor(np.stack([jpeg_quant_table(q) for q in quality]), dtype=torch.float32, device=dev)
    if c == 1:
        y = _dct_quantise(_pad_to(q8[:, 0], 8), lq)[:, :h, :w]
        return torch.round(y).clamp(0, 255)[:, None]
    cq = torch.as_tensor(np.stack([jpeg_quant_table(q, True) for q in quality]), dtype=torch.float32, device=dev)
    r, g, b = q8[:, 0], q8[:, 1], q8[:, 2]
    # JFIF YCbCr, rounded to 8-bit samples as libjpeg's colour converter does.
    yy = torch.round(0.299 * r + 0.587 * g + 0.114 * b)
    cb = torch.round(-0.168736 * r - 0.331264 * g + 0.5 * b + 128.0)
    cr = torch.round(0.5 * r - 0.418688 * g - 0.081312 * b + 128.0)
    y_rec = _dct_quantise(_pad_to(yy, 16), lq)[:, :h, :w].round().clamp(0, 255)
    chroma = []
    for plane in (cb, cr):
        p16 = _pad_to(plane, 16)  # (N, H16, W16); 2x2 means with libjpeg's alternating rounding bias 1, 2
        s = p16[:, 0::2, 0::2] + p16[:, 1::2, 0::2] + p16[:, 0::2, 1::2] + p16[:, 1::2, 1::2]
        bias = torch.tensor([1.0, 2.0], device=dev).repeat(s.shape[-1] // 2)
        sub = torch.floor((s + bias) / 4.0)
        rec = _dct_quantise(sub, cq).round().clamp(0, 255)
        chroma.append(_upsample_h2v2(rec)[:, :h, :w])
    cb_r, cr_r = chroma[0] - 128.0, chroma[1] - 128.0
    rgb = torch.stack([y_rec + 1.402 * cr_r, y_rec - 0.344136 * cb_r - 0.714136 * cr_r, y_rec + 1.772 * cb_r], dim=1)
    return torch.round(rgb).clamp(0, 255)


def jpeg(x: torch.Tensor, quality: int | Sequence[int], bit_depth: int = 8) -> torch.Tensor:
    """JPEG round trip of x (N, C, H, W) in [0, 1] at `quality` (one, or one per sample), as `degrade.jpeg`.

    8-bit: the decoded 8-bit image / 255. 16-bit: the 8-bit JPEG's residual (jpeg8 - q8) / 255 is added to
    the 16-bit image, which keeps its fine grey levels.
    """
    _check(x)
    qs = [int(quality)] * x.shape[0] if isinstance(quality, (int, np.integer)) else [int(q) for q in quality]
    if len(qs) != x.shape[0]:
        raise ValueError(f"expected {x.shape[0]} JPEG qualities, got {len(qs)}")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    q8 = torch.round(x.clamp(0.0, 1.0).float() * 255.0)
    j8 = _jpeg8(q8, qs).to(x.dtype)
    if bit_depth == 8:
        return j8 / 255.0
    return (x + (j8 - q8.to(x.dtype)) / 255.0).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# k-space truncation and Rician noise


def kspace_lowres(
    x: torch.Tensor, size: tuple[int, int], weights_rows: torch.Tensor | None = None,
    weights_cols: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Complex (N, C, h, w) image of a size-(h, w) acquisition of x (N, C, H, W), as
    `ldsr.data.degrade.kspace_lowres`: the central k-space block, weights per sample ((N, h) / (N, w),
    centred order), the imresize-grid phase ramp, inverse FFT, times (h w) / (H W)."""
    _check(x)
    n, c, big_h, big_w = x.shape
    h, w = int(size[0]), int(size[1])
    k = torch.fft.fftshift(torch.fft.fft2(x.to(torch.float32)), dim=(-2, -1))
    top, left = big_h // 2 - h // 2, big_w // 2 - w // 2
    k = k[:, :, top : top + h, left : left + w]  # (N, C, h, w), DC at (h // 2, w // 2)
    dev = x.device
    wr = torch.ones((n, h), device=dev) if weights_rows is None else weights_rows.to(dev, torch.float32)
    wc = torch.ones((n, w), device=dev) if weights_cols is None else weights_cols.to(dev, torch.float32)
    kr = torch.arange(h, device=dev, dtype=torch.float64) - h // 2
    kc = torch.arange(w, device=dev, dtype=torch.float64) - w // 2
    dr, dc = (big_h / h - 1.0) / 2.0, (big_w / w - 1.0) / 2.0
    phase = 2 * math.pi * (kr[:, None] * dr / big_h + kc[None, :] * dc / big_w)  # (h, w), shift theorem
    ramp = torch.polar(torch.ones_like(phase), phase).to(torch.complex64)
    k = k * (wr[:, None, :, None] * wc[:, None, None, :]) * ramp
    return torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1))) * (h * w / (big_h * big_w))


def rician_magnitude(z: torch.Tensor, sigma: torch.Tensor | float, generator: torch.Generator) -> torch.Tensor:
    """|z + n_re + i n_im|, n ~ N(0, sigma^2) per sample ((N,) or scalar), clipped to [0, 1], float32."""
    s = torch.as_tensor(sigma, dtype=torch.float32, device=z.device).reshape(-1, 1, 1, 1)
    re = z.real + s * torch.randn(z.shape, generator=generator, device=z.device)
    im = z.imag + s * torch.randn(z.shape, generator=generator, device=z.device)
    return torch.hypot(re, im).clamp(0.0, 1.0)


def _kspace_batch(
    x: torch.Tensor, lr_hw: tuple[int, int], cfg: DegradeConfig, draw: Draw, noise: torch.Generator
) -> tuple[torch.Tensor, list[Steps]]:
    """The `kspace` model on a 1-channel batch, one set of parameters per sample (as the numpy chain)."""
    if x.shape[1] != 1:
        raise ValueError(f"the kspace preset models one MRI magnitude image and needs 1 channel, got {x.shape[1]}")
    h, w = lr_hw
    rows, cols, steps, snrs, noisy = [], [], [], [], []
    for _ in range(x.shape[0]):
        window = str(cfg.kspace_windows[draw.choice(cfg.kspace_window_probs)])
        alpha = draw.uniform(*cfg.tukey_alpha) if window == "tukey" else 1.0
        wr, wc = kspace_window_1d(h, window, alpha), kspace_window_1d(w, window, alpha)  # type: ignore[arg-type]
        step: dict[str, Any] = {"name": "kspace", "from": list(x.shape[2:]), "to": [h, w], "window": window}
        if window == "tukey":
            step["tukey_alpha"] = alpha
        if draw.random() < cfg.partial_fourier_prob:
            acquired, axis = draw.uniform(*cfg.partial_fourier), draw.integers(0, 2)
            side: Literal["low", "high"] = "low" if draw.random() < 0.5 else "high"
            if axis == 0:
                wr = wr * _pf_mask(h, acquired, side)
            else:
                wc = wc * _pf_mask(w, acquired, side)
            step["partial_fourier"] = {"acquired": acquired, "phase_axis": axis, "side": side}
        rows.append(wr)
        cols.append(wc)
        steps.append([step])
        noisy.append(draw.random() < cfg.rician_prob)
        snrs.append(draw.uniform(*cfg.snr) if noisy[-1] else math.inf)
    z = kspace_lowres(x, lr_hw, torch.as_tensor(np.stack(rows)), torch.as_tensor(np.stack(cols)))
    mag = z.abs()  # (N, 1, h, w)
    # sigma = mean foreground magnitude (> 10 % of the maximum) / SNR, per sample (ldsr.data.degrade.snr_sigma).
    peak = mag.amax(dim=(1, 2, 3), keepdim=True)
    fg = (mag > 0.1 * peak) & (peak > 0)
    mean_fg = (mag * fg).sum(dim=(1, 2, 3)) / fg.sum(dim=(1, 2, 3)).clamp(min=1)
    sigma = mean_fg / torch.tensor(snrs, device=x.device, dtype=mean_fg.dtype)
    for i, s in enumerate(sigma.tolist()):
        if noisy[i]:
            steps[i].append({"name": "rician", "snr": snrs[i], "sigma": s})
    return rician_magnitude(z, sigma, noise), steps


# ----------------------------------------------------------------------------------------------------------
# the BSRGAN-style chain, one sample at a time (each sample has its own sizes and order)


def _pick_method(cfg: DegradeConfig, draw: Draw) -> Kernel:
    return str(cfg.down_methods[draw.choice(cfg.down_probs)])  # type: ignore[return-value]


def _blur_step(x: torch.Tensor, cfg: DegradeConfig, draw: Draw) -> tuple[torch.Tensor, dict[str, Any]]:
    lo, hi = cfg.kernel_size
    size = lo + 2 * draw.integers(0, (hi - lo) // 2 + 1)  # odd sizes lo, lo+2, ..., hi
    if draw.random() < cfg.aniso_prob:
        sx, sy = draw.uniform(*cfg.aniso_sigma), draw.uniform(*cfg.aniso_sigma)
        theta, kind = draw.uniform(0.0, math.pi), "anisotropic"
    else:
        sx = sy = draw.uniform(*cfg.iso_sigma)
        theta, kind = 0.0, "isotropic"
    step = {"name": "blur", "kernel": kind, "size": size, "sigma_x": sx, "sigma_y": sy, "theta": theta}
    return blur(x, gaussian_kernel(size, sx, sy, theta)), step


def _down_step(
    x: torch.Tensor, size: tuple[int, int], method: Kernel, role: str
) -> tuple[torch.Tensor, dict[str, Any]]:
    step = {"name": "downsample", "role": role, "method": method, "from": list(x.shape[2:]), "to": list(size)}
    return downsample(x, size, method), step


def _op_order(cfg: DegradeConfig, draw: Draw) -> list[str]:
    order = ["blur1", "blur2", "down_random", "down_final", "noise", "jpeg"]
    if draw.random() < cfg.shuffle_prob:
        order = [order[i] for i in draw.permutation(len(order))]
        a, b = order.index("down_random"), order.index("down_final")
        if a > b:  # the random down-sampling must come before the one that lands on the LR grid
            order[a], order[b] = order[b], order[a]
    return order


def _chain_one(
    x: torch.Tensor, lr_hw: tuple[int, int], scale: int, cfg: DegradeConfig, draw: Draw, noise: torch.Generator,
    bit_depth: int,
) -> tuple[torch.Tensor, Steps]:  # fmt: skip
    """One (1, C, H, W) sample through the chain of `ldsr.data.degrade` (same steps, same records)."""
    steps: Steps = []
    step: dict[str, Any] | None
    h, w = x.shape[2:]
    if scale % 2 == 0 and scale >= 4 and draw.random() < cfg.prescale2_prob:
        x, pre = _down_step(x, (h // 2, w // 2), _pick_method(cfg, draw), "prescale2")
        steps.append(pre)
    for op in _op_order(cfg, draw):
        step = None
        if op in ("blur1", "blur2") and draw.random() < cfg.blur_probs[0 if op == "blur1" else 1]:
            x, step = _blur_step(x, cfg, draw)
        elif op == "down_random" and draw.random() < cfg.random_down_prob:
            r = x.shape[2] / lr_hw[0]
            f = draw.uniform(1.0, max(1.0, cfg.random_down_max * r))  # may undershoot the LR size, as BSRGAN
            size = (max(1, int(x.shape[2] / f)), max(1, int(x.shape[3] / f)))
            x, step = _down_step(x, size, _pick_method(cfg, draw), "random")
            step["factor"] = f
        elif op == "down_final":
            x, step = _down_step(x, lr_hw, _pick_method(cfg, draw), "final")
        elif op == "noise" and draw.random() < cfg.noise_prob:
            sigma255 = draw.uniform(*cfg.noise_sigma)
            per_channel = draw.random() < cfg.per_channel_prob and x.shape[1] > 1
            x = add_gaussian_noise(x, sigma255 / 255.0, noise, per_channel)
            step = {"name": "noise", "sigma_255": sigma255, "per_channel": per_channel}
        elif op == "jpeg" and draw.random() < cfg.jpeg_prob:
            x, step = _jpeg_step(x, cfg, draw, bit_depth, "chain")
        if step is not None:
            steps.append(step)
    if cfg.final_jpeg:
        x, last = _jpeg_step(x, cfg, draw, bit_depth, "final")
        steps.append(last)
    return x, steps


def _jpeg_step(
    x: torch.Tensor, cfg: DegradeConfig, draw: Draw, bit_depth: int, role: str
) -> tuple[torch.Tensor, dict[str, Any]]:
    q = draw.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)
    mode = "residual_on_16bit" if bit_depth == 16 else "8bit"
    return jpeg(x, q, bit_depth), {"name": "jpeg", "role": role, "quality": q, "jpeg_mode": mode}


def _plain_resize(cfg: DegradeConfig) -> bool:
    """True for a chain that is one deterministic down-sampling (the `bicubic` preset): batched in one call."""
    return (
        cfg.kind == "chain"
        and len(cfg.down_methods) == 1
        and cfg.blur_probs == (0.0, 0.0)
        and cfg.prescale2_prob == 0.0
        and cfg.random_down_prob == 0.0
        and cfg.noise_prob == 0.0
        and cfg.jpeg_prob == 0.0
        and not cfg.final_jpeg
    )


# ----------------------------------------------------------------------------------------------------------
# the batch


def _resolve(cfg: DegradeConfig | str) -> DegradeConfig:
    if isinstance(cfg, DegradeConfig):
        return cfg
    if cfg not in PRESETS:
        raise ValueError(f"unknown degradation preset {cfg!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[cfg]


def _bits(bit_depth: int | Sequence[int] | torch.Tensor, n: int) -> list[int]:
    bits = [int(bit_depth)] * n if isinstance(bit_depth, int) else [int(b) for b in bit_depth]
    if len(bits) != n or any(b not in (8, 16) for b in bits):
        raise ValueError(f"bit_depth must be 8 or 16 (one value or one per sample), got {bits}")
    return bits


def _run(
    x: torch.Tensor, lr_hw: tuple[int, int], scale: int, cfg: DegradeConfig, draw: Draw, noise: torch.Generator,
    bits: list[int],
) -> tuple[torch.Tensor, list[Steps]]:  # fmt: skip
    """[0, 1] batch -> [0, 1] LR batch and each sample's steps."""
    n = x.shape[0]
    if cfg.kind == "mixture":
        return _mixture(x, lr_hw, scale, cfg, draw, noise, bits)
    if cfg.kind == "kspace":
        return _kspace_batch(x, lr_hw, cfg, draw, noise)
    if _plain_resize(cfg):
        method: Kernel = cfg.down_methods[0]  # type: ignore[assignment]
        step = {"name": "downsample", "role": "final", "method": method, "from": list(x.shape[2:]), "to": list(lr_hw)}
        return downsample(x, lr_hw, method), [[dict(step)] for _ in range(n)]
    outs, steps = [], []
    for i in range(n):
        y, s = _chain_one(x[i : i + 1], lr_hw, scale, cfg, draw, noise, bits[i])
        outs.append(y)
        steps.append(s)
    return torch.cat(outs), steps


def _mixture(
    x: torch.Tensor, lr_hw: tuple[int, int], scale: int, cfg: DegradeConfig, draw: Draw, noise: torch.Generator,
    bits: list[int],
) -> tuple[torch.Tensor, list[Steps]]:  # fmt: skip
    """Per sample one preset of the mixture (kspace only for 1 channel); samples that drew the same run together."""
    weights = {str(k): float(v) for k, v in cfg.mixture if not (k == "kspace" and x.shape[1] != 1)}
    total = sum(weights.values())
    if not total > 0:
        raise ValueError(f"the degradation mixture {dict(cfg.mixture)} has no preset for {x.shape[1]}-channel images")
    names = list(weights)
    picks = [names[draw.choice([weights[k] / total for k in names])] for _ in range(x.shape[0])]
    out = torch.empty((x.shape[0], x.shape[1], *lr_hw), dtype=x.dtype, device=x.device)
    steps: list[Steps] = [[] for _ in picks]
    for name in dict.fromkeys(picks):
        idx = [i for i, p in enumerate(picks) if p == name]
        y, s = _run(x[idx], lr_hw, scale, PRESETS[name], draw, noise, [bits[i] for i in idx])
        out[idx] = y.to(x.dtype)
        for i, si in zip(idx, s):
            steps[i] = [{"name": "choice", "preset": name, "weights": weights}, *si]
    return out, steps


def degrade_batch_steps(
    hr: torch.Tensor,
    cfg: DegradeConfig | str,
    generator: torch.Generator,
    *,
    scale: int,
    bit_depth: int | Sequence[int] | torch.Tensor = 8,
) -> tuple[torch.Tensor, list[Steps]]:
    """`degrade_batch` that also returns each sample's applied steps (the records of `ldsr degrade`)."""
    _check(hr)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    n, _, h, w = hr.shape
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of scale {scale}")
    draw = Draw(generator)
    noise = torch.Generator(device=hr.device).manual_seed(draw.seed())
    x = ((hr.float() + 1.0) * 0.5).clamp(0.0, 1.0)  # [-1, 1] -> [0, 1]
    y, steps = _run(x, (h // scale, w // scale), scale, _resolve(cfg), draw, noise, _bits(bit_depth, n))
    return (y * 2.0 - 1.0).to(hr.dtype), steps


def degrade_batch(
    hr: torch.Tensor,
    cfg: DegradeConfig | str,
    generator: torch.Generator,
    *,
    scale: int,
    bit_depth: int | Sequence[int] | torch.Tensor = 8,
) -> torch.Tensor:
    """LR `(N, C, H/s, W/s)` in [-1, 1] of an HR batch `(N, C, H, W)` in [-1, 1], on the HR's device.

    Each sample gets its own draw of the preset (`cfg`: a `DegradeConfig` or a preset name); `generator` is
    a CPU torch.Generator (e.g. `generator_for(batch["seed"])`), `bit_depth` 8 or 16 per sample (how JPEG
    treats it, as in `ldsr.data.degrade.jpeg`).
    """
    return degrade_batch_steps(hr, cfg, generator, scale=scale, bit_depth=bit_depth)[0]
