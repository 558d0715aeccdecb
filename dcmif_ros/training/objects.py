"""Labelled objects (people, bicycles, cars) in training: their boxes, and the losses that make them warm.

A pixel loss pulls the pseudo-IR towards the average frame, where people are no warmer than the road; the labels
say where the warm objects are. ``boxes/`` beside ``vi/`` and ``ir/`` holds YOLO text files (``class cx cy w h``,
normalised to the frame) of every object the infrared shows. Each object gets two terms: inside its box the
pseudo-IR must match the real infrared, and it must stand out from a ring around the box as much as the real
infrared does. An auxiliary objectness target (the union of the boxes) supervises the semantic branch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MAX_OBJECTS = 32  # boxes kept per crop (MSRS frames hold up to about 20); padded rows have class -1
MIN_BOX_SIDE = 2.0  # pixels: a box clipped by the crop to less than this is dropped
RING_MARGIN = 0.5  # the ring reaches this fraction of the box's shorter side beyond it
MIN_RING_MARGIN = 2.0  # pixels


def read_boxes(path: Path | None) -> np.ndarray:
    """(K, 5) float32 rows ``class cx cy w h`` (normalised); no file or an empty one is no objects."""
    if path is None or not path.is_file():
        return np.zeros((0, 5), np.float32)
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    boxes = np.array(rows, np.float32).reshape(-1, 5) if rows else np.zeros((0, 5), np.float32)
    if boxes.shape[1] != 5 or not np.isfinite(boxes).all():
        raise ValueError(f"{path}: expected lines 'class cx cy w h' with finite numbers")
    return boxes


def crop_boxes(boxes: np.ndarray, size: tuple[int, int], top: int, left: int, region: int, crop: int,
               flip: bool) -> np.ndarray:
    """Normalised boxes of a ``size`` = (height, width) frame → (MAX_OBJECTS, 5) rows ``class x0 y0 x1 y1`` in
    the pixels of a ``crop``-sized crop of the ``region`` square at (top, left), flipped if asked."""
    height, width = size
    scale = crop / region
    out = np.full((MAX_OBJECTS, 5), -1.0, np.float32)
    if not len(boxes):
        return out
    cls, cx, cy, w, h = boxes.T
    x0 = ((cx - w / 2) * width - left) * scale
    x1 = ((cx + w / 2) * width - left) * scale
    y0 = ((cy - h / 2) * height - top) * scale
    y1 = ((cy + h / 2) * height - top) * scale
    if flip:
        x0, x1 = crop - x1, crop - x0
    x0, x1, y0, y1 = (np.clip(v, 0, crop) for v in (x0, x1, y0, y1))
    kept = (x1 - x0 >= MIN_BOX_SIDE) & (y1 - y0 >= MIN_BOX_SIDE)
    rows = np.stack([cls, x0, y0, x1, y1], 1)[kept][:MAX_OBJECTS]
    out[: len(rows)] = rows
    return out


def box_masks(boxes: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-object (inside, ring) boolean masks, (N, K, H, W), and which rows are objects, (N, K).

    The ring is the box grown by ``RING_MARGIN`` of its shorter side, minus every object's box (a person's
    neighbour is not their background). K is the most objects any image of the batch has (the padding rows
    after them are left out: dense masks of all ``MAX_OBJECTS`` rows were most of a training step)."""
    boxes = boxes[:, : max(int((boxes[..., 0] >= 0).sum(dim=1).max()), 1)]
    valid = boxes[..., 0] >= 0
    x0, y0, x1, y1 = (boxes[..., i, None, None] for i in range(1, 5))
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype)[:, None] + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype)[None, :] + 0.5
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1) & valid[..., None, None]
    margin = torch.clamp(RING_MARGIN * torch.minimum(x1 - x0, y1 - y0), min=MIN_RING_MARGIN)
    grown = (xs >= x0 - margin) & (xs < x1 + margin) & (ys >= y0 - margin) & (ys < y1 + margin)
    any_object = inside.any(dim=1, keepdim=True)
    ring = grown & ~any_object & valid[..., None, None]
    return inside, ring, valid


def masked_means(image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean of ``image`` (N, 1, H, W) over each mask (N, K, H, W) → (N, K); 0 for an empty mask."""
    weights = masks.to(image.dtype)
    return (weights * image).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp(min=1.0)


def object_contrasts(image: torch.Tensor, inside: torch.Tensor, ring: torch.Tensor) -> torch.Tensor:
    """Mean inside each object minus the mean of its ring, (N, K)."""
    return masked_means(image, inside) - masked_means(image, ring)


def measurable(masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Which rows of ``box_masks`` are objects with a ring left to compare them with, (N, K)."""
    _, ring, valid = masks
    return valid & ring.any(dim=(2, 3))


def warm_object_terms(pseudo_ir: torch.Tensor, infrared: torch.Tensor,
                      masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``inside``: L1 to the real infrared inside each object; ``contrast``: |its contrast against its ring −
    the real infrared's|; both averaged over the batch's objects (zero when it has none). ``masks``: what
    ``box_masks`` gives for the batch's boxes."""
    inside, ring, _ = masks
    usable = measurable(masks)
    count = usable.sum().clamp(min=1)
    error = masked_means((pseudo_ir - infrared).abs(), inside)
    contrast = (object_contrasts(pseudo_ir, inside, ring) - object_contrasts(infrared, inside, ring)).abs()
    return {"inside": (error * usable).sum() / count, "contrast": (contrast * usable).sum() / count}


def objectness_target(inside: torch.Tensor, stride: int) -> torch.Tensor:
    """The share of each ``stride``×``stride`` cell covered by an object box, (N, 1, H/stride, W/stride), from
    the per-object ``inside`` masks of ``box_masks``."""
    return F.avg_pool2d(inside.any(dim=1, keepdim=True).float(), stride)
