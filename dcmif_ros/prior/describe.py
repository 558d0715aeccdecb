"""Measure a (visible, pseudo-IR) pair and say it in a few fixed English sentences.

This is the offline stand-in for the vision-language critique: the same things the paper's prompt asks
about (thermal distribution, contrast, texture), measured instead of judged, so it is deterministic and
runs anywhere. The numbers are returned too, for diagnostics and tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from dcmif_ros.prior.base import checked_pair

#: Mean visible luma (BT.601 Y in [0, 1]) below which the scene is judged to be at night.
NIGHT_BRIGHTNESS = 0.25
#: (upper bound, word) for mean luma; every table ends with an infinite bound.
BRIGHTNESS_WORDS = ((0.25, "dark"), (0.55, "moderately bright"), (math.inf, "bright"))
#: (upper bound, word) for the luma standard deviation.
CONTRAST_WORDS = ((0.08, "low"), (0.18, "moderate"), (math.inf, "high"))
#: (upper bound, words) for the fraction of Canny edge pixels.
EDGE_WORDS = ((0.03, "few"), (0.10, "a moderate number of"), (math.inf, "many"))
#: Canny hysteresis thresholds on 8-bit images.
CANNY_LOW, CANNY_HIGH = 50, 150
#: A pixel is hot when it is this many standard deviations above the infrared mean ...
HOT_SIGMAS = 1.5
#: ... and at least this bright, so a flat, dark pseudo-IR has no "hot" noise.
HOT_MIN_LEVEL = 0.6
#: Hot-pixel fraction below which no hot region is reported.
MIN_HOT_FRACTION = 0.001
#: A grid cell is named as a hot location when it holds at least this share of all hot pixels.
HOT_CELL_SHARE = 0.2
#: At most this many locations are named, most hot pixels first.
MAX_HOT_LOCATIONS = 3
#: Names of the 3×3 grid cells, row by row from the top left.
GRID_CELL_NAMES = (
    ("upper left", "upper center", "upper right"),
    ("middle left", "center", "middle right"),
    ("lower left", "lower center", "lower right"),
)


@dataclass(frozen=True)
class PairStatistics:
    """What was measured; brightness and contrast are the mean and standard deviation in [0, 1]."""

    visible_brightness: float
    visible_contrast: float
    visible_edge_density: float
    is_night: bool
    infrared_brightness: float
    infrared_contrast: float
    infrared_edge_density: float
    hot_fraction: float
    hot_locations: tuple[str, ...]


@dataclass(frozen=True)
class PairDescription:
    """The measured statistics and the sentences that state them."""

    statistics: PairStatistics
    sentences: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def describe_pair(visible_bgr: np.ndarray, pseudo_ir: np.ndarray) -> PairDescription:
    statistics = measure_pair(visible_bgr, pseudo_ir)
    return PairDescription(statistics, sentences_for(statistics))


def measure_pair(visible_bgr: np.ndarray, pseudo_ir: np.ndarray) -> PairStatistics:
    visible_bgr, pseudo_ir = checked_pair(visible_bgr, pseudo_ir)
    luma = cv2.cvtColor(visible_bgr, cv2.COLOR_BGR2GRAY)
    infrared_8bit = np.round(pseudo_ir * 255.0).astype(np.uint8)
    luma_01 = luma.astype(np.float32) / 255.0
    hot = hot_mask(pseudo_ir)
    brightness = float(luma_01.mean())
    return PairStatistics(
        visible_brightness=brightness,
        visible_contrast=float(luma_01.std()),
        visible_edge_density=edge_density(luma),
        is_night=brightness < NIGHT_BRIGHTNESS,
        infrared_brightness=float(pseudo_ir.mean()),
        infrared_contrast=float(pseudo_ir.std()),
        infrared_edge_density=edge_density(infrared_8bit),
        hot_fraction=float(hot.mean()),
        hot_locations=hot_locations(hot),
    )


def edge_density(gray_8bit: np.ndarray) -> float:
    """Fraction of pixels on a Canny edge: a proxy for texture."""
    return float(np.count_nonzero(cv2.Canny(gray_8bit, CANNY_LOW, CANNY_HIGH))) / gray_8bit.size


def hot_mask(pseudo_ir: np.ndarray) -> np.ndarray:
    """Pixels markedly warmer than the rest of the scene (targets such as people and engines)."""
    threshold = max(HOT_MIN_LEVEL, float(pseudo_ir.mean() + HOT_SIGMAS * pseudo_ir.std()))
    return pseudo_ir >= threshold


def hot_locations(hot: np.ndarray) -> tuple[str, ...]:
    """Grid cells holding a large share of the hot pixels, most first (ties in reading order)."""
    total = np.count_nonzero(hot)
    if total == 0:
        return ()
    row_edges = np.linspace(0, hot.shape[0], len(GRID_CELL_NAMES) + 1).astype(int)
    col_edges = np.linspace(0, hot.shape[1], len(GRID_CELL_NAMES[0]) + 1).astype(int)
    counts = [
        (np.count_nonzero(hot[row_edges[i]:row_edges[i + 1], col_edges[j]:col_edges[j + 1]]), name)
        for i, row_names in enumerate(GRID_CELL_NAMES)
        for j, name in enumerate(row_names)
    ]
    ranked = sorted(counts, key=lambda count_and_name: -count_and_name[0])
    return tuple(name for count, name in ranked[:MAX_HOT_LOCATIONS] if count >= HOT_CELL_SHARE * total)


def sentences_for(s: PairStatistics) -> tuple[str, ...]:
    time_of_day = "at night" if s.is_night else "in daytime"
    return (
        f"The scene appears to be {time_of_day} (visible brightness {s.visible_brightness:.2f}).",
        f"The visible image is {word_for(s.visible_brightness, BRIGHTNESS_WORDS)} with "
        f"{word_for(s.visible_contrast, CONTRAST_WORDS)} contrast ({s.visible_contrast:.2f}) and has "
        f"{word_for(s.visible_edge_density, EDGE_WORDS)} edges (edge density {s.visible_edge_density:.3f}).",
        f"The synthetic infrared image is {word_for(s.infrared_brightness, BRIGHTNESS_WORDS)} "
        f"(brightness {s.infrared_brightness:.2f}) with {word_for(s.infrared_contrast, CONTRAST_WORDS)} "
        f"contrast ({s.infrared_contrast:.2f}) and has {word_for(s.infrared_edge_density, EDGE_WORDS)} edges "
        f"(edge density {s.infrared_edge_density:.3f}).",
        hot_region_sentence(s.hot_fraction, s.hot_locations),
    )


def hot_region_sentence(fraction: float, locations: tuple[str, ...]) -> str:
    if fraction < MIN_HOT_FRACTION:
        return "No distinct hot regions stand out in the infrared image."
    coverage = f"Hot regions cover {100.0 * fraction:.1f}% of the infrared image"
    if not locations:
        return f"{coverage}, spread across the frame."
    return f"{coverage}, mostly in " + " and ".join(f"the {name}" for name in locations) + "."


def word_for(value: float, words: tuple[tuple[float, str], ...]) -> str:
    return next(word for bound, word in words if value < bound)
