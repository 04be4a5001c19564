"""Synthetic degradation y = (x ⊗ k)↓s + n (blur, down-sampling, noise, JPEG), the MRI acquisition model
`kspace` (central k-space + Rician noise), the per-image mixture `blind`, and the folder job behind
`ldsr degrade`.

Every random choice comes from an explicit `np.random.Generator`; `rng_for(seed, name)` derives it from the
seed and the file's relative name only, so a file's LR image does not depend on file order or worker count.
"""

from __future__ import annotations

import hashlib
import io as _bytes_io
import json
import math
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from scipy import ndimage, signal

from ldsr.data.resize import imresize
from ldsr.io import ImageError, atomic_path, list_images, read_image, write_image
from ldsr.io.batch import BatchResult, run_batch

DownMethod = Literal["nearest", "bilinear", "bicubic"]
DOWN_METHODS: tuple[str, ...] = ("nearest", "bilinear", "bicubic")
KSpaceWindow = Literal["none", "hann", "tukey"]
KSPACE_WINDOWS: tuple[str, ...] = ("none", "hann", "tukey")
DegradeKind = Literal["chain", "kspace", "mixture"]
# Presets a mixture (`blind`) may draw from; `kspace` only for 1-channel images.
MIXTURE_PRESETS: tuple[str, ...] = ("bicubic", "light", "bsrgan", "kspace")
# Scale factors offered by the command line (the functions accept any integer >= 1).
CLI_SCALES: tuple[int, ...] = (2, 3, 4, 8)


