"""Building blocks shared by CoeNet, RIN and RFN: a U-Net that works below full resolution.

Coefficient maps are full resolution (the dictionary needs every pixel), but the reasoning over them does
not need to be: the backbone enters with a ``entry_stride``×``entry_stride`` strided convolution (the same
map as pixel-unshuffle + 1×1 convolution, without the 6-D transposes that onnxruntime runs slowly), runs
depthwise-separable residual blocks with channel attention at that level and at each coarser one (a level per
entry of ``blocks_per_level``, each at half the resolution and twice the width of the one above), and leaves
with the matching transposed convolution or, smoother and cheaper, a 1×1 convolution and bilinear upsampling.
That is how the ``tiny`` preset stays within a few GFLOPs per 640×480 frame.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dcmif_ros.models.config import BackboneConfig

NEAR_ZERO_INIT_STD = 1e-3


def soft_threshold(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """sign(x)·max(|x| − θ, 0), the proximal map of the ℓ1 prior, written as x − clamp(x, −θ, θ): the same
    values, exported as Min/Max/Sub (onnxruntime's Sign alone cost a fifth of an LRCFuse frame)."""
    return x - torch.minimum(torch.maximum(x, -threshold), threshold)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: rescale channels from their global average (the CBAM channel branch)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mlp(x)


class SeparableResidualBlock(nn.Module):
    """x + pw(act(pw(dw3x3(x)))) with channel attention: most receptive field per FLOP."""

    def __init__(self, channels: int, expansion: int):
        super().__init__()
        hidden = channels * expansion
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.Conv2d(channels, hidden, 1),
            nn.GELU(approximate="tanh"),
            nn.Conv2d(hidden, channels, 1),
            ChannelAttention(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def blocks(channels: int, count: int, expansion: int) -> nn.Sequential:
    return nn.Sequential(*[SeparableResidualBlock(channels, expansion) for _ in range(count)])


class UNetLevel(nn.Module):
    """Residual blocks at one resolution and, below them, the rest of the U-Net at half the resolution and
    twice the width, merged back through a skip connection. The deepest level is blocks alone.

    Levels nest (``lower`` is the next ``UNetLevel``), so a two-level backbone keeps the parameter names it
    had before deeper ones existed and old checkpoints load unchanged.
    """

    def __init__(self, width: int, blocks_per_level: tuple[int, ...], expansion: int):
        super().__init__()
        here, *deeper = blocks_per_level
        self.upper = blocks(width, here, expansion)
        self.lower = None
        if deeper:
            self.down = nn.Conv2d(width, 2 * width, 2, stride=2)
            self.lower = (UNetLevel(2 * width, tuple(deeper), expansion) if len(deeper) > 1 else
                          blocks(2 * width, deeper[0], expansion))
            self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
            self.merge = SeparableResidualBlock(width, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        upper = self.upper(x)
        if self.lower is None:
            return upper
        return self.merge(upper + self.up(self.lower(self.down(upper))))


class SmoothExit(nn.Module):
    """Low resolution → full resolution without a block pattern: a 1×1 convolution where the features are, then
    bilinear upsampling (the same map as upsampling first and convolving after, at 1/stride² of the cost).
    Users that squash the output (RIN's gain, RFN's gate) do it between the two, at low resolution too."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.project = nn.Conv2d(in_channels, out_channels, 1)
        self.stride = stride

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.stride, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(x))


class CoefficientBackbone(UNetLevel):
    """Full-resolution ``in_channels`` → full-resolution ``out_channels`` through a low-resolution U-Net.

    The output layer starts near zero (small, not zero, so every layer gets gradient from the first step):
    a residual user of the backbone starts close to the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, config: BackboneConfig):
        stride, width = config.entry_stride, config.width
        entry = nn.Conv2d(in_channels, width, stride, stride=stride)  # first, as it always was: same seeds,
        super().__init__(width, config.blocks_per_level, config.expansion)  # same initial weights
        levels = dict(self._modules)  # and first in state_dict (RIN fingerprints hash it in that order)
        self._modules.clear()
        self._modules.update(entry=entry, **levels)
        self.exit = (SmoothExit(width, out_channels, stride) if config.smooth_exit else
                     nn.ConvTranspose2d(width, out_channels, stride, stride=stride))
        output = self.exit.project if config.smooth_exit else self.exit
        nn.init.normal_(output.weight, std=NEAR_ZERO_INIT_STD)
        nn.init.zeros_(output.bias)

    def forward(self, *inputs: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """Several inputs act as their channel concatenation, without building it at full resolution: the
        entry convolution is applied per input with its slice of the weights and summed at low resolution.
        ``guide`` (features at the entry's resolution and width) is added to the first level's input."""
        return self.exit(self.trunk(*inputs, guide=guide))

    def trunk(self, *inputs: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """The U-Net's output at the entry resolution, before ``exit``."""
        entered = self.enter(inputs)
        return super().forward(entered if guide is None else entered + guide)

    def enter(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if len(inputs) == 1:
            return self.entry(inputs[0])
        weights = self.entry.weight.split([x.shape[1] for x in inputs], dim=1)
        stride = self.entry.stride
        entered = [F.conv2d(x, w, stride=stride) for x, w in zip(inputs, weights)]
        return sum(entered[1:], entered[0]) + self.entry.bias.reshape(1, -1, 1, 1)
