"""Dual-modal fusion on the validation pairs: LRCFuse and DCMIF with real infrared against max(Y_vis, IR) and
the visible-only DCMIF, per dataset, with the CPU cost of each model per 640×480 frame.

Every method is a ``dcmif_ros.evaluation.methods`` spec; metrics are ``dcmif_ros.evaluation.metrics`` in gray mode (MI in bits as
MI(VI,F) + MI(IR,F), SSIM as the sum over both sources), plus MI(IR,F) alone, which the SeAFusion bar names.
Writes ``OUT.json`` (every mean and the command) and ``OUT.md``.

    nice -n 15 .venv/bin/python benchmarks/dual_modal.py --methods max lrcfuse dcmif-dual \\
        dcmif:models/dcmif_tiny.onnx:none --out benchmarks/results/dual_modal

``results/dual_modal.lrcfuse_size.md`` compares LRCFuse sizes (docs/dual_modal.md, "Model size"), each run shipped
to ``runs/<run>/lrcfuse.onnx`` with ``--resume --ship``:

    python benchmarks/dual_modal.py --methods max lrcfuse lrcfuse:runs/lrc_tiny400/lrcfuse.onnx \
        lrcfuse:runs/lrc_paper400/lrcfuse.onnx lrcfuse:runs/lrc_paper_long/lrcfuse.onnx \
        --out benchmarks/results/dual_modal.lrcfuse_size
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from dcmif_ros.image_codec import read_gray, read_image
from dcmif_ros.evaluation.methods import Method, MethodOptions, label_apart, make_method, require_distinct_labels
from dcmif_ros.evaluation.metrics import HIGHER_IS_BETTER, compute_metrics, mutual_information
from dcmif_ros.training.data import collect_pairs

DEFAULT_DATA = ["../shared/data/msrs_fullres", "../shared/data/roadscene_train"]
METRICS = ["EN", "MI", "SSIM", "SD", "VIF", "Nabf", "AG", "CE", "EI", "SF", "SCD", "Qabf"]
MI_IR = "MI(IR,F)"
COLUMNS = METRICS + [MI_IR]
# The bar of issue 7: SeAFusion's metrics, on MSRS scenes.
BAR_METRICS = ["AG", "EN", "SF", "EI", "SD", MI_IR, "SCD", "SSIM", "Qabf"]
BAR_DATASET = "msrs_fullres"
BAR_BASELINE = "max"
SEAFUSION = {
    "parameters": 167_000,
    "published_msrs_metrics": None,
    # the one SeAFusion value on MSRS (361 test pairs) on the bar's metrics found offline, from a re-run by
    # others with their own metric code
    "third_party_msrs_metrics": {"Qabf": 0.6653},
    "third_party_source": "闫志林, 聂仁灿, 计算机科学 (Computer Science), online first 2024-11-22, Table 1, "
                          "https://link.cnki.net/urlid/50.1075.TP.20241122.1415.023",
    "note": "SeAFusion's own MSRS metric values could not be obtained offline (the search tool found no copy of "
            "its tables), so the bar is max(Y_vis, IR) on the same pairs. Its cost is estimated: "
            "an all-full-resolution convolutional network does ~1 multiply-add per parameter per pixel, so "
            "167 k parameters ≈ 2 × 167e3 × 640 × 480 ≈ 103 GFLOPs per 640×480 frame.",
    "estimated_gflops_640x480": round(2 * 167_000 * 640 * 480 / 1e9, 1),
}
TIMING_SIZE = (640, 480)
TIMING_RUNS = 10
HIGHER = {**HIGHER_IS_BETTER, MI_IR: True}


def mi_infrared(infrared: np.ndarray, fused_bgr: np.ndarray) -> float:
    """MI(IR,F) in bits: ``mutual_information`` gives MI(A,F) + MI(B,F), so A = B = IR gives twice it."""
    return mutual_information(infrared, infrared, cv2.cvtColor(fused_bgr, cv2.COLOR_BGR2GRAY)) / 2.0


def evaluate(methods: list[Method], data: list[str], max_pairs: int | None) -> dict:
    """{dataset: {"pairs": n, "methods": {label: {"inputs", "mean"}}}} over each dataset's validation pairs."""
    results = {}
    for root in data:
        pairs = collect_pairs([root], "val")[:max_pairs]
        rows: dict[str, list[dict]] = {m.label: [] for m in methods}
        for pair in tqdm(pairs, desc=Path(root).name, unit="pair"):
            visible, infrared = read_image(pair.visible_path), read_gray(pair.infrared_path)
            for method in methods:
                fused = method(visible, infrared).fused
                row = compute_metrics(visible, infrared, fused, mode="gray", names=METRICS)
                rows[method.label].append(row | {MI_IR: mi_infrared(infrared, fused)})
        results[Path(root).name] = {"pairs": len(pairs), "methods": {
            m.label: {"inputs": "VIS+IR" if m.uses_infrared else "VIS",
                      "mean": {c: float(np.mean([r[c] for r in rows[m.label]])) for c in COLUMNS}}
            for m in methods}}
    return results


