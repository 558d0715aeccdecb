"""Losses of the three DCMIF stages (paper §3; weights in ``StageWeights`` of each stage)."""
from __future__ import annotations

from dataclasses import fields, replace
from typing import TypeVar

import torch
import torch.nn.functional as F

Weights = TypeVar("Weights")

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """|Gx| + |Gy| with replicate borders, so image edges do not look like gradients."""
    kernels = torch.stack([SOBEL_X, SOBEL_X.T])[:, None].to(image)
    grads = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), kernels)
    return grads.abs().sum(1, keepdim=True)


def thermal_region_l1(prediction: torch.Tensor, infrared: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """l_reg: L1 weighted by the per-image min–max normalised infrared, so warm regions count most.

    Symmetric in the error (the reference code's weighting biases the prediction brighter instead).
    """
    low = infrared.amin(dim=(2, 3), keepdim=True)
    high = infrared.amax(dim=(2, 3), keepdim=True)
    weight = (infrared - low) / (high - low + eps)
    return (weight * (prediction - infrared).abs()).mean()


DETAIL_SIGMA = 2.0  # pixels: finer than this is the visible detail AFRI's detail term keeps
DETAIL_RADIUS = 6


def fine_detail(image: torch.Tensor) -> torch.Tensor:
    """The image minus its Gaussian blur (σ = ``DETAIL_SIGMA``, replicate borders): edges and texture only."""
    offsets = torch.arange(-DETAIL_RADIUS, DETAIL_RADIUS + 1, dtype=image.dtype, device=image.device)
    taps = torch.exp(-0.5 * (offsets / DETAIL_SIGMA) ** 2)
    taps = taps / taps.sum()
    padded = F.pad(image, (DETAIL_RADIUS,) * 4, mode="replicate")
    blurred = F.conv2d(F.conv2d(padded, taps.reshape(1, 1, 1, -1)), taps.reshape(1, 1, -1, 1))
    return image - blurred


def max_intensity_l1(fused: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(fused, torch.maximum(first, second))


def max_gradient_l1(fused: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(sobel_magnitude(fused), torch.maximum(sobel_magnitude(first), sobel_magnitude(second)))


def weight_names(weights) -> set[str]:
    """The scalar weights of a stage's weights dataclass (or instance): what ``--loss-weights`` may set."""
    return {f.name for f in fields(weights) if f.type in (float, "float")}


def with_overrides(weights: Weights, overrides: dict[str, float] | None) -> Weights:
    """``weights`` (a frozen dataclass) with the ``--loss-weights NAME=VALUE`` overrides applied; an unknown
    name is an error that lists the names this stage has."""
    if not overrides:
        return weights
    names = weight_names(weights)
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown loss weight(s) {', '.join(unknown)} for {type(weights).__name__}; "
                         f"choose from {', '.join(sorted(names))}")
    return replace(weights, **overrides)
