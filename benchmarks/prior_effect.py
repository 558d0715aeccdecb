"""How much the language-model prior changes the outputs: the embedded prior against ``--prior none``.

On MSRS validation frames at the node's CPU resolution (320x240), the same model runs twice per frame, once with
the embedded prior refreshed from that frame and once with identity FiLM; the script reports the mean absolute
difference (grey levels) of the pseudo-IR and of the fused luminance, and the share of pixels that moved by at
least one level.

    python benchmarks/prior_effect.py --out benchmarks/results/prior_effect.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dcmif_ros.evaluation.methods import StillImageFuser
from dcmif_ros.image_codec import luminance, read_image
from dcmif_ros.inference.pipeline import FusionPipeline, PipelineConfig
from dcmif_ros.training.data import collect_pairs

CPU_PROCESSING_SIZE = (320, 240)


def outputs(prior: str, frames: list[np.ndarray], model: str | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(pseudo-IR, fused luminance) as float grey levels for every frame, with ``prior``."""
    pipeline = FusionPipeline(PipelineConfig(model_path=model, prior=prior, processing_size=CPU_PROCESSING_SIZE,
                                             synchronous_prior=True))
    try:
        fuser = StillImageFuser(pipeline, refresh_every=1)
        results = [fuser(frame) for frame in frames]
    finally:
        pipeline.close()
    return [(r.pseudo_ir.astype(np.float32), luminance(r.fused).astype(np.float32)) for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--frames", type=int, default=12, help="MSRS validation frames (default: %(default)s)")
    parser.add_argument("--out", default="benchmarks/results/prior_effect.json", type=Path)
    args = parser.parse_args()
    pairs = collect_pairs([args.data / "msrs_fullres"], "val")[: args.frames]
    frames = [read_image(pair.visible_path) for pair in pairs]
    with_prior, without = outputs("embedded", frames, args.model), outputs("none", frames, args.model)
    report = {}
    for index, name in enumerate(("pseudo-IR", "fused")):
        moved = [np.abs(a[index] - b[index]) for a, b in zip(with_prior, without)]
        report[name] = {"mean_abs_grey_levels": round(float(np.mean([m.mean() for m in moved])), 2),
                        "share_of_pixels_moved_1_or_more": round(float(np.mean([(m >= 1).mean() for m in moved])), 4)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": __doc__.splitlines()[0], "frames": [p.name for p in pairs],
                                    "processing_size": list(CPU_PROCESSING_SIZE), "embedded_vs_none": report},
                                   indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
