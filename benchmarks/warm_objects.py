"""Warm people and vehicles from the visible image alone: object contrast, pseudo-IR fidelity and fused quality.

On the validation pairs only (every 5th pair of each folder, never trained on):
1. object contrast with the MSRS class masks (``dcmif_ros.evaluation.warm_objects``), night and day apart, for the visible
   luminance, the real infrared, max(Y_vis, IR), our pseudo-IR and our fused luminance;
2. pseudo-IR against the real infrared: PSNR, SSIM and warm contrast (hottest 10 % of the real IR vs the rest);
3. the fused image against the visible image on AG, EN, SF, EI, MI(IR,F), SCD and Qabf (gray mode).
The model runs as ``dcmif fuse`` would, the prior refreshed from each image (``StillImageFuser``), at the
camera's resolution or at ``--processing-size`` (the node's CPU default processes at about 320x240).

    python benchmarks/warm_objects.py --model models/dcmif_tiny.onnx --out benchmarks/results/warm_objects.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dcmif_ros.image_codec import luminance, read_gray, read_image
from dcmif_ros.evaluation.methods import StillImageFuser
from dcmif_ros.evaluation.metrics import compute_metrics, mutual_information_with
from dcmif_ros.inference.pipeline import FusionPipeline, PipelineConfig
from dcmif_ros.evaluation.report import infrared_closeness
from dcmif_ros.training.data import collect_pairs
from dcmif_ros.training.stages import warm_contrast
from dcmif_ros.evaluation.warm_objects import ContrastSummary, labelled_objects, object_contrast

MASKED_DATASET = "msrs_fullres"
OTHER_DATASETS = ("roadscene_train", "llvip_train")
FUSED_METRICS = ("AG", "EN", "SF", "EI", "SCD", "Qabf")
POOLED = "all validation pairs"
SOURCES = ("visible Y", "real IR", "max(Y_vis, IR)", "pseudo-IR", "fused")


def scene_of(name: str) -> str:
    """MSRS names end in D (day) or N (night); other datasets are one group."""
    return {"D": "day", "N": "night"}.get(name[-1], "all")


def fused_scores(visible_bgr: np.ndarray, infrared: np.ndarray, fused_bgr: np.ndarray) -> dict[str, float]:
    scores = compute_metrics(visible_bgr, infrared, fused_bgr, mode="gray", names=list(FUSED_METRICS))
    scores["MI(IR,F)"] = mutual_information_with(infrared, luminance(fused_bgr))
    return scores


def means(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(float(np.mean([row[key] for row in rows])), 4) for key in rows[0]} if rows else {}


def evaluate(data: Path, fuser: StillImageFuser, max_pairs: int | None) -> dict:
    contrasts: dict[str, dict[str, dict[str, list[float]]]] = {}
    closeness: dict[str, list[dict[str, float]]] = {}
    fused_rows: dict[str, dict[str, list[dict[str, float]]]] = {}
    for dataset in (MASKED_DATASET, *OTHER_DATASETS):
        root = data / dataset
        if not root.is_dir():
            continue
        for pair in collect_pairs([root], "val")[:max_pairs]:
            visible, infrared = read_image(pair.visible_path), read_gray(pair.infrared_path)
            result = fuser(visible)
            group = f"{dataset}/{scene_of(Path(pair.name).name)}"
            y_vis = luminance(visible)
            images = {"visible Y": y_vis, "real IR": infrared, "max(Y_vis, IR)": np.maximum(y_vis, infrared),
                      "pseudo-IR": result.pseudo_ir, "fused": luminance(result.fused)}
            mask_path = root / "masks" / pair.visible_path.name
            if mask_path.is_file():
                for obj in labelled_objects(read_gray(mask_path)):
                    per_source = contrasts.setdefault(group, {}).setdefault(obj.kind, {s: [] for s in SOURCES})
                    for source, image in images.items():
                        per_source[source].append(object_contrast(image, obj))
            fidelity = infrared_closeness(result.pseudo_ir, infrared)
            to_tensor = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0)
            fidelity["warm contrast"] = warm_contrast(to_tensor(result.pseudo_ir), to_tensor(infrared))
            fidelity["real IR warm contrast"] = warm_contrast(to_tensor(infrared), to_tensor(infrared))
            closeness.setdefault(group, []).append(fidelity)
            rows = fused_rows.setdefault(group, {"visible": [], "fused": []})
            rows["visible"].append(fused_scores(visible, infrared, visible))
            rows["fused"].append(fused_scores(visible, infrared, result.fused))
    if fused_rows:  # the "over all validation pairs": every pair weighs the same, whatever its data set
        fused_rows[POOLED] = {source: [row for rows in list(fused_rows.values()) for row in rows[source]]
                              for source in ("visible", "fused")}
    return {
        "object_contrast": {group: {kind: {source: vars(ContrastSummary.of(values)) for source, values in by.items()}
                                    for kind, by in kinds.items()} for group, kinds in contrasts.items()},
        "pseudo_ir_vs_real_ir": {group: means(rows) for group, rows in closeness.items()},
        "fused_vs_visible": {group: {k: means(v) for k, v in rows.items()} | {"pairs": len(rows["fused"])}
                             for group, rows in fused_rows.items()},
    }


def markdown(results: dict) -> str:
    lines = ["## Object contrast (mean inside − ring, share of objects ≥ 0.05)", "",
             "| scenes | kind | objects | " + " | ".join(SOURCES) + " |", "|---|---|---|" + "---|" * len(SOURCES)]
    for group, kinds in results["object_contrast"].items():
        for kind, by in kinds.items():
            cells = [f"{by[s]['mean']:+.3f} / {100 * by[s]['share_standing_out']:.0f} %" for s in SOURCES]
            lines.append(f"| {group} | {kind} | {by[SOURCES[0]]['count']} | " + " | ".join(cells) + " |")
    lines += ["", "## Pseudo-IR against the real infrared", "", "| scenes | PSNR dB | SSIM | warm contrast (real IR) |",
              "|---|---|---|---|"]
    for group, row in results["pseudo_ir_vs_real_ir"].items():
        lines.append(f"| {group} | {row['PSNR']:.2f} | {row['SSIM']:.3f} | {row['warm contrast']:.3f} "
                     f"({row['real IR warm contrast']:.3f}) |")
    names = [*FUSED_METRICS, "MI(IR,F)"]
    lines += ["", "## Fused image against the visible image (gray mode; fused − visible in brackets, and in % for "
              "all pairs pooled)", "", "| scenes | pairs | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for group, rows in results["fused_vs_visible"].items():
        fused, visible = rows["fused"], rows["visible"]
        if group == POOLED:
            cells = [f"{fused[n]:.3f} ({100 * (fused[n] - visible[n]) / visible[n]:+.2f} %)" for n in names]
        else:
            cells = [f"{fused[n]:.3f} ({fused[n] - visible[n]:+.3f})" for n in names]
        lines.append(f"| {group} | {rows.get('pairs', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--prior", default="embedded")
    parser.add_argument("--processing-size", default=None, help="WxH the network runs at (default: the image's)")
    parser.add_argument("--max-pairs", type=int, default=None, help="validation pairs per dataset (default: all)")
    parser.add_argument("--out", default="benchmarks/results/warm_objects.json", type=Path)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.processing_size.split("x")) if args.processing_size else None
    pipeline = FusionPipeline(PipelineConfig(model_path=args.model, prior=args.prior, processing_size=size,
                                             synchronous_prior=True))
    try:
        results = evaluate(args.data, StillImageFuser(pipeline, refresh_every=1), args.max_pairs)
    finally:
        pipeline.close()
    command = "python benchmarks/warm_objects.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, "model": str(pipeline.engine.model_path),
                                    "results": results}, indent=2) + "\n")
    table = markdown(results)
    args.out.with_suffix(".md").write_text(f"# Warm objects: `{command}`\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()