@dataclass(frozen=True)
class DegradeConfig:
    """Ranges and probabilities of one degradation model. Sigmas of blur are in HR pixels; noise in /255.

    `kind` selects the model:
    * `chain` (after Zhang et al. 2021, BSRGAN): an optional pre-down-sampling by 2 (even scales >= 4),
      then the six operations [blur, blur, random down-sample, down-sample to the LR size, noise, JPEG],
      shuffled with probability `shuffle_prob` (the random down-sample always stays before the final one),
      then an optional final JPEG. Each operation runs with its own probability.
    * `kspace`: a lower-resolution MRI acquisition of a 1-channel magnitude image (see `kspace_lowres`):
      the central 1/s of k-space per axis, an optional Hann / Tukey window, optional partial Fourier, then
      Rician noise at an SNR drawn from `snr`.
    * `mixture`: per image one preset drawn from `mixture` ((name, weight) pairs; `kspace` is left out for
      3-channel images and the other weights renormalised).
    """

    kind: DegradeKind = "chain"

    # --- blur (two independent blur operations) ---
    blur_probs: tuple[float, float] = (1.0, 1.0)  # probability of the first and second blur
    aniso_prob: float = 0.5  # probability that a blur is anisotropic (else isotropic)
    iso_sigma: tuple[float, float] = (0.1, 2.8)  # isotropic std; BSRGAN x4: 2 + 0.2 s = 2.8
    aniso_sigma: tuple[float, float] = (0.1, 2.8)  # std along each principal axis; BSRGAN x4: sqrt(4 + s)
    kernel_size: tuple[int, int] = (7, 25)  # odd kernel sizes drawn uniformly from this closed range
    # rotation of the anisotropic kernel is uniform in [0, pi) (a Gaussian has period pi)
    # --- down-sampling ---
    prescale2_prob: float = 0.25  # for even scales >= 4: down-sample by 2 first (BSRGAN's "scale2" branch)
    random_down_prob: float = 1.0  # probability of the random down-sampling operation
    random_down_max: float = 2.0  # it shrinks by f ~ U(1, max * r), r = current size / LR size (may undershoot)
    down_methods: tuple[str, ...] = ("nearest", "bilinear", "bicubic")  # kernels of every down-sampling
    down_probs: tuple[float, ...] = (0.2, 0.4, 0.4)  # their probabilities (sum to 1)
    # --- noise ---
    noise_prob: float = 1.0  # probability of the additive Gaussian noise operation
    noise_sigma: tuple[float, float] = (2.0, 25.0)  # noise std in 8-bit units (divided by 255)
    per_channel_prob: float = 0.5  # colour noise (independent per channel) vs grey noise (shared)
    # --- JPEG ---
    jpeg_prob: float = 0.9  # probability of the in-chain JPEG operation
    jpeg_quality: tuple[int, int] = (30, 95)  # quality drawn uniformly from this closed range
    final_jpeg: bool = True  # BSRGAN always ends with one more JPEG
    # --- order ---
    shuffle_prob: float = 0.5  # probability that the six operations are applied in random order
    # --- kspace (kind "kspace") ---
    kspace_windows: tuple[str, ...] = ("none", "hann", "tukey")  # k-space apodisation windows ...
    kspace_window_probs: tuple[float, ...] = (0.5, 0.25, 0.25)  # ... and their probabilities
    tukey_alpha: tuple[float, float] = (0.2, 0.8)  # tapered share of the Tukey window, uniform in this range
    partial_fourier_prob: float = 0.3  # probability of a partial-Fourier acquisition (zero-filled)
    partial_fourier: tuple[float, float] = (0.625, 0.875)  # acquired share of phase-encode lines (5/8..7/8)
    rician_prob: float = 1.0  # probability of the Rician noise
    snr: tuple[float, float] = (10.0, 60.0)  # SNR = mean foreground magnitude / noise sigma, uniform
    # --- mixture (kind "mixture") ---
    mixture: tuple[tuple[str, float], ...] = ()  # (preset, weight) pairs; weights >= 0, any positive sum

    def __post_init__(self) -> None:
        probs = {
            "blur_probs[0]": self.blur_probs[0],
            "blur_probs[1]": self.blur_probs[1],
            "aniso_prob": self.aniso_prob,
            "prescale2_prob": self.prescale2_prob,
            "random_down_prob": self.random_down_prob,
            "noise_prob": self.noise_prob,
            "per_channel_prob": self.per_channel_prob,
            "jpeg_prob": self.jpeg_prob,
            "shuffle_prob": self.shuffle_prob,
            "partial_fourier_prob": self.partial_fourier_prob,
            "rician_prob": self.rician_prob,
        }
        for key, p in probs.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"DegradeConfig.{key} must be a probability in [0, 1], got {p}")
        for key in ("iso_sigma", "aniso_sigma", "noise_sigma", "kernel_size", "jpeg_quality"):
            lo, hi = getattr(self, key)
            if not 0 < lo <= hi:
                raise ValueError(f"DegradeConfig.{key} must be a range 0 < lo <= hi, got ({lo}, {hi})")
        if self.kernel_size[0] % 2 == 0 or self.kernel_size[1] % 2 == 0:
            raise ValueError(f"DegradeConfig.kernel_size bounds must be odd, got {self.kernel_size}")
        if self.jpeg_quality[1] > 100:
            raise ValueError(f"DegradeConfig.jpeg_quality must lie in [1, 100], got {self.jpeg_quality}")
        if self.random_down_max < 1.0:
            raise ValueError(f"DegradeConfig.random_down_max must be >= 1, got {self.random_down_max}")
        bad = [m for m in self.down_methods if m not in DOWN_METHODS]
        if bad or not self.down_methods:
            raise ValueError(f"DegradeConfig.down_methods must be a non-empty subset of {DOWN_METHODS}, got {bad}")
        if len(self.down_probs) != len(self.down_methods) or abs(sum(self.down_probs) - 1.0) > 1e-9:
            raise ValueError("DegradeConfig.down_probs must give one probability per down method, summing to 1")
        self._check_kspace()
        self._check_mixture()

    def _check_kspace(self) -> None:
        if self.kind not in ("chain", "kspace", "mixture"):
            raise ValueError(f"DegradeConfig.kind must be 'chain', 'kspace' or 'mixture', got {self.kind!r}")
        bad = [w for w in self.kspace_windows if w not in KSPACE_WINDOWS]
        if bad or not self.kspace_windows:
            raise ValueError(f"DegradeConfig.kspace_windows must be a non-empty subset of {KSPACE_WINDOWS}, got {bad}")
        probs = self.kspace_window_probs
        if len(probs) != len(self.kspace_windows) or abs(sum(probs) - 1.0) > 1e-9 or min(probs) < 0:
            raise ValueError("DegradeConfig.kspace_window_probs must give one probability per window, summing to 1")
        lo, hi = self.tukey_alpha
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"DegradeConfig.tukey_alpha must be a range 0 < lo <= hi <= 1, got ({lo}, {hi})")
        lo, hi = self.partial_fourier
        if not 0.5 <= lo <= hi <= 1.0:
            raise ValueError(f"DegradeConfig.partial_fourier must be a range 0.5 <= lo <= hi <= 1, got ({lo}, {hi})")
        lo, hi = self.snr
        if not 0.0 < lo <= hi:
            raise ValueError(f"DegradeConfig.snr must be a range 0 < lo <= hi, got ({lo}, {hi})")

    def _check_mixture(self) -> None:
        if self.kind != "mixture":
            if self.mixture:
                raise ValueError(f"DegradeConfig.mixture is only used with kind 'mixture', not {self.kind!r}")
            return
        names = [str(n) for n, _ in self.mixture]
        bad = [n for n in names if n not in MIXTURE_PRESETS]
        if not names or bad or len(set(names)) != len(names):
            raise ValueError(
                f"DegradeConfig.mixture must name distinct presets of {MIXTURE_PRESETS} with weights, got {names}"
            )
        weights = [float(w) for _, w in self.mixture]
        if min(weights) < 0 or not sum(weights) > 0 or not all(map(math.isfinite, weights)):
            raise ValueError(f"DegradeConfig.mixture weights must be finite, >= 0 and not all 0, got {weights}")


