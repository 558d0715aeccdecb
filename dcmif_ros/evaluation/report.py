"""``dcmif report``: compare fusion methods on the validation split of dataset folders, as Markdown and a figure.

For each folder (``vi/`` + ``ir/``) the validation pairs are those training holds out
(``dcmif_ros.training.data.collect_pairs(..., "val")``: every 5th pair by name). Every method fuses every
pair, and the report gives:

* per dataset, the mean of each fusion metric per method (``dcmif_ros.evaluation.metrics``, gray mode), the best
  value of each column in bold, in the direction ``metrics.HIGHER_IS_BETTER`` gives;
* per dataset, how close each method's pseudo-infrared is to the real infrared (SSIM, PSNR, L1 on [0, 1]),
  next to the visible luminance's closeness, the baseline a pseudo-infrared has to beat;
* per dataset, how much real thermal information each fused image carries: MI(IR, F) in bits and the
  infrared half of SCD, corr(F − Y_vis, IR) (0 for the visible image itself);
* ``comparison.png``: one row per scene (the first few pairs of each dataset): VIS | IR | each method's
  pseudo-IR (when it makes one) and fused image.

A pair that cannot be scored (unreadable, visible and infrared of different sizes, a method failing on
it) is left out for every method, so the means compare the same pairs, and is listed in the report.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from dcmif_ros.evaluation.scoring import VALUE_FORMAT
from dcmif_ros.image_codec import luminance, read_gray, read_image
from dcmif_ros.evaluation.methods import Method, require_distinct_labels
from dcmif_ros.evaluation.metrics import HIGHER_IS_BETTER, METRIC_NAMES, compute_metrics, peak_signal_to_noise
from dcmif_ros.evaluation.metrics import added_correlation, mutual_information_with, structural_similarity
from dcmif_ros.training.data import ImagePair, collect_pairs

REPORT_FILE = "report.md"
FIGURE_FILE = "comparison.png"
METRICS_MODE = "gray"
VISIBLE_LUMINANCE_LABEL = "visible Y"
CLOSENESS_HIGHER_IS_BETTER = {"SSIM": True, "PSNR": True, "L1": False}
THERMAL_HIGHER_IS_BETTER = {"MI(IR,F)": True, "corr(F-VIS,IR)": True}
GREY_PEAK = 255.0

FIGURE_TILE_HEIGHT = 160
FIGURE_LABEL_HEIGHT = 22
FIGURE_GAP = 4
FIGURE_BACKGROUND = 255
FIGURE_TEXT_COLOUR = (0, 0, 0)
FIGURE_FONT = cv2.FONT_HERSHEY_SIMPLEX
FIGURE_FONT_SCALE = 0.45
FIGURE_TEXT_MARGIN = 4


@dataclass
class DatasetResult:
    """Per-pair values of one dataset, by method (fusion metrics) and by source (pseudo-IR closeness)."""

    name: str
    fusion: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    closeness: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    thermal: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    scored: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    figure: Path | None  # None when no scene was scored


def infrared_closeness(estimate: np.ndarray, infrared: np.ndarray) -> dict[str, float]:
    """SSIM, PSNR and L1 of a grey estimate against the real infrared, on the metrics' own definitions.

    The metrics module defines SSIM and PSNR against two sources; with the infrared as both, its PSNR is
    the textbook one and its SSIM sum is twice Wang's SSIM. L1 is the mean absolute error on [0, 1], the
    scale of the training losses.
    """
    reference, candidate = infrared.astype(np.float64), estimate.astype(np.float64)
    return {
        "SSIM": structural_similarity(reference, reference, candidate) / 2.0,
        "PSNR": peak_signal_to_noise(reference, reference, candidate),
        "L1": float(np.mean(np.abs(reference - candidate)) / GREY_PEAK),
    }


def thermal_content(visible_bgr: np.ndarray, infrared: np.ndarray, fused_bgr: np.ndarray) -> dict[str, float]:
    """MI(IR, F) and corr(F − Y_vis, IR) on luminance (see the module docstring)."""
    fused, visible = luminance(fused_bgr), luminance(visible_bgr)
    return {"MI(IR,F)": mutual_information_with(infrared, fused),
            "corr(F-VIS,IR)": added_correlation(visible, infrared, fused)}


def build_report(datasets: Sequence[str | Path], methods: Sequence[Method], out_dir: str | Path,
                 figure_scenes: int, max_pairs: int | None = None) -> ReportFiles:
    """Run every method on every dataset's validation pairs; write the Markdown report and the figure.

    ``figure_scenes``: the first pairs of each dataset shown in the figure; ``max_pairs``: a cap per dataset.
    """
    require_distinct_labels(methods)
    out_dir = Path(out_dir)
    results, figure_rows = [], []
    for dataset in map(Path, datasets):
        pairs = collect_pairs([dataset], "val")[:max_pairs]
        result = DatasetResult(dataset.name)
        for index, pair in enumerate(tqdm(pairs, desc=f"report {dataset.name}", unit="pair", disable=None)):
            tiles = _score_pair(pair, methods, result)
            if tiles is not None and index < figure_scenes:
                figure_rows.append(_figure_row(pair.name, tiles))
        results.append(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = out_dir / FIGURE_FILE if figure_rows else None
    if figure and not cv2.imwrite(str(figure), _concatenate_with_gaps(figure_rows, axis=0)):
        raise OSError(f"cannot write {figure}")
    markdown = out_dir / REPORT_FILE
    markdown.write_text(format_report(results, methods, figure.name if figure else None))
    return ReportFiles(markdown, figure)


def _score_pair(pair: ImagePair, methods: Sequence[Method],
                result: DatasetResult) -> list[tuple[str, np.ndarray]] | None:
    """Score one pair with every method into ``result``; the figure tiles, or None when it was skipped."""
    try:
        visible, infrared = read_image(pair.visible_path), read_gray(pair.infrared_path)
        if visible.shape[:2] != infrared.shape[:2]:
            raise ValueError(f"visible {visible.shape[1]}x{visible.shape[0]} and infrared "
                             f"{infrared.shape[1]}x{infrared.shape[0]} differ in size")
        outputs = {method.label: method(visible, infrared) for method in methods}
        fusion = {label: compute_metrics(visible, infrared, output.fused, mode=METRICS_MODE)
                  for label, output in outputs.items()}
        thermal = {label: thermal_content(visible, infrared, output.fused) for label, output in outputs.items()}
        closeness = {VISIBLE_LUMINANCE_LABEL: infrared_closeness(luminance(visible), infrared)}
        closeness |= {f"{label} pseudo-IR": infrared_closeness(output.pseudo_ir, infrared)
                      for label, output in outputs.items() if output.pseudo_ir is not None}
    except (OSError, ValueError) as exc:  # ImageDecodeError is a ValueError
        result.skipped[pair.name] = str(exc)
        return None
    for label, values in fusion.items():
        result.fusion.setdefault(label, []).append(values)
    for label, values in closeness.items():
        result.closeness.setdefault(label, []).append(values)
    for label, values in thermal.items():
        result.thermal.setdefault(label, []).append(values)
    result.scored.append(pair.name)
    tiles = [("VIS", visible), ("IR", infrared)]
    for label, output in outputs.items():
        if output.pseudo_ir is not None:
            tiles.append((f"{label} pseudo-IR", output.pseudo_ir))
        tiles.append((label, output.fused))
    return tiles


# ---------------------------------------------------------------------------------------------------------
# Markdown


def _means(rows: list[dict[str, float]], names: Sequence[str]) -> dict[str, float]:
    """Plain means, so a NaN in some pair shows (as ``dcmif eval`` does)."""
    return {name: float(np.mean([row[name] for row in rows])) for name in names}


def _markdown_table(row_labels: list[str], extra: dict[str, list[str]], means: list[dict[str, float]],
                    higher_is_better: dict[str, bool]) -> list[str]:
    """A table with the label column, ``extra`` text columns, then one column per value, the best in bold
    (every value that shows as the best does, so equal-looking values never differ in weight)."""
    names = list(higher_is_better)
    header = ["", *extra, *(f"{name} {'↑' if higher_is_better[name] else '↓'}" for name in names)]
    cells = [[label, *(column[i] for column in extra.values())] for i, label in enumerate(row_labels)]
    for name in names:
        values = np.array([row[name] for row in means])
        best = _best_value(values, higher_is_better[name])
        best_text = None if best is None else VALUE_FORMAT.format(best)
        for row, value in zip(cells, values):
            text = VALUE_FORMAT.format(value)
            row.append(f"**{text}**" if text == best_text else text)
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in cells]


def _best_value(values: np.ndarray, higher_is_better: bool) -> float | None:
    """The best value of a column ignoring NaN (an infinite PSNR is a perfect match), or None when all are NaN."""
    numbers = values[~np.isnan(values)]
    if numbers.size == 0:
        return None
    return float(numbers.max() if higher_is_better else numbers.min())


def format_report(results: Sequence[DatasetResult], methods: Sequence[Method], figure_name: str | None) -> str:
    """The Markdown report of scored datasets (see the module docstring)."""
    lines = [
        "# Fusion report",
        "",
        "Validation split of each dataset (every 5th pair by name, as training holds out). Fusion metrics: "
        f"`dcmif_ros.evaluation.metrics`, {METRICS_MODE} mode, mean over the pairs. Best value per column in **bold** "
        "(↑ higher is better, ↓ lower is better). Inputs: VIS = the method sees only the visible image, "
        "VIS+IR = it also reads the real infrared.",
    ]
    for result in results:
        attempted = len(result.scored) + len(result.skipped)
        lines += ["", f"## {result.name}", "", f"{len(result.scored)} of {attempted} validation pairs scored."]
        if result.scored:
            lines.append("")
            labels = [m.label for m in methods]
            inputs = ["VIS+IR" if m.uses_infrared else "VIS" for m in methods]
            means = [_means(result.fusion[label], METRIC_NAMES) for label in labels]
            lines += ["### Fusion quality", ""]
            lines += _markdown_table(labels, {"inputs": inputs}, means, HIGHER_IS_BETTER)
            sources = list(result.closeness)
            closeness = [_means(result.closeness[source], list(CLOSENESS_HIGHER_IS_BETTER)) for source in sources]
            lines += ["", "### Pseudo-infrared vs. real infrared", "",
                      f"SSIM (Wang, 11x11 Gaussian), PSNR (dB) and L1 (mean absolute error on [0, 1]) against "
                      f"the real infrared; `{VISIBLE_LUMINANCE_LABEL}` is the visible luminance as it is.", ""]
            lines += _markdown_table(sources, {}, closeness, CLOSENESS_HIGHER_IS_BETTER)
            thermal = [_means(result.thermal[label], list(THERMAL_HIGHER_IS_BETTER)) for label in labels]
            lines += ["", "### Real thermal information in the fused image", "",
                      "MI(IR, F) in bits (luminance), and corr(F − Y_vis, IR): whether what a method adds to the "
                      "visible luminance follows the real infrared (0 for the visible image itself).", ""]
            lines += _markdown_table(labels, {"inputs": inputs}, thermal, THERMAL_HIGHER_IS_BETTER)
        if result.skipped:
            lines += ["", "Skipped pairs:", ""]
            lines += [f"- {name}: {reason}" for name, reason in result.skipped.items()]
    if figure_name:
        lines += ["", "## Comparison", "", f"![VIS, IR and each method's fused image per scene]({figure_name})"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Figure


def _labelled_tile(label: str, image: np.ndarray) -> np.ndarray:
    """The image scaled to the tile height, as BGR, under a strip with its label (cut to fit)."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    width = max(1, round(image.shape[1] * FIGURE_TILE_HEIGHT / image.shape[0]))
    tile = cv2.resize(image, (width, FIGURE_TILE_HEIGHT), interpolation=cv2.INTER_AREA)
    strip = np.full((FIGURE_LABEL_HEIGHT, width, 3), FIGURE_BACKGROUND, np.uint8)
    _put_text(strip, label)
    return np.vstack([strip, tile])


