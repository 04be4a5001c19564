"""Feature spaces for the generation measures (Frechet distance, KID, precision / recall, memorisation).

Every space maps a list of (H, W, C) images in [0, 1] (C in {1, 3}, any size; grey is repeated to 3 channels)
to an (N, D) float64 array and carries a `name`, a `version` and a one-line `description`, which every table
prints next to its numbers: distances are comparable only within one named, versioned space.

- `StatsProjection` ("ldsr-rpstats", v1): a fixed random projection of multi-scale image statistics. It needs no
  training and no download and is bit-for-bit deterministic, so it is always available; it is NOT a learned
  network, and its distances are not FID.
- `LearnedFeatures`: a small CNN (`FeatureNet`) trained here by contrastive learning (SimCLR's NT-Xent, Chen et
  al. 2020) on a training split (`train_feature_net`; experiments/generation/train_features.py), saved as
  safetensors with its name, version and training data in the metadata.
- `InceptionFeatures` ("inception-v3-fid"): the standard FID network, pt_inception-2015-12-05 (the TensorFlow
  FID Inception-v3 as ported by pytorch-fid), 2048-d pool3 features; the weights are user-supplied
  (safetensors, `load_inception`) because ldsr cannot download them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class FeatureSpace(Protocol):
    name: str
    version: str
    description: str

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


def to_batch(images: Sequence[np.ndarray], side: int) -> torch.Tensor:
    """Images (H, W, C) in [0, 1] -> (N, 3, side, side) float32 in [0, 1] (bilinear, antialiased; grey x3)."""
    out = []
    for im in images:
        a = np.asarray(im, dtype=np.float32)
        a = a[:, :, None] if a.ndim == 2 else a
        if a.ndim != 3 or a.shape[2] not in (1, 3):
            raise ValueError(f"expected (H, W, C) images with C in {{1, 3}}, got shape {a.shape}")
        t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]  # (1, C, H, W)
        if t.shape[-2:] != (side, side):
            shrink = min(t.shape[-2:]) > side
            t = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False, antialias=shrink)
        out.append(t.expand(1, 3, side, side) if t.shape[1] == 1 else t)
    if not out:
        raise ValueError("no images")
    return torch.cat(out).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# the deterministic fallback


@dataclass
class StatsProjection:
    """Fixed random projection (seed 0, N(0, 1/D) entries) of multi-scale image statistics, D = `dim`.

    Per image (resized to 64 x 64, 3 channels): at each scale 64, 32, 16, 8 (2x2 mean pooling) the per-channel
    intensity histogram (16 bins) and the histogram of the grey gradient magnitude (16 bins on [0, 0.5]); the
    per-channel mean and std; the 8 x 8 thumbnail. 454 statistics in all, projected to `dim` values.
    """

    dim: int = 256
    name: str = "ldsr-rpstats"
    version: str = "1"
    description: str = (
        "fixed random projection of multi-scale intensity / gradient histograms and an 8x8 thumbnail "
        "(deterministic fallback, not a learned network; not FID)"
    )
    _matrix: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(0)  # fixed: part of the space's definition (version 1)
        self._matrix = rng.standard_normal((454, self.dim)) / np.sqrt(self.dim)  # (454, D)

    @staticmethod
    def statistics(images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 454) float64 statistics (see the class docstring)."""
        x = to_batch(images, 64).double()  # (N, 3, 64, 64)
        feats = []
        for level in range(4):  # sides 64, 32, 16, 8
            if level:
                x = F.avg_pool2d(x, 2)
            grey = x.mean(dim=1)  # (N, s, s)
            gy, gx = grey[:, 1:, :-1] - grey[:, :-1, :-1], grey[:, :-1, 1:] - grey[:, :-1, :-1]
            grad = torch.sqrt(gx**2 + gy**2).flatten(1)  # (N, (s-1)^2)
            for c in range(3):
                feats.append(_histograms(x[:, c].flatten(1), 0.0, 1.0))  # (N, 16)
            feats.append(_histograms(grad, 0.0, 0.5))
        feats.append(x.flatten(2).mean(dim=2))  # (N, 3): x is now 8 x 8
        feats.append(x.flatten(2).std(dim=2))
        feats.append(x.flatten(1))  # (N, 192): the thumbnail
        return torch.cat(feats, dim=1).numpy()

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.statistics(images) @ self._matrix  # (N, D)