PRESETS: dict[str, DegradeConfig] = {
    # BSRGAN (Zhang et al. 2021): two blurs, random + final down-sampling, noise, JPEG, shuffled; final JPEG.
    "bsrgan": DegradeConfig(),
    # Weaker ranges, in the spirit of latent-diffusion's bsrgan_light: blur widths / 4, noise 1-2, JPEG 80-95.
    "light": DegradeConfig(
        iso_sigma=(0.1, 0.7),
        aniso_sigma=(0.1, 1.4),
        noise_sigma=(1.0, 2.0),
        jpeg_quality=(80, 95),
    ),
    # Classic bicubic SR: LR = clip(imresize(HR, 1/s), 0, 1), MATLAB bicubic with antialiasing, nothing else.
    "bicubic": DegradeConfig(
        blur_probs=(0.0, 0.0),
        prescale2_prob=0.0,
        random_down_prob=0.0,
        down_methods=("bicubic",),
        down_probs=(1.0,),
        noise_prob=0.0,
        jpeg_prob=0.0,
        final_jpeg=False,
        shuffle_prob=0.0,
    ),
    # A lower-resolution MRI acquisition (1-channel): central 1/s of k-space, window, partial Fourier, Rician.
    "kspace": DegradeConfig(kind="kspace"),
    # Blind: per image one of the presets above, equal weights (kspace only drawn for 1-channel images).
    "blind": DegradeConfig(
        kind="mixture", mixture=(("bicubic", 0.25), ("light", 0.25), ("bsrgan", 0.25), ("kspace", 0.25))
    ),
}


def degrade_config(preset: str, weights: dict[str, float] | None = None) -> DegradeConfig:
    """The `DegradeConfig` of a preset name, with mixture `weights` ({preset: weight}) for `blind`.

    Weights only apply to a mixture preset; giving them for any other preset is an error (they would be
    silently ignored otherwise).
    """
    cfg = _resolve(preset)
    if not weights:
        return cfg
    if cfg.kind != "mixture":
        raise ValueError(f"degradation weights only apply to the 'blind' preset, not {preset!r}")
    return replace(cfg, mixture=tuple((str(k), float(v)) for k, v in weights.items()))


