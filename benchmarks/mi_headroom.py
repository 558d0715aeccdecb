"""How much the fused image's MI with the real infrared can gain from our pseudo-IR, blended in by fixed rules.

MI(IR, F) (256-bin joint histogram, bits) is one of issue 16's bars: the fused image should share more information
with the real infrared than the visible image does. This measures, on the validation pairs, MI(IR, ·) of the
visible luminance Y, of the pseudo-IR P, of the shipped fused image, and of fixed blends of P into Y that need no
gate: Y + ½·max(P − Y, 0), max(Y, P) and 0.8·Y + 0.2·P; max(Y, IR) (the real infrared blended in) is the ceiling
for scale. A blend that adds P everywhere can only raise MI where P tells more about the infrared than Y does.

    python benchmarks/mi_headroom.py --out benchmarks/results/mi_headroom.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dcmif_ros.evaluation.methods import StillImageFuser
from dcmif_ros.evaluation.metrics import mutual_information_with
from dcmif_ros.image_codec import luminance, read_gray, read_image, to_uint8
from dcmif_ros.inference.pipeline import FusionPipeline, PipelineConfig
from dcmif_ros.training.data import collect_pairs

DATASETS = ("msrs_fullres", "llvip_train", "roadscene_train")
CPU_PROCESSING_SIZE = (320, 240)  # the node's CPU default


def scene_of(name: str) -> str:
    return {"D": "day", "N": "night"}.get(name[-1], "all")


def candidates(y: np.ndarray, pseudo_ir: np.ndarray, fused: np.ndarray, infrared: np.ndarray) -> dict[str, np.ndarray]:
    """Every image to score, as float grey levels (0–255)."""
    return {"visible Y": y, "pseudo-IR P": pseudo_ir, "fused (shipped)": fused,
            "Y + max(P - Y, 0) / 2": y + 0.5 * np.maximum(pseudo_ir - y, 0.0), "max(Y, P)": np.maximum(y, pseudo_ir),
            "0.8 Y + 0.2 P": 0.8 * y + 0.2 * pseudo_ir, "max(Y, IR) (real infrared)": np.maximum(y, infrared)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--out", default="benchmarks/results/mi_headroom.json", type=Path)
    args = parser.parse_args()
    pipeline = FusionPipeline(PipelineConfig(model_path=args.model, prior="embedded",
                                             processing_size=CPU_PROCESSING_SIZE, synchronous_prior=True))
    fuser = StillImageFuser(pipeline, refresh_every=1)
    scores: dict[str, dict[str, list[float]]] = {}
    try:
        for dataset in DATASETS:
            if not (args.data / dataset).is_dir():
                continue
            for pair in collect_pairs([args.data / dataset], "val"):
                visible, infrared = read_image(pair.visible_path), read_gray(pair.infrared_path)
                result = fuser(visible)
                images = candidates(luminance(visible).astype(np.float32), result.pseudo_ir.astype(np.float32),
                                    luminance(result.fused).astype(np.float32), infrared.astype(np.float32))
                group = scores.setdefault(f"{dataset}/{scene_of(Path(pair.name).name)}", {})
                for name, image in images.items():
                    group.setdefault(name, []).append(
                        mutual_information_with(infrared, to_uint8(image / 255.0)))
    finally:
        pipeline.close()
    means = {group: {name: round(float(np.mean(v)), 4) for name, v in by.items()} for group, by in scores.items()}
    pairs = {group: len(next(iter(by.values()))) for group, by in scores.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": __doc__.splitlines()[0], "model": str(pipeline.engine.model_path),
                                    "processing_size": list(CPU_PROCESSING_SIZE), "pairs": pairs,
                                    "mi_with_real_ir_bits": means}, indent=2) + "\n")
    names = list(next(iter(means.values())))
    lines = ["| scenes (pairs) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {group} ({pairs[group]}) | " + " | ".join(f"{row[n]:.3f}" for n in names) + " |"
              for group, row in means.items()]
    args.out.with_suffix(".md").write_text(f"# {__doc__.splitlines()[0]}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
