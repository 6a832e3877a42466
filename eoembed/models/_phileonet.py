"""The PhilEO Geo-Aware U-Net encoder network (imports torch; loaded by :mod:`.phileo`).

Written from the PhilEO Bench / PhilEO-MajorTOM papers and the published state-dict
layout of the pretrained encoder (``stem.*``, ``encoder_blocks.{i}.blocks.{j}.*``,
``head.*``): a stem block and four stages of residual CNN blocks, each stage ending in
a 2×2 max-pool. A block is a 1×1 convolution, a depth-wise 3×3 and a full 3×3
convolution (each batch-normalised, ReLU6 between them), a squeeze-and-excitation
gate applied on top of its own output (the published blocks multiply the features by
the SE output, which is itself features × gate) and a residual connection (1×1
convolution + batch norm when the channel count changes).
"""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        hidden = channels // reduction
        self.excitation = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(),
                                        nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.excitation(self.squeeze(x).flatten(1))[:, :, None, None]
        return x * gate


class CNNBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.act = nn.ReLU6()
        self.squeeze = SqueezeExcite(cout)
        self.match_channels = (nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
                               if cin != cout else nn.Identity())
        self.conv1 = nn.Conv2d(cin, cout, 1)
        self.norm1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding="same", groups=cout)
        self.norm2 = nn.BatchNorm2d(cout)
        self.conv3 = nn.Conv2d(cout, cout, 3, padding="same")
        self.norm3 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.act(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        y = y * self.squeeze(y)
        return self.act(y + self.match_channels(x))


class Stage(nn.Module):
    def __init__(self, depth: int, cin: int, cout: int):
        super().__init__()
        self.blocks = nn.Sequential(*[CNNBlock(cin if i == 0 else cout, cout) for i in range(depth)])
        self.downsample = nn.MaxPool2d(2, 2)


class GeoAwareEncoder(nn.Module):
    """Stem + four stages; :meth:`features` returns the map at stride 16 or 8."""

    def __init__(self, *, bands: int, depths: tuple[int, ...], dims: tuple[int, ...]):
        super().__init__()
        self.stem = CNNBlock(bands, dims[0])
        self.encoder_blocks = nn.ModuleList(
            [Stage(d, dims[i - 1] if i else dims[0], dims[i]) for i, d in enumerate(depths)]
        )

    def features(self, x: torch.Tensor, stride: int = 16) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, D, H/stride, W/stride)``.

        ``stride=16``: the last stage's pooled output, the map the geo-aware pretraining
        head average-pools; ``stride=8``: the same stage before its max-pool.
        """
        x = self.stem(x)
        last = len(self.encoder_blocks) - 1
        for i, stage in enumerate(self.encoder_blocks):
            x = stage.blocks(x)
            if i == last and stride == 8:
                return x
            x = stage.downsample(x)
        return x
