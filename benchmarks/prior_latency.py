"""Latency of one prior refresh on this machine: first-pass pseudo-IR (engine, identity FiLM), the backend's
review and encoding, and the FiLM heads — exactly ``FusionPipeline.compute_prior`` — plus the encoder alone.

    python benchmarks/prior_latency.py --out benchmarks/results/prior_latency_cpu.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dcmif_ros.benchmark import sample_frame, summarize
from dcmif_ros.inference.pipeline import FusionPipeline, PipelineConfig
from dcmif_ros.inference.processing_resolution import AUTO

WARMUP_RUNS = 2


def timed(fn, runs: int) -> list[float]:
    for _ in range(WARMUP_RUNS):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1e3)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="embedded")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--processing", choices=("native", AUTO), default=AUTO,
                        help="network resolution of the first pass: the node's default auto (320x240 for a 640x480 "
                             "frame on the CPU) or the frame's own (default: %(default)s)")
    parser.add_argument("--out", default="benchmarks/results/prior_latency_cpu.json")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    frame = sample_frame(width, height)
    processing = AUTO if args.processing == AUTO else None
    with FusionPipeline(PipelineConfig(provider="cpu", prior=args.prior, processing_size=processing)) as pipeline:
        pseudo_ir = pipeline.engine.run(frame).pseudo_ir.astype(np.float32) / 255.0
        results = {
            "prior": args.prior, "size": args.size, "processing": args.processing,
            "refresh_ms": summarize(timed(lambda: pipeline.compute_prior(frame), args.runs)),
            "encoder_only_ms": summarize(timed(lambda: pipeline.encoder.encode(frame, pseudo_ir), args.runs)),
        }
        results["first_pass_network_size"] = list(pipeline.first_pass_engine.network_size)
    print(json.dumps(results, indent=2))
    Path(args.out).write_text(json.dumps({"command": "python benchmarks/prior_latency.py", "results": results},
                                         indent=2) + "\n")


if __name__ == "__main__":
    main()
