"""Do people and vehicles stand out? Object contrast measured with per-pixel class masks.

For each labelled object (a connected region of one kind in an MFNet/MSRS class mask) the contrast is its mean
grey level minus that of a ring around it (other objects left out of the ring), on [0, 1]. A thermal camera makes
people stand out at night (MSRS: about 98 % of them by at least ``STANDS_OUT``), the visible image does not
(about 7 %): this is the measure of whether a pseudo-IR or a fused image shows what a thermal camera would.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# MFNet class ids in ../shared/data/msrs_fullres/masks: 1 car, 2 person, 3 bike
OBJECT_KINDS: dict[str, tuple[int, ...]] = {"person": (2,), "vehicle": (1, 3)}
STANDS_OUT = 0.05  # grey levels on [0, 1]: an object whose contrast reaches this is visibly warmer
MIN_OBJECT_PIXELS = 20  # smaller regions are label noise or a few pixels of a distant object
RING_MARGIN = 0.5  # the ring reaches this fraction of the object's shorter bounding-box side beyond it
MIN_RING_PIXELS = 2
GREY_PEAK = 255.0


@dataclass(frozen=True)
class LabelledObject:
    kind: str
    inside: np.ndarray  # bool HxW
    ring: np.ndarray  # bool HxW


def labelled_objects(mask: np.ndarray) -> list[LabelledObject]:
    """Every object of ``OBJECT_KINDS`` in a class mask (HxW integer ids), with its ring."""
    any_object = np.isin(mask, [i for ids in OBJECT_KINDS.values() for i in ids])
    objects = []
    for kind, ids in OBJECT_KINDS.items():
        count, components, stats, _ = cv2.connectedComponentsWithStats(np.isin(mask, ids).astype(np.uint8), 8)
        for label in range(1, count):
            if stats[label, cv2.CC_STAT_AREA] < MIN_OBJECT_PIXELS:
                continue
            inside = components == label
            shorter = min(stats[label, cv2.CC_STAT_WIDTH], stats[label, cv2.CC_STAT_HEIGHT])
            margin = max(MIN_RING_PIXELS, round(RING_MARGIN * shorter))
            grown = cv2.dilate(inside.astype(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) > 0
            ring = grown & ~any_object
            if ring.any():
                objects.append(LabelledObject(kind, inside, ring))
    return objects


def object_contrast(image: np.ndarray, obj: LabelledObject) -> float:
    """Mean inside minus mean of the ring, on [0, 1], of a uint8 grey ``image``."""
    grey = image.astype(np.float64) / GREY_PEAK
    return float(grey[obj.inside].mean() - grey[obj.ring].mean())


@dataclass(frozen=True)
class ContrastSummary:
    count: int
    mean: float
    share_standing_out: float  # of objects with contrast >= STANDS_OUT

    @classmethod
    def of(cls, contrasts: list[float]) -> "ContrastSummary":
        if not contrasts:
            return cls(0, float("nan"), float("nan"))
        values = np.asarray(contrasts)
        return cls(len(values), float(values.mean()), float((values >= STANDS_OUT).mean()))
