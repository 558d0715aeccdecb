"""Validation of any dual-modal fusion (LRCFuse, DCMIF with real infrared): the training stages of both share it.

Its own module so that ``dcmif_ros.inference.dual`` and ``training.lrcfuse_stage`` can both use it without importing each
other (the LRCFuse stage ships through ``dual.ship_dual_model``).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dcmif_ros.training.data import ImagePair
from dcmif_ros.training.stages import load_full_pair, tensor_to_uint8

VALIDATION_METRICS = ["AG", "EN", "SF", "EI", "SD", "MI", "SCD", "SSIM", "Qabf"]


@torch.no_grad()
def fusion_validation(fuse: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], pairs: list[ImagePair],
                      multiple: int, device: str) -> dict[str, float]:
    """Mean gray-mode fusion metrics (``dcmif_ros.evaluation.metrics``) of ``fuse(Y, IR)`` over whole validation pairs."""
    from dcmif_ros.evaluation.metrics import compute_metrics

    rows = []
    for pair in pairs:
        vis, ir = load_full_pair(pair, multiple, device)
        images = [tensor_to_uint8(t) for t in (vis, ir, fuse(vis, ir))]
        rows.append(compute_metrics(*images, mode="gray", names=VALIDATION_METRICS))
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in VALIDATION_METRICS}