def time_methods(methods: list[Method], data: list[str], runs: int) -> dict:
    """Median wall time per frame of each method (pre/post-processing included) on a 640×480 validation pair."""
    pair = collect_pairs([data[0]], "val")[0]
    visible = cv2.resize(read_image(pair.visible_path), TIMING_SIZE, interpolation=cv2.INTER_AREA)
    infrared = cv2.resize(read_gray(pair.infrared_path), TIMING_SIZE, interpolation=cv2.INTER_AREA)
    timings = {}
    for method in methods:
        method(visible, infrared)  # warm-up
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            method(visible, infrared)
            samples.append((time.perf_counter() - start) * 1e3)
        timings[method.label] = {"median_ms": round(float(np.median(samples)), 1),
                                 "p90_ms": round(float(np.percentile(samples, 90)), 1)}
    return timings


def model_costs(methods: list[Method], specs: list[str]) -> dict:
    """Parameters and GFLOPs per 640×480 frame of the dual-modal models among ``methods`` (built from ``specs``,
    ``name:ONNX``), by method label."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dcmif_ros.inference.dual import load_dual_checkpoint
    from dcmif_ros.evaluation.methods import DUAL_MODEL_FILES, SPEC_SEPARATOR, shipped_dual_model

    costs = {}
    for method, spec in zip(methods, specs):
        name, _, argument = spec.partition(SPEC_SEPARATOR)
        if name not in DUAL_MODEL_FILES:
            continue
        onnx_path = Path(argument) if argument else shipped_dual_model(name)
        manifest = json.loads(onnx_path.with_suffix(".json").read_text())
        model, _ = load_dual_checkpoint(onnx_path.with_name(manifest["weights_file"]))
        width, height = TIMING_SIZE
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.rand(1, 1, height, width), torch.rand(1, 1, height, width))
        costs[method.label] = {"parameters": manifest["parameters"],
                               "gflops_640x480": round(counter.get_total_flops() / 1e9, 1)}
    return costs


def bar_comparison(results: dict) -> dict:
    """Per dual-modal method on MSRS: the bar metrics on which it matches or beats max(Y_vis, IR)."""
    methods = results[BAR_DATASET]["methods"] if BAR_DATASET in results else {}
    if BAR_BASELINE not in methods:
        return {}
    baseline = methods[BAR_BASELINE]["mean"]
    comparison = {}
    for label, entry in methods.items():
        if label == BAR_BASELINE or entry["inputs"] != "VIS+IR":
            continue
        wins = [m for m in BAR_METRICS
                if (entry["mean"][m] >= baseline[m]) == HIGHER[m] or entry["mean"][m] == baseline[m]]
        comparison[label] = {"matches_or_beats": wins, "count": f"{len(wins)}/{len(BAR_METRICS)}"}
    return comparison


def third_party_comparison(results: dict) -> str:
    """One sentence: each dual-modal method against the SeAFusion values others measured on MSRS."""
    methods = results.get(BAR_DATASET, {}).get("methods", {})
    parts = []
    for metric, value in SEAFUSION["third_party_msrs_metrics"].items():
        verdicts = [f"{label} {entry['mean'][metric]:.4f} ({'≥' if entry['mean'][metric] >= value else '<'})"
                    for label, entry in methods.items() if entry["inputs"] == "VIS+IR" and label != BAR_BASELINE]
        parts.append(f"SeAFusion {metric} {value} on MSRS as re-run by others with their own metric code "
                     f"({SEAFUSION['third_party_source']}); here: {', '.join(verdicts)}.")
    return " ".join(parts)


def markdown(report: dict) -> str:
    lines = [f"# {report['title']}", "", f"Command: `{report['command']}`", "",
             "Validation pairs (every 5th pair by name) of each dataset; `dcmif_ros.evaluation.metrics` gray mode: BT.601 luma, "
             "MI in bits (MI(VI,F) + MI(IR,F)), SSIM = SSIM(VI,F) + SSIM(IR,F), VIF = VIF(VI,F) + VIF(IR,F), "
             "Nabf on 0–255; MI(IR,F) alone in the last column. ↑ higher is better, ↓ lower. Best per column in bold."]
    for dataset, entry in report["results"].items():
        lines += ["", f"## {dataset} ({entry['pairs']} pairs)", "",
                  "| method | inputs | " + " | ".join(f"{c} {'↑' if HIGHER[c] else '↓'}" for c in COLUMNS) + " |",
                  "|---|---|" + "---|" * len(COLUMNS)]
        means = {label: m["mean"] for label, m in entry["methods"].items()}
        best = {c: (max if HIGHER[c] else min)(v[c] for v in means.values()) for c in COLUMNS}
        for label, m in entry["methods"].items():
            cells = [f"**{m['mean'][c]:.4f}**" if m["mean"][c] == best[c] else f"{m['mean'][c]:.4f}" for c in COLUMNS]
            lines.append(f"| {label} | {m['inputs']} | " + " | ".join(cells) + " |")
    if report.get("bar"):
        lines += ["", f"## Bar: {BAR_DATASET}, against {BAR_BASELINE} (SeAFusion's published numbers unavailable)", "",
                  "| method | matches or beats max(Y_vis, IR) on | count |", "|---|---|---|"]
        lines += [f"| {label} | {', '.join(c['matches_or_beats']) or '—'} | {c['count']} |"
                  for label, c in report["bar"].items()]
        lines += ["", third_party_comparison(report["results"])]
    if report.get("timing"):
        lines += ["", f"## CPU cost per {TIMING_SIZE[0]}×{TIMING_SIZE[1]} frame", "",
                  f"Host: {report['host']}. Median of {TIMING_RUNS} runs, pre/post-processing included (see the "
                  "docs for the conditions).", "",
                  "| method | median ms | p90 ms | parameters | GFLOPs |", "|---|---|---|---|---|"]
        for label, t in report["timing"].items():
            cost = report["costs"].get(label, {})
            lines.append(f"| {label} | {t['median_ms']} | {t['p90_ms']} | {cost.get('parameters', '—')} | "
                         f"{cost.get('gflops_640x480', '—')} |")
        lines.append(f"| SeAFusion (published size, estimated cost) | — | — | {SEAFUSION['parameters']} | "
                     f"≈{SEAFUSION['estimated_gflops_640x480']} |")
    lines += ["", f"SeAFusion: {SEAFUSION['note']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=DEFAULT_DATA, help="dataset folders (vi/ + ir/)")
    parser.add_argument("--methods", nargs="+", required=True, help="dcmif_ros.evaluation.methods specs")
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix (.json and .md)")
    parser.add_argument("--title", default="Dual-modal fusion: LRCFuse and DCMIF with real infrared")
    parser.add_argument("--max-pairs", type=int, help="first N validation pairs per dataset (default: all)")
    parser.add_argument("--no-timing", action="store_true", help="skip the per-frame timing")
    parser.add_argument("--provider", default="cpu", help="onnxruntime provider for model-based methods")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or fp16 (see dcmif_ros.inference.engine)")
    args = parser.parse_args(argv)

    methods = label_apart([make_method(spec, MethodOptions(provider=args.provider, precision=args.precision))
                           for spec in args.methods], args.methods)
    require_distinct_labels(methods)
    report = {"title": args.title, "command": shlex.join([Path(sys.executable).name, *sys.argv]),
              "host": f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
              "results": evaluate(methods, args.data, args.max_pairs), "seafusion": SEAFUSION}
    report["bar"] = bar_comparison(report["results"])
    if not args.no_timing:
        report["timing"] = time_methods(methods, args.data, TIMING_RUNS)
        report["costs"] = model_costs(methods, args.methods)
    for method in methods:
        method.close()
    json_path, markdown_path = (Path(f"{args.out}{suffix}") for suffix in (".json", ".md"))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    markdown_path.write_text(markdown(report))
    print(f"wrote {markdown_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
