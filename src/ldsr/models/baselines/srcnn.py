"""SRCNN (Dong et al. 2015) and FSRCNN (Dong et al. 2016), in plain torch.

Both take the LR tensor ``(N, C, h, w)`` in [-1, 1] and return ``(N, C, s*h, s*w)``, so every baseline
has the same interface. Outputs are not clamped here (the wrapper's ``predict`` clamps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SRCNN(nn.Module):
    """SRCNN 9-1-5 (Dong et al., ECCV 2014 / TPAMI 2015): 64 and 32 filters, ReLU.

    The paper feeds the network a bicubic-upsampled LR image. Here the upsampling happens *inside*
    ``forward`` (``F.interpolate(mode="bicubic", align_corners=False)``, no antialiasing, no clamping)
    so the model's input is always the LR tensor, like the other baselines. The paper uses "valid"
    convolutions (output 12 px smaller); we pad (4, 0, 2) so the output is exactly the HR size.

    Parameters: ``81*C*64 + 64`` (patch extraction) ``+ 64*32 + 32`` (non-linear mapping)
    ``+ 25*32*C + C`` (reconstruction): 8,129 for C=1, 20,099 for C=3 (independent of the scale).
    """

    def __init__(self, channels: int, scale: int, n1: int = 64, n2: int = 32) -> None:
        super().__init__()
        self.channels, self.scale = channels, scale
        self.extract = nn.Conv2d(channels, n1, 9, padding=4)  # f1 = 9
        self.mapping = nn.Conv2d(n1, n2, 1)  # f2 = 1
        self.reconstruct = nn.Conv2d(n2, channels, 5, padding=2)  # f3 = 5

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        # (N, C, h, w) -> bicubic (N, C, s*h, s*w); all convs keep the spatial size.
        x = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        x = F.relu(self.extract(x))
        x = F.relu(self.mapping(x))
        return self.reconstruct(x)


class FSRCNN(nn.Module):
    """FSRCNN(d, s, m) (Dong et al., ECCV 2016), default d=56, s=12, m=4, PReLU (one slope per channel).

    Works on the LR grid: feature extraction 5x5 (C->d), shrinking 1x1 (d->s), m mappings 3x3 (s->s),
    expanding 1x1 (s->d), then a 9x9 transposed convolution with stride = scale (d->C).
    Transposed conv output size: ``(h - 1)*r - 2*4 + 9 + output_padding = r*h - r + 1 + output_padding``,
    so ``output_padding = r - 1`` gives exactly ``r*h`` (and ``r - 1 < r`` as torch requires).

    Parameters (weights + biases + PReLU slopes), with C channels:
    ``(25*C*d + d + d) + (d*s + s + s) + m*(9*s*s + s + s) + (s*d + d + d) + (81*d*C + C)``;
    the paper's count (weights only, C=1) is ``25d + sd + 9ms^2 + ds + 81d`` = 12,464.
    """

    def __init__(self, channels: int, scale: int, d: int = 56, s: int = 12, m: int = 4) -> None:
        super().__init__()
        self.channels, self.scale = channels, scale
        layers: list[nn.Module] = [nn.Conv2d(channels, d, 5, padding=2), nn.PReLU(d)]
        layers += [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(d, channels, 9, stride=scale, padding=4, output_padding=scale - 1)
        # Paper init: He (PReLU-aware) for the convolutions, N(0, 0.001) for the deconvolution.
        for mod in self.body:
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, a=0.25, nonlinearity="leaky_relu")
                assert mod.bias is not None  # every conv here has bias=True
                nn.init.zeros_(mod.bias)
        nn.init.normal_(self.deconv.weight, std=1e-3)
        assert self.deconv.bias is not None
        nn.init.zeros_(self.deconv.bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        # (N, C, h, w) -> (N, d, h, w) -> (N, C, r*h, r*w)
        return self.deconv(self.body(lr))
