"""Frozen loss networks for LRCFuse's multi-level loss: four feature levels (shallow, middle ×2, deep) per image.

The paper uses an ImageNet-trained VGG-16 (relu1_2, relu2_2, relu3_3, relu4_3), which cannot be downloaded
here. A spec picks the network (``make_feature_network``):

- ``vgg16:PATH``: the VGG-16 architecture built here, weights from a local checkpoint (torchvision's
  ``vgg16-*.pth`` layout ``features.N.*`` or the ``convB_I.*`` layout of the Caffe/Lua conversions).
- ``random`` / ``random:DIVISOR``: the same architecture with fixed, seeded Kaiming-normal weights and the
  widths divided by DIVISOR (default 4). Random convolutional features are known to carry a usable perceptual
  and Gram (texture) signal; the narrow widths make the loss cheap enough to train on a CPU.
- ``jsrl:PATH``: the frozen visible encoder (REN) of a trained DCMIF JSRL (``<run>/jsrl/final.pt``); its levels
  are the analysis filter bank, the solved coefficients, the sparse code and the sparse code pooled ×8.

Every network sees the images on the scale the paper's loss weights were tuned for (LRRNet's convention):
0–255 grey values minus the ImageNet mean grey, replicated to three channels; JSRL features, computed on
[0, 1] as DCMIF does, are multiplied by 255 to land on the same scale.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3))  # (width, convolutions) up to relu4_3
IMAGENET_GREY_MEAN = 0.449  # mean of ImageNet's RGB means, the grey level VGG inputs are centred on
PIXEL_SCALE = 255.0
RANDOM_WIDTH_DIVISOR = 4
RANDOM_SEED = 0
JSRL_DEEP_POOL = 8
SPEC_SEPARATOR = ":"


class VGGFeatures(nn.Module):
    """VGG-16 (configuration D) up to relu4_3, laid out as torchvision's ``features`` (same indices)."""

    def __init__(self, width_divisor: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        self.taps: list[int] = []
        in_channels = 3
        for block, (width, convolutions) in enumerate(VGG16_BLOCKS):
            if block:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convolutions):
                layers += [nn.Conv2d(in_channels, width // width_divisor, 3, padding=1), nn.ReLU()]
                in_channels = width // width_divisor
            self.taps.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """[0, 1] grey (N,1,H,W) → relu1_2, relu2_2, relu3_3, relu4_3."""
        x = (PIXEL_SCALE * (image - IMAGENET_GREY_MEAN)).expand(-1, 3, -1, -1)
        levels = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                levels.append(x)
        return levels

    def convolutions(self) -> list[nn.Conv2d]:
        return [m for m in self.features if isinstance(m, nn.Conv2d)]


def freeze(network: nn.Module) -> nn.Module:
    for p in network.parameters():
        p.requires_grad_(False)
    return network.eval()


def random_vgg(width_divisor: int = RANDOM_WIDTH_DIVISOR, seed: int = RANDOM_SEED) -> VGGFeatures:
    """The VGG-16 layout with fixed Kaiming-normal weights (variance-preserving through the ReLUs)."""
    network = VGGFeatures(width_divisor)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in network.convolutions():
            fan_in = layer.weight[0].numel()
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            layer.bias.zero_()
    return freeze(network)


def _checkpoint_tensors(state: dict, network: VGGFeatures) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of the ten convolutions, from torchvision or ``convB_I`` keys."""
    if "features.0.weight" in state:
        indices = [i for i, m in enumerate(network.features) if isinstance(m, nn.Conv2d)]
        keys = [f"features.{i}" for i in indices]
    else:
        keys = [f"conv{block + 1}_{i + 1}" for block, (_, n) in enumerate(VGG16_BLOCKS) for i in range(n)]
    missing = [k for k in keys if f"{k}.weight" not in state or f"{k}.bias" not in state]
    if missing:
        raise ValueError(f"not a VGG-16 checkpoint: no weights for {missing[:3]} (expected torchvision "
                         "'features.N.weight' or 'convB_I.weight' keys)")
    return [(state[f"{k}.weight"], state[f"{k}.bias"]) for k in keys]


def vgg16_from_checkpoint(path: str | Path) -> VGGFeatures:
    """Full-width VGG-16 with the convolution weights of a local checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VGG-16 checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    network = VGGFeatures()
    with torch.no_grad():
        for layer, (weight, bias) in zip(network.convolutions(), _checkpoint_tensors(state, network)):
            if weight.shape != layer.weight.shape:
                raise ValueError(f"{path}: a convolution has shape {tuple(weight.shape)}, VGG-16 needs "
                                 f"{tuple(layer.weight.shape)}")
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
    return freeze(network)


class JSRLFeatures(nn.Module):
    """The frozen DCMIF visible encoder as a loss network (see the module docstring for its four levels)."""

    def __init__(self, ren: nn.Module):
        super().__init__()
        self.ren = freeze(ren)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        ren = self.ren
        initial = ren.head(image)
        solved = ren.solve(image)
        sparse = ren.coenet(solved, ren.prox_weight)
        return [PIXEL_SCALE * level for level in (initial, solved, sparse, F.avg_pool2d(sparse, JSRL_DEEP_POOL))]


def jsrl_features(path: str | Path) -> JSRLFeatures:
    from dcmif_ros.models.dcmif import ren_from_jsrl
    from dcmif_ros.training.stages import jsrl_from_output

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSRL output not found: {path} (train it with `dcmif train jsrl`)")
    jsrl, _ = jsrl_from_output(torch.load(path, map_location="cpu", weights_only=False))
    return JSRLFeatures(ren_from_jsrl(jsrl, "vis"))


def make_feature_network(spec: str) -> nn.Module:
    """``random[:DIVISOR]``, ``vgg16:PATH`` or ``jsrl:PATH`` (see the module docstring)."""
    kind, _, argument = spec.partition(SPEC_SEPARATOR)
    if kind == "random":
        return random_vgg(int(argument) if argument else RANDOM_WIDTH_DIVISOR)
    if kind == "vgg16" and argument:
        return vgg16_from_checkpoint(argument)
    if kind == "jsrl" and argument:
        return jsrl_features(argument)
    raise ValueError(f"unknown feature network {spec!r}: use random[:DIVISOR], vgg16:PATH or jsrl:PATH")