def _put_text(strip: np.ndarray, text: str) -> None:
    """Write ``text`` left-aligned on the strip, dropping characters from the end until it fits."""
    room = strip.shape[1] - 2 * FIGURE_TEXT_MARGIN
    while text and cv2.getTextSize(text, FIGURE_FONT, FIGURE_FONT_SCALE, 1)[0][0] > room:
        text = text[:-1]
    (_, text_height), _ = cv2.getTextSize(text or " ", FIGURE_FONT, FIGURE_FONT_SCALE, 1)
    baseline_y = (strip.shape[0] + text_height) // 2
    cv2.putText(strip, text, (FIGURE_TEXT_MARGIN, baseline_y), FIGURE_FONT, FIGURE_FONT_SCALE,
                FIGURE_TEXT_COLOUR, 1, cv2.LINE_AA)


def _concatenate_with_gaps(parts: list[np.ndarray], axis: int) -> np.ndarray:
    """Concatenate images along ``axis`` with background gaps, padding the other axis to the largest."""
    other = 1 - axis
    size = max(part.shape[other] for part in parts)
    padded = []
    for part in parts:
        padding = [(0, 0), (0, 0), (0, 0)]
        padding[other] = (0, size - part.shape[other])
        padded.append(np.pad(part, padding, constant_values=FIGURE_BACKGROUND))
        gap_shape = [size, size, 3]
        gap_shape[axis] = FIGURE_GAP
        padded.append(np.full(gap_shape, FIGURE_BACKGROUND, np.uint8))
    return np.concatenate(padded[:-1], axis=axis)


def _figure_row(scene: str, tiles: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """One scene: a strip with its name over the labelled tiles side by side."""
    row = _concatenate_with_gaps([_labelled_tile(label, image) for label, image in tiles], axis=1)
    title = np.full((FIGURE_LABEL_HEIGHT, row.shape[1], 3), FIGURE_BACKGROUND, np.uint8)
    _put_text(title, scene)
    return np.vstack([title, row])
