"""ESRGAN (Wang et al., ECCV-W 2018) pieces in plain torch: RRDBNet generator, VGG-style
discriminator, relativistic average GAN (RaGAN) losses and an optional VGG19 perceptual loss.

Tensors are (N, C, H, W) in [-1, 1], C in {1, 3}.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------- generator


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class ResidualDenseBlock(nn.Module):
    """5 convs, dense connections: conv_k sees ``nf + (k-1)*gc`` channels; out = x + 0.2 * conv5(...)."""

    def __init__(self, num_feat: int, growth: int) -> None:
        super().__init__()
        convs = [nn.Conv2d(num_feat + k * growth, growth if k < 4 else num_feat, 3, padding=1) for k in range(5)]
        # ESRGAN init: Kaiming normal scaled by 0.1 so deep residual stacks start near identity.
        for conv in convs:
            nn.init.kaiming_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            assert conv.bias is not None  # built with bias=True
            nn.init.zeros_(conv.bias)
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs[:4]:
            feats.append(_lrelu(conv(torch.cat(feats, 1))))  # (N, nf + k*gc, H, W) -> (N, gc, H, W)
        return x + 0.2 * self.convs[4](torch.cat(feats, 1))  # residual scaling beta = 0.2


class RRDB(nn.Module):
    """Residual-in-residual dense block: 3 dense blocks, outer residual scaled by 0.2."""

    def __init__(self, num_feat: int, growth: int) -> None:
        super().__init__()
        self.rdbs = nn.Sequential(*(ResidualDenseBlock(num_feat, growth) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdbs(x)


def upsample_steps(scale: int) -> list[int]:
    """Nearest-neighbour factors of the upsampler: x2 steps for 2/4/8, one x3 step for 3."""
    steps = {2: [2], 3: [3], 4: [2, 2], 8: [2, 2, 2]}
    if scale not in steps:
        raise ValueError(f"RRDBNet supports scale 2, 3, 4 or 8, got {scale}")
    return steps[scale]


class RRDBNet(nn.Module):
    """ESRGAN generator on the LR grid: conv_first -> num_blocks x RRDB -> conv_body (+ long skip)
    -> [nearest xk, conv 3x3, LeakyReLU(0.2)] per upsampling step -> conv_hr, LeakyReLU -> conv_last.
    (N, C, h, w) -> (N, C, s*h, s*w)."""

    def __init__(self, channels: int, scale: int, num_feat: int = 64, num_blocks: int = 23, growth: int = 32) -> None:
        super().__init__()
        self.channels, self.scale = channels, scale
        self.steps = upsample_steps(scale)
        self.conv_first = nn.Conv2d(channels, num_feat, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(num_feat, growth) for _ in range(num_blocks)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_up = nn.ModuleList(nn.Conv2d(num_feat, num_feat, 3, padding=1) for _ in self.steps)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_last = nn.Conv2d(num_feat, channels, 3, padding=1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(lr)  # (N, nf, h, w)
        feat = feat + self.conv_body(self.body(feat))
        for k, conv in zip(self.steps, self.conv_up):
            feat = _lrelu(conv(F.interpolate(feat, scale_factor=k, mode="nearest")))
        return self.conv_last(_lrelu(self.conv_hr(feat)))  # (N, C, s*h, s*w)


# ----------------------------------------------------------------------------------- discriminator


class VGGDiscriminator(nn.Module):
    """VGG-style discriminator of ESRGAN (BasicSR's VGGStyleDiscriminator128), made size-adaptive.

    Five stages, each ``conv3x3 s1 -> BN -> LReLU -> conv4x4 s2 -> BN -> LReLU`` (the first without BN
    on its first conv), channels nf, 2nf, 4nf, 8nf, 8nf: 128x128 -> 4x4. An ``AdaptiveAvgPool2d(4)``
    before the head makes any input >= 32x32 give (N, 8nf, 4, 4) (identity for 128x128 input), then
    Linear(8nf*16, 100) -> LReLU -> Linear(100, 1). Returns raw logits of shape (N, 1).
    """

    def __init__(self, channels: int, num_feat: int = 64) -> None:
        super().__init__()
        chans = [num_feat, 2 * num_feat, 4 * num_feat, 8 * num_feat, 8 * num_feat]
        layers: list[nn.Module] = []
        c_in = channels
        for i, c in enumerate(chans):
            layers.append(nn.Conv2d(c_in, c, 3, 1, 1, bias=(i == 0)))
            if i > 0:
                layers.append(nn.BatchNorm2d(c, affine=True))
            layers += [nn.LeakyReLU(0.2), nn.Conv2d(c, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Sequential(nn.Linear(chans[-1] * 16, 100), nn.LeakyReLU(0.2), nn.Linear(100, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 32 or x.shape[-2] < 32:
            raise ValueError(f"VGGDiscriminator needs inputs of at least 32x32, got {tuple(x.shape[-2:])}")
        return self.head(self.pool(self.features(x)).flatten(1))


# ---------------------------------------------------------------------------------------- RaGAN


def ragan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average discriminator loss (Jolicoeur-Martineau 2018, ESRGAN eq. 1):
    ``D_Ra(a, b) = sigmoid(C(a) - E[C(b)])``;
    ``L_D = -(E[log D_Ra(x_r, x_f)] + E[log(1 - D_Ra(x_f, x_r))]) / 2`` (mean of the two BCE terms)."""
    bce = F.binary_cross_entropy_with_logits
    rel_real = real_logits - fake_logits.mean()
    rel_fake = fake_logits - real_logits.mean()
    return 0.5 * (bce(rel_real, torch.ones_like(rel_real)) + bce(rel_fake, torch.zeros_like(rel_fake)))


def ragan_g_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average generator loss, the symmetric counterpart of ``ragan_d_loss``:
    ``L_G = -(E[log(1 - D_Ra(x_r, x_f))] + E[log D_Ra(x_f, x_r)]) / 2``, i.e.
    ``ragan_g_loss(r, f) == ragan_d_loss(f, r)``. Gradients flow through both terms."""
    return ragan_d_loss(fake_logits, real_logits)


# ---------------------------------------------------------------------------------- VGG19 features

# torchvision's VGG19 ("E") layout; features[:35] ends at conv5_4 *before* its ReLU, as ESRGAN uses.
VGG19_LAYOUT: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                 512, 512, 512, 512, "M", 512, 512, 512, 512]  # fmt: skip
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """VGG19 ``features`` up to conv5_4 (pre-activation), same module indices as torchvision, so a
    torchvision ImageNet state dict's ``features.*`` keys load directly. Input (N, 3, H, W), ImageNet-
    normalised; output (N, 512, H/16, W/16). Randomly initialised here; see ``load_vgg19_features``."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in VGG19_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                c_in = int(v)
        self.features = nn.Sequential(*layers[:-1])  # drop the ReLU after conv5_4: 35 modules, 0..34

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def load_vgg19_features(path: str | Path) -> VGG19Features:
    """Load VGG19 ImageNet weights from a user-given file: ``*.safetensors`` or a torch state dict
    (``torch.load(..., weights_only=True)``), e.g. torchvision's ``vgg19-dcbb9e9d.pth``. Only the
    ``features.*`` keys are used (``classifier.*`` is ignored). The weights are never downloaded.
    Raises ValueError naming the path if it is missing, unreadable, or lacks / mis-shapes keys."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: VGG19 weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, wrong format
        raise ValueError(f"{path}: cannot read VGG19 weights ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    vgg = VGG19Features()
    expected = vgg.state_dict()
    feats = {k: v for k, v in state.items() if k in expected}
    missing = sorted(set(expected) - set(feats))
    if missing:
        raise ValueError(f"{path}: not a VGG19 state dict, missing {len(missing)} keys e.g. {missing[:3]}")
    for k, v in feats.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, VGG19 needs {tuple(expected[k].shape)}")
    vgg.load_state_dict(feats)
    return vgg


class PerceptualLoss(nn.Module):
    """L1 between VGG19 conv5_4 (pre-activation) features of SR and HR (ESRGAN's perceptual loss).

    The VGG weights are copied into *non-persistent buffers* and run functionally: they are frozen,
    move with ``.to(device)``, are not ``parameters()`` (no optimizer sees them) and are not in the
    ``state_dict()`` (checkpoints stay small; the file is re-read when the model is rebuilt).
    Inputs (N, C, H, W) in [-1, 1]; grey (C=1) is repeated to 3 channels, then ImageNet-normalised.
    """

    mean: torch.Tensor  # (1, 3, 1, 1) ImageNet mean, a buffer
    std: torch.Tensor  # (1, 3, 1, 1) ImageNet std, a buffer

    def __init__(self, vgg: VGG19Features) -> None:
        super().__init__()
        self._plan: list[str] = []  # "conv<k>", "relu", "pool", in order
        k = 0
        for mod in vgg.features:
            if isinstance(mod, nn.Conv2d):
                assert mod.bias is not None  # VGG19Features' convolutions have biases
                self.register_buffer(f"w{k}", mod.weight.detach().clone(), persistent=False)
                self.register_buffer(f"b{k}", mod.bias.detach().clone(), persistent=False)
                self._plan.append(f"conv{k}")
                k += 1
            else:
                self._plan.append("relu" if isinstance(mod, nn.ReLU) else "pool")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x + 1.0) * 0.5  # [-1, 1] -> [0, 1]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        for step in self._plan:
            if step == "relu":
                x = F.relu(x)
            elif step == "pool":
                x = F.max_pool2d(x, 2, 2)
            else:
                k = step[4:]
                x = F.conv2d(x, getattr(self, f"w{k}"), getattr(self, f"b{k}"), padding=1)
        return x  # (N, 512, H/16, W/16)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.features(hr)
        return F.l1_loss(self.features(sr), target)