def _histograms(values: torch.Tensor, lo: float, hi: float, bins: int = 16) -> torch.Tensor:
    """Row-wise normalised histograms: (N, M) values -> (N, bins), each row summing to 1 (values clipped)."""
    idx = ((values.clamp(lo, hi) - lo) / (hi - lo) * bins).long().clamp(max=bins - 1)  # (N, M) bin index
    counts = torch.zeros(values.shape[0], bins, dtype=torch.float64).scatter_add_(
        1, idx, torch.ones_like(values, dtype=torch.float64)
    )
    return counts / values.shape[1]


# ----------------------------------------------------------------------------------------------------------
# the learned offline space


class FeatureNet(nn.Module):
    """64 x 64 x 3 -> `dim` features: four 3x3 conv stages (stride 2, GroupNorm, SiLU), global mean pooling; a
    two-layer projection head is used by the contrastive loss only."""

    def __init__(self, width: int = 32, dim: int = 256) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, dim]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):  # 64 -> 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(a, b, 3, 2, 1), nn.GroupNorm(8, b), nn.SiLU(), nn.Conv2d(b, b, 3, 1, 1), nn.SiLU()]
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, 128))
        self.width, self.dim = width, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 64, 64) in [0, 1] -> (N, dim)."""
        return self.encoder(x * 2.0 - 1.0).mean(dim=(2, 3))


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random view of (N, 3, S, S) images in [0, 1]: crop of 50-100 % of the side resized back, flips, 90-degree
    rotations, brightness / contrast jitter (+-20 %)."""
    n, _, s, _ = x.shape
    scale = 0.5 + 0.5 * torch.rand(n, generator=generator)  # side fraction of the crop
    shift = (1.0 - scale)[:, None] * (2.0 * torch.rand(n, 2, generator=generator) - 1.0)  # keeps the crop inside
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale, scale, shift
    grid = F.affine_grid(theta.to(x), [n, 3, s, s], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.where(flip[:, None, None, None].to(x.device), out.flip(-1), out)
    out = torch.rot90(out, int(torch.randint(0, 4, (1,), generator=generator)), dims=(2, 3))
    gain = 1.0 + 0.4 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    bias = 0.4 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.5
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * gain.to(x) + mean + bias.to(x)).clamp(0.0, 1.0)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's NT-Xent loss of two views' projections (N, d): cross-entropy of each view against its partner
    among the 2N - 1 others, cosine similarity / temperature."""
    z = F.normalize(torch.cat([a, b]), dim=1)  # (2N, d)
    sim = z @ z.T / temperature  # (2N, 2N)
    n = a.shape[0]
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def train_feature_net(
    images: Sequence[np.ndarray], *, steps: int, batch: int = 64, lr: float = 1e-3, seed: int = 0,
    width: int = 32, dim: int = 256, device: str = "cpu",
) -> tuple[FeatureNet, list[float]]:  # fmt: skip
    """Train a FeatureNet with NT-Xent on random views of `images`; returns it (eval mode) and the losses."""
    if steps < 1 or batch < 2 or len(images) < 2:
        raise ValueError(f"need steps >= 1, batch >= 2 and >= 2 images, got {steps}, {batch}, {len(images)}")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    data = to_batch(images, 64)  # (N, 3, 64, 64)
    net = FeatureNet(width, dim).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(data), (min(batch, len(data)),), generator=g)
        x = data[idx].to(device)
        loss = nt_xent(net.head(net(augment(x, g))), net.head(net(augment(x, g))))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return net.eval(), losses


@dataclass
class LearnedFeatures:
    """A trained FeatureNet as a feature space."""

    net: FeatureNet
    name: str
    version: str
    description: str = "contrastive CNN features (ldsr.evaluation.features.FeatureNet)"

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        x = to_batch(images, 64)
        return torch.cat([self.net(x[i : i + 256]) for i in range(0, len(x), 256)]).double().numpy()


def save_feature_net(path: str | Path, net: FeatureNet, *, name: str, version: str, info: dict[str, Any]) -> Path:
    """Weights as safetensors (written atomically) with name, version, sizes and `info` in the metadata."""
    from safetensors.torch import save_file

    from ldsr.io import atomic_path

    meta = {"name": name, "version": version, "width": str(net.width), "dim": str(net.dim), "info": json.dumps(info)}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp), metadata=meta)
    return Path(path)


def load_feature_net(path: str | Path) -> LearnedFeatures:
    """A FeatureNet saved by `save_feature_net`; ValueError naming the file when it is not one."""
    meta, state = _read_safetensors(Path(path))
    if "name" not in meta or "width" not in meta:
        raise ValueError(f"{path}: not an ldsr feature network (no name / width in the safetensors metadata)")
    net = FeatureNet(int(meta["width"]), int(meta["dim"]))
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit FeatureNet: {str(e).splitlines()[0]}") from None
    info = json.loads(meta.get("info", "{}"))
    desc = f"contrastive CNN features trained on {info.get('trained_on', '?')} ({info.get('steps', '?')} steps)"
    return LearnedFeatures(net.eval(), meta["name"], meta["version"], desc)


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {}), {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a safetensors file ({str(e).splitlines()[0]})") from None


# ----------------------------------------------------------------------------------------------------------
# the FID Inception-v3 (pt_inception-2015-12-05), torchvision's module names so its state dict loads as is


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], **kw: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    """3x3 mean pool, stride 1, padding 1, padding not counted (the TF FID graph's pooling)."""
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = BasicConv2d(cin, 48, 1), BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # -> (N, 224 + pool_features, H, W)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # -> (N, 480 + cin, H/2, W/2)
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, 2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # -> (N, 768, H, W)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for m in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):  # fmt: skip
            d = m(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = BasicConv2d(cin, 192, 1), BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # -> (N, 512 + cin, H/2, W/2)
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    """`max_pool`: the last block (Mixed_7c) of the FID graph max-pools its pool branch (a bug kept for FID)."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # -> (N, 2048, H, W)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pool)], 1)


class FIDInceptionV3(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 2048) pool3 features: resized to 299 x 299 (bilinear), scaled to [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)  # 299 -> 149
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)  # -> 147
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)  # after max pool: 73
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)  # -> 71, max pool -> 35
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)  # 35 -> 17, 768 channels
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)  # 17 -> 8, 1280 channels
        self.Mixed_7b, self.Mixed_7c = InceptionE(1280, max_pool=False), InceptionE(2048, max_pool=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2.0 - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, 2)))
        x = F.max_pool2d(x, 3, 2)  # (N, 192, 35, 35)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))  # (N, 2048)


@dataclass
class InceptionFeatures:
    net: FIDInceptionV3
    name: str = "inception-v3-fid"
    version: str = "pt_inception-2015-12-05"
    description: str = "FID Inception-v3 pool3 (user-supplied weights)"
    device: str = "cpu"

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        chunks = [self.net(to_batch(images[i : i + 32], 299).to(self.device)) for i in range(0, len(images), 32)]
        return torch.cat(chunks).double().cpu().numpy()


def load_inception(path: str | Path, device: str = "cpu") -> InceptionFeatures:
    """The FID Inception-v3 from a safetensors file of pt_inception-2015-12-05's state dict (torchvision names;
    `fc.*` / `AuxLogits.*` ignored). ValueError naming the file on a missing file, a non-safetensors file,
    missing / unexpected tensors or a shape mismatch."""
    p = Path(path)
    _, state = _read_safetensors(p)
    net = FIDInceptionV3()
    own = net.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{p}: not the FID Inception-v3 (pt_inception-2015-12-05) weights: {len(missing)} "
                         f"tensors missing, e.g. {missing[0]}")  # fmt: skip
    extra = [k for k in state if k not in own]
    if extra:
        raise ValueError(f"{p}: unexpected tensors for the FID Inception-v3, e.g. {extra[0]}")
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise ValueError(f"{p}: tensor {k} has shape {tuple(state[k].shape)}, expected {tuple(own[k].shape)}")
    net.load_state_dict(state, strict=False)
    return InceptionFeatures(net.eval().to(device), device=device)
