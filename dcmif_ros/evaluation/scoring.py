"""Score a folder of fused images against their visible and infrared sources.

Files pair up by stem (the name without its extension) across the three folders, so ``vi/00008N.png``,
``ir/00008N.png`` and ``fused/00008N.jpg`` form one triple. A stem that cannot be scored is recorded in
``Evaluation.errors`` with the reason, and the rest are still scored, because one bad file should not
throw away a long run. The reasons are: the stem is missing from one or more folders (every
unmatched name is reported, including source pairs that have no fused result), a folder holds
several files with that stem, a file cannot be decoded, or the three images differ in size or are
not 8-bit. Only an evaluation with nothing scorable raises.

The CSV holds one row per scored image and no mean row, so it loads as plain data; the mean is in
``Evaluation.mean`` and in the terminal table. A NaN or inf in some row (a degenerate image such as an
all-black one, see ``dcmif_ros.evaluation.metrics``) stays in its row and the CSV but is left out of the mean, which would
otherwise be NaN or inf for the whole set; ``Evaluation.non_finite`` and the table's footer name them.
"""
from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dcmif_ros.evaluation.metrics import HIGHER_IS_BETTER, METRIC_NAMES, compute_metrics

ROLES = ("vi", "ir", "fused")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
IMAGE_COLUMN = "image"
MEAN_LABEL = "mean"
VALUE_FORMAT = "{:.4f}"


@dataclass(frozen=True)
class Evaluation:
    """Per-image metric rows (sorted by stem), their mean, and the stems that were skipped and why."""

    mode: str
    rows: dict[str, dict[str, float]]
    mean: dict[str, float]  # over the finite values; NaN only when a metric has none
    errors: dict[str, str]
    non_finite: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # stem: its metrics left out


def _images_by_stem(folder: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """The folder's image files keyed by stem, and the stems that name more than one file."""
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            files.setdefault(path.stem, []).append(path)
    unique = {stem: paths[0] for stem, paths in files.items() if len(paths) == 1}
    ambiguous = {stem: "several files: " + ", ".join(p.name for p in paths)
                 for stem, paths in files.items() if len(paths) > 1}
    return unique, ambiguous


def _read_image(path: Path) -> np.ndarray:
    """The file as stored: grey stays HxW, colour is BGR, alpha dropped, bit depth kept.

    Keeping the depth makes compute_metrics refuse 16-bit files instead of scoring a silent rescale:
    the metrics are defined on saved 8-bit images.
    """
    image = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise ValueError(f"cannot decode {path}")
    return image


def _score(paths: dict[str, Path], mode: str) -> dict[str, float]:
    """All metrics of one triple; ValueError says what is wrong with it."""
    images = {role: _read_image(paths[role]) for role in ROLES}
    return compute_metrics(images["vi"], images["ir"], images["fused"], mode=mode)


def _unmatched_reason(stem: str, listings: dict[str, dict[str, Path]],
                      ambiguous: dict[str, dict[str, str]]) -> str | None:
    """Why ``stem`` does not form exactly one file per folder, or None when it does."""
    problems = [f"{role}: {ambiguous[role][stem]}" for role in ROLES if stem in ambiguous[role]]
    missing = [role for role in ROLES if stem not in listings[role] and stem not in ambiguous[role]]
    if missing:
        problems.append("no " + ", ".join(missing) + " image")
    return "; ".join(problems) or None


def _check_folders(folders: dict[str, Path]) -> None:
    """FileNotFoundError naming the role of a folder that does not exist."""
    for role, folder in folders.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"{role} folder not found: {folder}")


def evaluate_dirs(vi_dir: str | Path, ir_dir: str | Path, fused_dir: str | Path,
                  mode: str = "gray") -> Evaluation:
    """Score every stem present in all three folders; see the module docstring for the pairing rules."""
    folders = {"vi": Path(vi_dir), "ir": Path(ir_dir), "fused": Path(fused_dir)}
    _check_folders(folders)
    scanned = {role: _images_by_stem(folder) for role, folder in folders.items()}
    listings = {role: files for role, (files, _) in scanned.items()}
    ambiguous = {role: duplicates for role, (_, duplicates) in scanned.items()}
    stems = sorted(set().union(*listings.values(), *ambiguous.values()))

    rows: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    for stem in stems:
        reason = _unmatched_reason(stem, listings, ambiguous)
        if reason is not None:
            errors[stem] = reason
            continue
        try:
            rows[stem] = _score({role: listings[role][stem] for role in ROLES}, mode)
        except ValueError as exc:
            errors[stem] = str(exc)
    if not rows:
        details = "; ".join(f"{stem}: {reason}" for stem, reason in errors.items()) or "no image files"
        raise ValueError(f"nothing to evaluate ({details})")
    mean = {name: _finite_mean([row[name] for row in rows.values()]) for name in METRIC_NAMES}
    non_finite = {stem: tuple(name for name in METRIC_NAMES if not np.isfinite(row[name]))
                  for stem, row in rows.items()}
    return Evaluation(mode=mode, rows=rows, mean=mean, errors=errors,
                      non_finite={stem: names for stem, names in non_finite.items() if names})


def _finite_mean(values: list[float]) -> float:
    finite = [value for value in values if np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")


def write_csv(evaluation: Evaluation, path: str | Path) -> Path:
    """One row per scored image under the header ``image,AG,...,PSNR``; full float precision."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([IMAGE_COLUMN, *METRIC_NAMES])
        for stem, row in evaluation.rows.items():
            writer.writerow([stem, *(repr(row[name]) for name in METRIC_NAMES)])
    return path


def format_table(evaluation: Evaluation) -> str:
    """Aligned per-image table with the mean as the last line, for the terminal."""
    body = [[stem, *(VALUE_FORMAT.format(row[name]) for name in METRIC_NAMES)]
            for stem, row in evaluation.rows.items()]
    mean = [MEAN_LABEL, *(VALUE_FORMAT.format(evaluation.mean[name]) for name in METRIC_NAMES)]
    header = [IMAGE_COLUMN, *METRIC_NAMES]
    widths = [max(len(line[column]) for line in (header, *body, mean)) for column in range(len(header))]

    def render(line: list[str]) -> str:
        cells = [line[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(line[1:], widths[1:])]
        return "  ".join(cells)

    rule = "-" * len(render(header))
    lower_better = ", ".join(name for name in METRIC_NAMES if not HIGHER_IS_BETTER[name])
    footer = f"mode {evaluation.mode}; higher is better except {lower_better}"
    if evaluation.non_finite:
        left_out = "; ".join(f"{stem}: {', '.join(names)}" for stem, names in evaluation.non_finite.items())
        footer += f"\nleft out of the mean as NaN or inf: {left_out}"
    return "\n".join([render(header), rule, *map(render, body), rule, render(mean), footer])
