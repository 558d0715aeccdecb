"""Registered visible/infrared pairs from folders with ``vi/`` and ``ir/`` (the layout of ``../shared/data``).

Images are decoded once and kept in memory as uint8 luminance (visible) and grey (infrared). Crops and flips
are drawn from a generator seeded by (seed, epoch, index), so runs are reproducible and every epoch sees
new crops (unlike re-seeding per sample, which freezes the crop).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from dcmif_ros.image_codec import luminance, read_gray, read_image
from dcmif_ros.training.objects import crop_boxes, read_boxes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VALIDATION_EVERY = 5  # every 5th pair (sorted by name) of each folder is held out for validation


BOXES_DIR = "boxes"  # YOLO labels of the objects the infrared shows, one text file per pair


@dataclass(frozen=True)
class ImagePair:
    name: str
    visible_path: Path
    infrared_path: Path
    boxes_path: Path | None = None  # None: the folder has no labels (a missing file in a labelled folder: none)


def find_pairs(root: str | Path) -> list[ImagePair]:
    """Pairs of ``root/vi/NAME`` and ``root/ir/NAME``, sorted by name; unmatched names are an error."""
    root = Path(root)
    vi_dir, ir_dir = root / "vi", root / "ir"
    if not vi_dir.is_dir() or not ir_dir.is_dir():
        raise FileNotFoundError(f"{root} must contain vi/ and ir/ folders")
    visible = {p.stem: p for p in vi_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    infrared = {p.stem: p for p in ir_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    unmatched = sorted(set(visible) ^ set(infrared))
    if unmatched:
        raise ValueError(f"{root}: {len(unmatched)} images without a partner, e.g. {unmatched[:5]}")
    boxes_dir = root / BOXES_DIR
    boxes = (lambda stem: boxes_dir / f"{stem}.txt") if boxes_dir.is_dir() else (lambda stem: None)
    return [ImagePair(f"{root.name}/{stem}", visible[stem], infrared[stem], boxes(stem)) for stem in sorted(visible)]


def split_pairs(pairs: list[ImagePair], split: str) -> list[ImagePair]:
    """``train``, ``val`` (every VALIDATION_EVERY-th pair) or ``all``."""
    if split == "all":
        return pairs
    held_out = {i for i in range(len(pairs)) if i % VALIDATION_EVERY == 0}
    if split == "val":
        return [p for i, p in enumerate(pairs) if i in held_out]
    if split == "train":
        return [p for i, p in enumerate(pairs) if i not in held_out]
    raise ValueError(f"unknown split {split!r} (train, val or all)")


def collect_pairs(roots: list[str | Path], split: str) -> list[ImagePair]:
    """The ``split`` of every folder, interleaved folder by folder so any prefix samples all of them."""
    per_root = [split_pairs(find_pairs(root), split) for root in roots]
    longest = max((len(p) for p in per_root), default=0)
    return [pairs[i] for i in range(longest) for pairs in per_root if i < len(pairs)]


def load_luminance(path: Path) -> np.ndarray:
    """The Y channel of a visible image (grey, RGBA and 16-bit files handled by ``read_image``), uint8."""
    return luminance(read_image(path))


class PairDataset(Dataset):
    """Random aligned crops (and horizontal flips) of (Y_vis, IR), as float tensors in [0, 1], with the labelled
    objects' boxes in crop pixels (``objects.crop_boxes``; no rows for a folder without labels).

    ``scales`` = (low, high) draws each crop at a random scale s (log-uniform): a (crop / s)-pixel region
    resized to ``crop``, so a model that runs on frames downscaled for speed (the node's ``processing_size``)
    or on scenes whose objects are smaller sees those scales in training. An image whose shorter side is below
    the region is enlarged to fit it (s is raised), so every crop has the same size and any image can be used.
    """

    def __init__(self, pairs: list[ImagePair], crop: int, seed: int = 0, augment: bool = True,
                 scales: tuple[float, float] = (1.0, 1.0)):
        if not pairs:
            raise ValueError("no training pairs found")
        low, high = scales
        if not 0 < low <= high:
            raise ValueError(f"crop scales must satisfy 0 < low <= high, got {scales}")
        self.pairs, self.crop, self.seed, self.augment, self.scales = pairs, crop, seed, augment, scales
        self.visible = [load_luminance(p.visible_path) for p in pairs]
        self.infrared = [read_gray(p.infrared_path) for p in pairs]
        self.boxes = [read_boxes(p.boxes_path) for p in pairs]
        for pair, vis, ir in zip(pairs, self.visible, self.infrared):
            if vis.shape != ir.shape:
                raise ValueError(f"{pair.name}: visible {vis.shape} and infrared {ir.shape} differ in size")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        vis, ir = self.visible[index], self.infrared[index]
        height, width = vis.shape
        low, high = self.scales
        # drawn only when asked, so fixed-scale runs keep the crops they always had
        scale = low if low == high else float(np.exp(rng.uniform(np.log(low), np.log(high))))
        scale = max(scale, self.crop / min(height, width))
        region = min(round(self.crop / scale), height, width)
        top = int(rng.integers(0, height - region + 1))
        left = int(rng.integers(0, width - region + 1))
        vis = vis[top : top + region, left : left + region]
        ir = ir[top : top + region, left : left + region]
        if region != self.crop:
            interpolation = cv2.INTER_AREA if region > self.crop else cv2.INTER_LINEAR
            vis, ir = (cv2.resize(x, (self.crop, self.crop), interpolation=interpolation) for x in (vis, ir))
        flip = self.augment and rng.random() < 0.5
        if flip:
            vis, ir = vis[:, ::-1], ir[:, ::-1]
        return {
            "vis": torch.from_numpy(np.ascontiguousarray(vis)).float().div(255.0)[None],
            "ir": torch.from_numpy(np.ascontiguousarray(ir)).float().div(255.0)[None],
            "boxes": torch.from_numpy(crop_boxes(self.boxes[index], (height, width), top, left, region, self.crop,
                                                 flip)),
            "labelled": self.pairs[index].boxes_path is not None,
            "index": index,
        }
