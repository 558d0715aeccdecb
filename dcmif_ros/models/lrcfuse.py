"""LRCFuse: learned low-rank representation (LLRR) + common feature preservation (CFPM) fusion of Y_vis and IR.

Liu et al., "LRCFuse: Infrared and Visible Image Fusion Based on Low-Rank Representation and Convolutional
Sparse Learning" (paper §3), as a single feed-forward graph:

- ``LLRREncoder`` (one per modality): LISTA unfolding of the multi-dictionary decomposition X ≈ D_l⋆L + D_s⋆S.
  Z₀ = h_θ₀(W⋆X); each block Z ← h_θ(λ·Z + Dᵀ⋆(X − D⋆Z)) with its own learned convolutional dictionary D
  and adjoint Dᵀ; the code channels split into the low-rank part L and the sparse part S.
- ``CFPM``: unfolded convolutional sparse coding of what L and S leave unexplained in *both* images: residuals
  R = X − (G⋆L + H⋆S) per modality, then ISTA steps C ← h_θ(C + Σ_m E_mᵀ⋆(R_m − E_m⋆C)) from C⁰ = 0 on one shared map C,
  so C holds the structure common to the two modalities.
- ``FeatureFusion``: four convolutions lift L_vis, S_vis, L_ir, S_ir to features; two more fuse them (concat)
  into L_f and S_f; the fused feature is mean(L_f, S_f, C).
- ``Decoder``: three (stride-1) transposed convolutions to the fused image.

Everything runs at full resolution with 3×3 kernels and reflect padding, so any H×W works (no padding multiple)
and the ONNX graph is plain Conv/ConvTranspose/elementwise ops.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dcmif_ros.models.blocks import soft_threshold

THRESHOLD_INIT = 1e-2  # initial soft threshold θ (inputs are on [0, 1])
MOMENTUM_INIT = 1.0  # initial λ in Z ← h_θ(λ·Z + …): plain ISTA


@dataclass(frozen=True)
class LRCFuseConfig:
    """Shapes of an LRCFuse network.

    ``code_channels`` is n: Z has 2n channels, n for the low-rank part L and n for the sparse part S.
    ``feature_channels`` is the width of L_f, S_f and of the common map C. The ``paper`` preset is about the
    paper's size (0.18 M parameters); ``tiny`` (31 k) keeps the full-resolution cost near 18 GFLOPs per
    640×480 frame, for CPUs.
    """

    name: str
    code_channels: int = 16
    feature_channels: int = 16
    llrr_blocks: int = 4
    cfpm_iterations: int = 4
    kernel_size: int = 3
    decoder_negative_slope: float = 0.2

    @property
    def pad_multiple(self) -> int:
        """Stride-1 everywhere: any image size works."""
        return 1

    @property
    def min_side(self) -> int:
        """Reflect padding needs more pixels than the kernel radius."""
        return self.kernel_size // 2 + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LRCFuseConfig":
        return cls(**data)


PRESETS: dict[str, LRCFuseConfig] = {
    "tiny": LRCFuseConfig(name="tiny"),
    "paper": LRCFuseConfig(name="paper", code_channels=64, feature_channels=32),
}


def get_config(name: str) -> LRCFuseConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown LRCFuse size {name!r}; choose one of {sorted(PRESETS)}") from None


def conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    """A 'same' convolution with reflect padding (no dark frame at the borders of residuals)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, padding_mode="reflect", bias=bias)


