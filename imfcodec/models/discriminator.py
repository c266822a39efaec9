"""Two-scale patch discriminator (training only).

Each scale is a stack of 4x4 stride-2 spectral-normalised convs with LeakyReLU and a 1x1 conv
to a logit map; the second scale sees the input downsampled 2x. ``forward`` returns, per scale,
``(logits, [intermediate features])``: logits for the hinge loss, features for feature matching
(the weight-free substitute for a VGG perceptual loss).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm


class PatchDiscriminator(nn.Module):
    """One scale: 4x4/2 convs (spectral norm, LeakyReLU 0.2) then a 1x1 logit conv."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512), in_ch: int = 3) -> None:
        super().__init__()
        layers = []
        prev = in_ch
        for w in widths:
            layers.append(spectral_norm(nn.Conv2d(prev, w, 4, stride=2, padding=1)))
            prev = w
        self.convs = nn.ModuleList(layers)
        self.out = spectral_norm(nn.Conv2d(prev, 1, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        feats = []
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
            feats.append(h)
        return self.out(h), feats


class Discriminator(nn.Module):
    """Multi-scale (default 2) patch discriminator on images in [0, 1]."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512), num_scales: int = 2) -> None:
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(tuple(widths)) for _ in range(num_scales))

    @classmethod
    def from_config(cls, config) -> Discriminator:  # config: IMFConfig
        return cls(tuple(config.disc_widths))

    def forward(self, x: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        x = x * 2.0 - 1.0
        results = []
        for i, d in enumerate(self.scales):
            if i > 0:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            results.append(d(x))
        return results