# ----------------------------------------------------------------------------------------------------------
# Individual steps: pure functions on (H, W, C) float32 arrays in [0, 1].
# ----------------------------------------------------------------------------------------------------------


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float = 0.0) -> np.ndarray:
    """A `(size, size)` Gaussian kernel summing to 1; axis stds `sigma_x`, `sigma_y`, rotated by `theta` rad.

    Covariance: Sigma = R diag(sx^2, sy^2) R^T with R the rotation by theta; k(p) ∝ exp(-p^T Sigma^-1 p / 2)
    on the integer grid centred on the middle pixel. Equal sigmas give the isotropic kernel (theta is moot).
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer, got {size}")
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"kernel sigmas must be positive, got ({sigma_x}, {sigma_y})")
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    inv = np.linalg.inv(cov)
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    xx, yy = np.meshgrid(r, r)  # x along columns, y along rows
    quad = inv[0, 0] * xx * xx + 2.0 * inv[0, 1] * xx * yy + inv[1, 1] * yy * yy
    k = np.exp(-0.5 * quad)
    return k / k.sum()


def blur(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel of `x` (H, W, C) with the 2-D `kernel`; borders reflect (d c b a | a b c d).

    Small kernels (<= 7x7) use `scipy.ndimage.convolve(mode="reflect")`; larger ones pad the same way
    (`np.pad(mode="symmetric")`) and convolve by FFT, which is the same sum to ~1e-7 and 5-10x faster for
    the 25x25 kernels of BSRGAN on 256x256 images.
    """
    _check_image(x)
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"blur kernel must be a 2-D array with odd sides, got shape {k.shape}")
    xf = x.astype(np.float64)
    if k.size <= 49:
        out = np.stack([ndimage.convolve(xf[..., ch], k, mode="reflect") for ch in range(x.shape[2])], axis=-1)
    else:
        r0, r1 = k.shape[0] // 2, k.shape[1] // 2
        padded = np.pad(xf, ((r0, r0), (r1, r1), (0, 0)), mode="symmetric")
        # 'valid' keeps exactly the (H, W) positions whose kernel window lies inside the padded image.
        out = signal.fftconvolve(padded, k[:, :, None], mode="valid", axes=(0, 1))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def downsample(
    x: np.ndarray, scale: float, method: DownMethod = "bicubic", *, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Shrink `x` by `scale` (>= 1) with MATLAB `imresize` (antialiased bilinear/bicubic), or to `size`.

    With `size`, that exact `(h, w)` is produced and `scale` is only informative. The result is clipped to
    [0, 1] (bicubic overshoots at edges).
    """
    _check_image(x)
    if method not in DOWN_METHODS:
        raise ValueError(f"unknown down-sampling method {method!r}; expected one of {DOWN_METHODS}")
    if size is not None:
        y = imresize(x, size=size, kernel=method)
    else:
        if not scale >= 1.0:
            raise ValueError(f"down-sampling scale must be >= 1, got {scale}")
        y = imresize(x, 1.0 / scale, kernel=method)
    return np.clip(y, 0.0, 1.0).astype(np.float32, copy=False)


def add_gaussian_noise(x: np.ndarray, sigma: float, rng: np.random.Generator, per_channel: bool) -> np.ndarray:
    """Add N(0, sigma^2) noise (sigma in [0, 1] units); grey noise shares one draw across channels."""
    _check_image(x)
    h, w, c = x.shape
    n = rng.normal(0.0, sigma, size=(h, w, c if per_channel else 1))
    return np.clip(x + n, 0.0, 1.0).astype(np.float32)


def jpeg(x: np.ndarray, quality: int, bit_depth: int = 8) -> np.ndarray:
    """JPEG-compress `x` with Pillow at `quality` (1-channel as 'L', 3-channel as 'RGB').

    8-bit: the result is the decoded 8-bit JPEG / 255. 16-bit: JPEG only exists in 8 bits, so the 8-bit
    quantisation q8 is compressed and its residual (jpeg8 - q8) / 255 is added to the 16-bit image; the
    artefacts are there and the fine grey levels of the 16-bit data are kept (bit depth never drops).
    """
    _check_image(x)
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must lie in [1, 100], got {quality}")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    q8 = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    mode = "L" if x.shape[2] == 1 else "RGB"
    img = Image.fromarray(q8[..., 0] if mode == "L" else q8)
    buf = _bytes_io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        j8 = np.asarray(decoded.convert(mode), dtype=np.float32).reshape(x.shape)
    if bit_depth == 8:
        return (j8 / 255.0).astype(np.float32)
    residual = (j8 - q8.astype(np.float32)) / 255.0
    return np.clip(x + residual, 0.0, 1.0).astype(np.float32)


def kspace_window_1d(n: int, window: KSpaceWindow, alpha: float = 0.5) -> np.ndarray:
    """Apodisation weights `(n,)` of `n` k-space samples in centred order (DC at index n // 2).

    With r = |k| / (n / 2) the distance from DC relative to the Nyquist edge (k = index - n // 2):
    `none` is 1; `hann` is (1 + cos(pi r)) / 2; `tukey` is 1 for r <= 1 - alpha and
    (1 + cos(pi (r - 1 + alpha) / alpha)) / 2 beyond. Every window is exactly 1 at DC, so a constant image
    keeps its value.
    """
    if window not in KSPACE_WINDOWS:
        raise ValueError(f"unknown k-space window {window!r}; expected one of {KSPACE_WINDOWS}")
    r = np.abs(np.arange(n, dtype=np.float64) - n // 2) / (n / 2.0)
    if window == "none":
        return np.ones(n)
    if window == "hann":
        return 0.5 * (1.0 + np.cos(np.pi * r))
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"Tukey alpha must lie in (0, 1], got {alpha}")
    taper = 0.5 * (1.0 + np.cos(np.pi * np.clip(r - (1.0 - alpha), 0.0, None) / alpha))
    return np.where(r <= 1.0 - alpha, 1.0, taper)


def partial_fourier_mask(n: int, acquired: float, side: Literal["low", "high"]) -> np.ndarray:
    """0/1 weights `(n,)` (centred order) of a partial-Fourier acquisition of `n` phase-encode lines.

    round((1 - acquired) n) lines are not acquired at one edge (`low`: the most negative frequencies, `high`:
    the most positive), at most (n - 1) // 2 so that DC is always acquired. The missing lines are zero-filled
    (no homodyne / POCS reconstruction): the magnitude image gets the blur and ringing of that asymmetry.
    """
    if not 0.5 <= acquired <= 1.0:
        raise ValueError(f"partial-Fourier fraction must lie in [0.5, 1], got {acquired}")
    if side not in ("low", "high"):
        raise ValueError(f"partial-Fourier side must be 'low' or 'high', got {side!r}")
    drop = min(int(round((1.0 - acquired) * n)), (n - 1) // 2)
    m = np.ones(n)
    if drop:
        if side == "low":
            m[:drop] = 0.0
        else:
            m[n - drop :] = 0.0
    return m


def kspace_lowres(
    x: np.ndarray,
    size: tuple[int, int],
    *,
    weights_rows: np.ndarray | None = None,
    weights_cols: np.ndarray | None = None,
) -> np.ndarray:
    """The complex image `(h, w, C)` a `size = (h, w)` acquisition of magnitude image `x` (H, W, C) gives.

    K = fftshift(FFT2(x)) per channel (DC at (H // 2, W // 2)); the central h x w block
    K[H//2 - h//2 : H//2 - h//2 + h, ...] (DC lands at (h // 2, w // 2)) is multiplied by the separable
    weights (window, partial-Fourier mask; centred order, length h and w) and brought back with
    IFFT2(ifftshift(.)) * (h w) / (H W). The factor keeps intensities: numpy's IFFT divides by h w while
    the DC of x is H W mean(x), so a constant image keeps its value (every window is 1 at DC).

    Grid: plain truncation puts LR pixel i on HR position i (H / h); a phase ramp exp(2 pi i k d / H) with
    d = (H / h - 1) / 2 moves it to i (H / h) + d, the pixel-centre alignment of MATLAB `imresize` (and of
    every other preset), so HR and LR pairs are aligned the same way under every degradation.
    """
    _check_image(x)
    big_h, big_w = x.shape[:2]
    h, w = int(size[0]), int(size[1])
    if not (1 <= h <= big_h and 1 <= w <= big_w):
        raise ValueError(f"k-space output size {size} must lie within the image size {(big_h, big_w)}")
    k = np.fft.fftshift(np.fft.fft2(x.astype(np.float64), axes=(0, 1)), axes=(0, 1))
    top, left = big_h // 2 - h // 2, big_w // 2 - w // 2
    k = k[top : top + h, left : left + w]  # (h, w, C), DC at (h // 2, w // 2)
    wr = np.ones(h) if weights_rows is None else np.asarray(weights_rows, dtype=np.float64)
    wc = np.ones(w) if weights_cols is None else np.asarray(weights_cols, dtype=np.float64)
    if wr.shape != (h,) or wc.shape != (w,):
        raise ValueError(f"k-space weights must have shapes ({h},) and ({w},), got {wr.shape} and {wc.shape}")
    k = k * wr[:, None, None] * wc[None, :, None]
    # Shift theorem: x(n + d) has spectrum K(k) exp(2 pi i k d / N); k is the signed frequency index.
    kr = np.arange(h) - h // 2
    kc = np.arange(w) - w // 2
    dr, dc = (big_h / h - 1.0) / 2.0, (big_w / w - 1.0) / 2.0
    ramp = np.exp(2j * np.pi * (kr[:, None] * dr / big_h + kc[None, :] * dc / big_w))  # (h, w)
    k = k * ramp[:, :, None]
    z = np.fft.ifft2(np.fft.ifftshift(k, axes=(0, 1)), axes=(0, 1))
    return z * (h * w) / (big_h * big_w)


def snr_sigma(magnitude: np.ndarray, snr: float) -> float:
    """Noise std for an SNR: mean of the foreground (values above 10 % of the maximum) / snr; 0 if all zero.

    The SNR of MRI is quoted against the tissue signal, not the black background outside the body, hence
    the foreground mean. `magnitude` is the noise-free LR magnitude.
    """
    if not snr > 0:
        raise ValueError(f"SNR must be > 0, got {snr}")
    peak = float(np.max(magnitude)) if magnitude.size else 0.0
    if peak <= 0.0:
        return 0.0
    return float(np.mean(magnitude[magnitude > 0.1 * peak])) / float(snr)


def rician_magnitude(z: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """|z + n_re + i n_im| with n_re, n_im ~ N(0, sigma^2) independent: Rician noise on a complex image.

    Draw order (for reproducibility): the real parts, then the imaginary parts, each of z's shape. The
    result is clipped to [0, 1] and float32.
    """
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    re = z.real + rng.normal(0.0, sigma, size=z.shape)
    im = z.imag + rng.normal(0.0, sigma, size=z.shape)
    return np.clip(np.hypot(re, im), 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Crops and seeding
# ----------------------------------------------------------------------------------------------------------


def crop_to_multiple(x: np.ndarray, scale: int) -> np.ndarray:
    """Top-left crop of `x` so that H and W are multiples of `scale` (drops the last H % s rows, W % s cols).

    Top-left, as common SR code does, keeps pixel (0, 0) of HR and LR aligned.
    """
    _check_scale(scale)
    h, w = x.shape[0] - x.shape[0] % scale, x.shape[1] - x.shape[1] % scale
    if h == 0 or w == 0:
        raise ValueError(f"image of {x.shape[0]}x{x.shape[1]} is smaller than the scale {scale}")
    return x[:h, :w]


def center_crop(x: np.ndarray, size: int) -> np.ndarray:
    """The central `size x size` window (offset floor((H - size) / 2), likewise for W)."""
    h, w = x.shape[:2]
    if size < 1 or h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from an image of {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return x[top : top + size, left : left + size]


def random_crop(x: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly placed `size x size` window."""
    h, w = x.shape[:2]
    if size < 1 or h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from an image of {h}x{w}")
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return x[top : top + size, left : left + size]


def rng_for(seed: int, name: str) -> np.random.Generator:
    """A generator determined by (seed, name) only: SHA-256 of 'seed\\0name' seeds numpy's SeedSequence."""
    digest = hashlib.sha256(f"{int(seed)}\0{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


# ----------------------------------------------------------------------------------------------------------
# The degradation chain
# ----------------------------------------------------------------------------------------------------------


def _check_image(x: np.ndarray) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H, W, C) array with C in {{1, 3}}, got shape {getattr(x, 'shape', None)}")


def _check_scale(scale: int) -> None:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")


def _resolve(config: DegradeConfig | str) -> DegradeConfig:
    if isinstance(config, DegradeConfig):
        return config
    if config not in PRESETS:
        raise ValueError(f"unknown degradation preset {config!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[config]


def _pick_method(cfg: DegradeConfig, rng: np.random.Generator) -> str:
    return str(cfg.down_methods[int(rng.choice(len(cfg.down_methods), p=cfg.down_probs))])


def _blur_step(x: np.ndarray, cfg: DegradeConfig, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    lo, hi = cfg.kernel_size
    size = int(lo + 2 * rng.integers(0, (hi - lo) // 2 + 1))  # odd sizes lo, lo+2, ..., hi
    if rng.random() < cfg.aniso_prob:
        sx, sy = (float(rng.uniform(*cfg.aniso_sigma)) for _ in range(2))
        theta = float(rng.uniform(0.0, math.pi))
        kind = "anisotropic"
    else:
        sx = sy = float(rng.uniform(*cfg.iso_sigma))
        theta = 0.0
        kind = "isotropic"
    k = gaussian_kernel(size, sx, sy, theta)
    step = {"name": "blur", "kernel": kind, "size": size, "sigma_x": sx, "sigma_y": sy, "theta": theta}
    return blur(x, k), step


def _down_step(x: np.ndarray, size: tuple[int, int], method: str, role: str) -> tuple[np.ndarray, dict[str, Any]]:
    step = {"name": "downsample", "role": role, "method": method, "from": list(x.shape[:2]), "to": list(size)}
    return downsample(x, x.shape[0] / size[0], method, size=size), step  # type: ignore[arg-type]


def _random_down_step(
    x: np.ndarray, lr_hw: tuple[int, int], cfg: DegradeConfig, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    # r = remaining factor to the LR grid; f ~ U(1, max * r) may shrink below the LR size (the final step
    # then up-samples), as BSRGAN does, to vary the blur/aliasing mix.
    r = x.shape[0] / lr_hw[0]
    f = float(rng.uniform(1.0, max(1.0, cfg.random_down_max * r)))
    size = (max(1, int(x.shape[0] / f)), max(1, int(x.shape[1] / f)))
    y, step = _down_step(x, size, _pick_method(cfg, rng), "random")
    step["factor"] = f
    return y, step


def _noise_step(x: np.ndarray, cfg: DegradeConfig, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    sigma255 = float(rng.uniform(*cfg.noise_sigma))
    per_channel = bool(rng.random() < cfg.per_channel_prob) and x.shape[2] > 1
    step = {"name": "noise", "sigma_255": sigma255, "per_channel": per_channel}
    return add_gaussian_noise(x, sigma255 / 255.0, rng, per_channel), step


def _jpeg_step(
    x: np.ndarray, cfg: DegradeConfig, rng: np.random.Generator, bit_depth: int, role: str
) -> tuple[np.ndarray, dict[str, Any]]:
    q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    mode = "residual_on_16bit" if bit_depth == 16 else "8bit"
    step = {"name": "jpeg", "role": role, "quality": q, "jpeg_mode": mode}
    return jpeg(x, q, bit_depth), step


def _kspace_chain(
    x: np.ndarray, lr_hw: tuple[int, int], cfg: DegradeConfig, rng: np.random.Generator
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The `kspace` model on a 1-channel image: truncation (+ window, partial Fourier), then Rician noise."""
    if x.shape[2] != 1:
        raise ValueError(
            f"the kspace preset models one MRI magnitude image and needs 1 channel, got {x.shape[2]} "
            "(colour data is not an MRI acquisition; use bicubic, light, bsrgan or blind)"
        )
    h, w = lr_hw
    window = str(cfg.kspace_windows[int(rng.choice(len(cfg.kspace_windows), p=cfg.kspace_window_probs))])
    alpha = float(rng.uniform(*cfg.tukey_alpha)) if window == "tukey" else 1.0
    wr, wc = kspace_window_1d(h, window, alpha), kspace_window_1d(w, window, alpha)  # type: ignore[arg-type]
    step: dict[str, Any] = {"name": "kspace", "from": list(x.shape[:2]), "to": [h, w], "window": window}
    if window == "tukey":
        step["tukey_alpha"] = alpha
    if rng.random() < cfg.partial_fourier_prob:
        acquired = float(rng.uniform(*cfg.partial_fourier))
        axis = int(rng.integers(0, 2))  # phase-encode direction: 0 rows (vertical), 1 columns
        side: Literal["low", "high"] = "low" if rng.random() < 0.5 else "high"
        if axis == 0:
            wr = wr * partial_fourier_mask(h, acquired, side)
        else:
            wc = wc * partial_fourier_mask(w, acquired, side)
        step["partial_fourier"] = {"acquired": acquired, "phase_axis": axis, "side": side}
    z = kspace_lowres(x, lr_hw, weights_rows=wr, weights_cols=wc)
    steps = [step]
    if rng.random() < cfg.rician_prob:
        snr = float(rng.uniform(*cfg.snr))
        sigma = snr_sigma(np.abs(z), snr)
        steps.append({"name": "rician", "snr": snr, "sigma": sigma})
        return rician_magnitude(z, sigma, rng), steps
    return np.clip(np.abs(z), 0.0, 1.0).astype(np.float32), steps


def mixture_choice(cfg: DegradeConfig, channels: int, rng: np.random.Generator) -> tuple[str, dict[str, float]]:
    """One preset name drawn from `cfg.mixture` and the weights used (kspace dropped for 3 channels)."""
    weights = {str(n): float(wt) for n, wt in cfg.mixture if not (n == "kspace" and channels != 1)}
    total = sum(weights.values())
    if not total > 0:
        raise ValueError(f"the degradation mixture {dict(cfg.mixture)} has no preset for {channels}-channel images")
    names = list(weights)
    p = np.array([weights[n] / total for n in names])
    return names[int(rng.choice(len(names), p=p))], weights


_OPS = ("blur1", "blur2", "down_random", "down_final", "noise", "jpeg")


def _op_order(cfg: DegradeConfig, rng: np.random.Generator) -> list[str]:
    order = list(_OPS)
    if rng.random() < cfg.shuffle_prob:
        order = [order[i] for i in rng.permutation(len(order))]
        a, b = order.index("down_random"), order.index("down_final")
        if a > b:  # the random down-sampling must come before the one that lands on the LR grid
            order[a], order[b] = order[b], order[a]
    return order


def degrade(
    hr: np.ndarray,
    scale: int,
    config: DegradeConfig | str,
    rng: np.random.Generator,
    *,
    bit_depth: int = 8,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Degrade `hr` (H, W, C) float in [0, 1], H and W multiples of `scale`, into LR (H/s, W/s, C) float32.

    Returns the LR image and the applied steps in order, each a JSON-serialisable dict of its parameters.
    `bit_depth` (8 or 16) only decides how JPEG treats the data (see `jpeg`).
    """
    _check_image(hr)
    _check_scale(scale)
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of scale {scale}; crop it with crop_to_multiple")
    cfg = _resolve(config)
    lr_hw = (h // scale, w // scale)
    x = np.clip(hr.astype(np.float32), 0.0, 1.0)
    if cfg.kind == "mixture":
        choice, weights = mixture_choice(cfg, x.shape[2], rng)
        lr, steps = degrade(x, scale, PRESETS[choice], rng, bit_depth=bit_depth)
        return lr, [{"name": "choice", "preset": choice, "weights": weights}, *steps]
    if cfg.kind == "kspace":
        return _kspace_chain(x, lr_hw, cfg, rng)
    return _chain(x, lr_hw, scale, cfg, rng, bit_depth)


def _chain(
    x: np.ndarray, lr_hw: tuple[int, int], scale: int, cfg: DegradeConfig, rng: np.random.Generator, bit_depth: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The BSRGAN-style chain (kind 'chain') from the clipped HR `x` to the LR grid `lr_hw`."""
    h, w, channels = x.shape
    steps: list[dict[str, Any]] = []

    def record(result: tuple[np.ndarray, dict[str, Any]]) -> np.ndarray:
        steps.append(result[1])
        return result[0]

    if scale % 2 == 0 and scale >= 4 and rng.random() < cfg.prescale2_prob:
        x = record(_down_step(x, (h // 2, w // 2), _pick_method(cfg, rng), "prescale2"))
    for op in _op_order(cfg, rng):
        if op in ("blur1", "blur2"):
            if rng.random() < cfg.blur_probs[0 if op == "blur1" else 1]:
                x = record(_blur_step(x, cfg, rng))
        elif op == "down_random":
            if rng.random() < cfg.random_down_prob:
                x = record(_random_down_step(x, lr_hw, cfg, rng))
        elif op == "down_final":
            x = record(_down_step(x, lr_hw, _pick_method(cfg, rng), "final"))
        elif op == "noise":
            if rng.random() < cfg.noise_prob:
                x = record(_noise_step(x, cfg, rng))
        elif op == "jpeg":
            if rng.random() < cfg.jpeg_prob:
                x = record(_jpeg_step(x, cfg, rng, bit_depth, "chain"))
    if cfg.final_jpeg:
        x = record(_jpeg_step(x, cfg, rng, bit_depth, "final"))
    assert x.shape == (lr_hw[0], lr_hw[1], channels), x.shape
    return x.astype(np.float32, copy=False), steps


# ----------------------------------------------------------------------------------------------------------
# Folder job
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    path: Path
    name: str  # relative source path, posix; seeds the generator
    out_name: str  # relative output path with .png
    output: Path
    scale: int
    preset: str
    seed: int
    hr_size: int | None
    config: DegradeConfig  # the preset's config (with any mixture weights)


def _process(job: _Job) -> dict[str, Any]:
    img, meta = read_image(job.path)
    h, w = img.shape[:2]
    if job.hr_size is not None:
        if min(h, w) < job.hr_size:
            raise ImageError(job.path, f"image is {h}x{w}, smaller than --hr-size {job.hr_size}")
        img = center_crop(img, job.hr_size)
    elif min(h, w) < job.scale:
        raise ImageError(job.path, f"image is {h}x{w}, smaller than the scale {job.scale}")
    hr = crop_to_multiple(img, job.scale)
    # 8-bit stays 8-bit; 16-bit (and float sources, as ldsr.io does for PNG) are written as 16-bit PNG.
    bits = 16 if meta.bit_depth > 8 else 8
    if bits == 16 and hr.shape[2] == 3:
        # ldsr.io cannot write 16-bit colour PNG; refuse rather than silently drop to 8 bits.
        reason = f"{meta.bit_depth}-bit colour cannot be stored as PNG without losing bit depth"
        raise ImageError(job.path, reason)
    lr, steps = degrade(hr, job.scale, job.config, rng_for(job.seed, job.name), bit_depth=bits)
    write_image(job.output / "hr" / job.out_name, hr, meta, bit_depth=bits)
    write_image(job.output / "lr" / job.out_name, lr, meta, bit_depth=bits)
    return {
        "name": job.name,
        "source": str(job.path),
        "hr": f"hr/{job.out_name}",
        "lr": f"lr/{job.out_name}",
        "hr_shape": list(hr.shape),
        "lr_shape": list(lr.shape),
        "scale": job.scale,
        "preset": job.preset,
        **({"weights": dict(job.config.mixture)} if job.config.kind == "mixture" else {}),
        "seed": job.seed,
        "bit_depth": bits,
        "source_bit_depth": meta.bit_depth,
        "notes": list(meta.notes),
        "steps": steps,
    }


def _process_safe(job: _Job) -> tuple[bool, Any]:
    # Runs in a worker process: user errors travel back as text (ImageError does not pickle round-trip).
    try:
        return True, _process(job)
    except (ValueError, OSError) as e:
        return False, str(e)


def _jobs(
    input: Path, output: Path, scale: int, preset: str, seed: int, hr_size: int | None, config: DegradeConfig
) -> list[_Job]:
    out_abs = output.resolve()
    jobs: list[_Job] = []
    for path in sorted(list_images(input)):
        if out_abs in path.resolve().parents:
            continue  # never read back our own outputs when OUTPUT lies inside INPUT
        rel = path.relative_to(input)
        out_name = rel.with_suffix(".png").as_posix()
        jobs.append(_Job(path, rel.as_posix(), out_name, output, scale, preset, seed, hr_size, config))
    return jobs


def degrade_folder(
    input: Path,
    output: Path,
    *,
    scale: int,
    preset: str,
    seed: int,
    hr_size: int | None = None,
    workers: int = 1,
    weights: dict[str, float] | None = None,
) -> BatchResult[dict[str, Any]]:
    """Degrade every image under `input` into `output/hr/<rel>.png`, `output/lr/<rel>.png` and
    `output/manifest.jsonl` (one JSON line per image, sorted by name). Bit depth and channels are kept.

    `hr_size` first takes the central square of that size. `weights` ({preset: weight}) set the mixture of
    the `blind` preset. Failing files are reported and skipped (a 3-channel image under `kspace` is one).
    """
    input, output = Path(input), Path(output)
    _check_scale(scale)
    config = degrade_config(preset, weights)
    if not input.is_dir():
        raise ValueError(f"input folder {input} does not exist or is not a folder")
    if hr_size is not None and (hr_size < scale or hr_size % scale):
        raise ValueError(f"--hr-size {hr_size} must be a positive multiple of the scale {scale}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    jobs = _jobs(input, output, scale, preset, seed, hr_size, config)
    seen: dict[str, str] = {}
    for job in jobs:
        seen.setdefault(job.out_name, job.name)

    def run_one(job: _Job, outcome: tuple[bool, Any] | None = None) -> dict[str, Any]:
        if seen[job.out_name] != job.name:
            raise ImageError(job.path, f"output name {job.out_name} is already used by {seen[job.out_name]}")
        if outcome is None:
            return _process(job)
        ok, value = outcome
        if not ok:
            raise ValueError(value)
        return value

    if workers == 1:
        result = run_batch(jobs, run_one, desc="degrade", name=lambda j: str(j.path))
    else:
        unique = [j for j in jobs if seen[j.out_name] == j.name]
        ctx = multiprocessing.get_context("spawn")  # no fork: safe with threads and on every platform
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures: dict[str, Future[tuple[bool, Any]]] = {j.name: pool.submit(_process_safe, j) for j in unique}
            result = run_batch(
                jobs,
                lambda j: run_one(j, futures[j.name].result() if j.name in futures else None),
                desc="degrade",
                name=lambda j: str(j.path),
            )
    records = sorted(result.ok, key=lambda r: r["name"])
    with atomic_path(output / "manifest.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records), encoding="utf-8")
    return result


def config_dict(config: DegradeConfig | str) -> dict[str, Any]:
    """The resolved configuration as a plain dict (for provenance)."""
    return asdict(_resolve(config))