class SoftThreshold(nn.Module):
    """h_θ with a learned positive per-channel threshold θ (the proximal map of the ℓ1 prior)."""

    def __init__(self, channels: int):
        super().__init__()
        self.log_threshold = nn.Parameter(torch.full((1, channels, 1, 1), float(torch.log(torch.tensor(THRESHOLD_INIT)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        threshold = self.log_threshold.exp()
        return soft_threshold(x, threshold)


class LLRRBlock(nn.Module):
    """One LISTA iteration: Z ← h_θ(λ·Z + Dᵀ⋆(X − D⋆Z)), with D (2n → 1) and Dᵀ (1 → 2n) learned and untied."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.dictionary = conv(channels, 1, kernel_size, bias=False)
        self.adjoint = conv(1, channels, kernel_size, bias=False)
        self.momentum = nn.Parameter(torch.tensor(MOMENTUM_INIT))
        self.threshold = SoftThreshold(channels)

    def forward(self, image: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        residual = image - self.dictionary(code)
        return self.threshold(self.momentum * code + self.adjoint(residual))


class LLRREncoder(nn.Module):
    """LLRR-Blocks for one modality: image → (low-rank code L, sparse code S), n channels each."""

    def __init__(self, config: LRCFuseConfig):
        super().__init__()
        channels = 2 * config.code_channels
        self.code_channels = config.code_channels
        self.analysis = conv(1, channels, config.kernel_size, bias=False)
        self.initial_threshold = SoftThreshold(channels)
        self.blocks = nn.ModuleList([LLRRBlock(channels, config.kernel_size) for _ in range(config.llrr_blocks)])

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.initial_threshold(self.analysis(image))
        for block in self.blocks:
            code = block(image, code)
        return code[:, : self.code_channels], code[:, self.code_channels :]


class ModalityReconstruction(nn.Module):
    """G⋆L + H⋆S: the part of one image its own low-rank and sparse codes explain (CFPM's known prior)."""

    def __init__(self, config: LRCFuseConfig):
        super().__init__()
        self.low_rank = conv(config.code_channels, 1, config.kernel_size, bias=False)
        self.sparse = conv(config.code_channels, 1, config.kernel_size, bias=False)

    def forward(self, low_rank: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return self.low_rank(low_rank) + self.sparse(sparse)


class CFPMStep(nn.Module):
    """One unfolded ISTA step on the shared map C: a gradient step on both fidelity terms, then h_θ."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.synthesis = nn.ModuleList([conv(channels, 1, kernel_size, bias=False) for _ in range(2)])
        self.adjoint = nn.ModuleList([conv(1, channels, kernel_size, bias=False) for _ in range(2)])
        self.threshold = SoftThreshold(channels)

    def forward(self, common: torch.Tensor | None, residuals: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``common`` None stands for C = 0 (the first step), which needs no synthesis."""
        step = sum(adjoint(residual if common is None else residual - synthesis(common))
                   for residual, synthesis, adjoint in zip(residuals, self.synthesis, self.adjoint))
        return self.threshold(step if common is None else common + step)


class CFPM(nn.Module):
    """Common feature preservation: strip each modality's L/S explanation, sparse-code both residuals jointly."""

    def __init__(self, config: LRCFuseConfig):
        super().__init__()
        self.reconstructions = nn.ModuleList([ModalityReconstruction(config) for _ in range(2)])
        self.steps = nn.ModuleList([CFPMStep(config.feature_channels, config.kernel_size)
                                    for _ in range(config.cfpm_iterations)])

    def forward(self, images: tuple[torch.Tensor, torch.Tensor],
                codes: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        residuals = tuple(image - reconstruction(*code)
                          for image, code, reconstruction in zip(images, codes, self.reconstructions))
        common = None  # C⁰ = 0
        for step in self.steps:
            common = step(common, residuals)
        return common


class FeatureFusion(nn.Module):
    """Four convolutions lift (L, S) of both modalities to features; two more fuse them into L_f and S_f."""

    def __init__(self, config: LRCFuseConfig):
        super().__init__()
        n, f, k = config.code_channels, config.feature_channels, config.kernel_size
        self.lift = nn.ModuleDict({name: conv(n, f, k) for name in ("low_rank_vis", "sparse_vis", "low_rank_ir", "sparse_ir")})
        self.fuse_low_rank = conv(2 * f, f, k)
        self.fuse_sparse = conv(2 * f, f, k)

    def forward(self, vis: tuple[torch.Tensor, torch.Tensor], ir: tuple[torch.Tensor, torch.Tensor]):
        low_rank = torch.cat([self.lift["low_rank_vis"](vis[0]), self.lift["low_rank_ir"](ir[0])], dim=1)
        sparse = torch.cat([self.lift["sparse_vis"](vis[1]), self.lift["sparse_ir"](ir[1])], dim=1)
        return self.fuse_low_rank(low_rank), self.fuse_sparse(sparse)


class Decoder(nn.Module):
    """Three stride-1 transposed convolutions: fused features → fused image."""

    def __init__(self, config: LRCFuseConfig):
        super().__init__()
        f, k = config.feature_channels, config.kernel_size
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(f, f, k, padding=k // 2),
            nn.LeakyReLU(config.decoder_negative_slope),
            nn.ConvTranspose2d(f, f // 2, k, padding=k // 2),
            nn.LeakyReLU(config.decoder_negative_slope),
            nn.ConvTranspose2d(f // 2, 1, k, padding=k // 2),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            is_transposed = isinstance(layer, nn.ConvTranspose2d)
            features = stride_one_transposed_as_conv(layer, features) if is_transposed else layer(features)
        return features


def stride_one_transposed_as_conv(layer: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """A stride-1 transposed convolution computed as the convolution it equals (weights swapped in/out and
    flipped, padding k − 1 − p): the same values, and onnxruntime runs Conv about 3× faster than ConvTranspose
    (the decoder: ~55 ms less per 640×480 frame)."""
    plain = (layer.stride == (1, 1) and layer.dilation == (1, 1) and layer.groups == 1
             and layer.output_padding == (0, 0) and layer.padding[0] == layer.padding[1])
    if not plain:
        raise ValueError(f"{layer} is not a plain stride-1 transposed convolution")
    kernel = layer.weight.shape[-1]
    weight = layer.weight.transpose(0, 1).flip(-1, -2)
    return F.conv2d(x, weight, layer.bias, padding=kernel - 1 - layer.padding[0])


@dataclass
class LRCFuseOutput:
    fused: torch.Tensor
    codes_vis: tuple[torch.Tensor, torch.Tensor]
    codes_ir: tuple[torch.Tensor, torch.Tensor]
    common: torch.Tensor


class LRCFuse(nn.Module):
    """(Y_vis, IR) in [0, 1], (N,1,H,W) each → fused Y (N,1,H,W), same scale."""

    def __init__(self, config: LRCFuseConfig):
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleDict({"vis": LLRREncoder(config), "ir": LLRREncoder(config)})
        self.cfpm = CFPM(config)
        self.fusion = FeatureFusion(config)
        self.decoder = Decoder(config)

    def infer(self, luminance: torch.Tensor, infrared: torch.Tensor) -> LRCFuseOutput:
        codes_vis, codes_ir = self.encoders["vis"](luminance), self.encoders["ir"](infrared)
        common = self.cfpm((luminance, infrared), (codes_vis, codes_ir))
        low_rank, sparse = self.fusion(codes_vis, codes_ir)
        fused = self.decoder((low_rank + sparse + common) / 3.0)
        return LRCFuseOutput(fused, codes_vis, codes_ir, common)

    def forward(self, luminance: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
        """ONNX signature: (Y, IR) → fused Y."""
        return self.infer(luminance, infrared).fused
