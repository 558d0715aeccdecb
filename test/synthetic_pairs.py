"""Synthetic vi/ + ir/ datasets for tests that must run without ``../shared/data``."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

PAIRS = 10
PAIR_SIZE = 64


def write_pairs(root: Path, count: int = PAIRS, size: int = PAIR_SIZE, seed: int = 0) -> Path:
    """A vi/ + ir/ dataset of structured synthetic scenes (a warm blob on a textured background)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    for folder in ("vi", "ir"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        texture = 0.5 + 0.25 * np.sin(2 * np.pi * (3 + i % 4) * xx) * np.cos(2 * np.pi * 2 * yy)
        visible = np.clip(texture + 0.05 * rng.standard_normal((size, size)), 0, 1)
        cy, cx = rng.uniform(0.3, 0.7, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)
        infrared = np.clip(0.2 + 0.7 * blob + 0.03 * rng.standard_normal((size, size)), 0, 1)
        colour = np.stack([visible * f for f in (0.8, 1.0, 0.9)], axis=-1)
        cv2.imwrite(str(root / "vi" / f"{i:03d}.png"), (colour * 255).astype(np.uint8))
        cv2.imwrite(str(root / "ir" / f"{i:03d}.png"), (infrared * 255).astype(np.uint8))
    return root
