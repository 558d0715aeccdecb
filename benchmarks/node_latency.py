"""End-to-end latency and sustained frame rate of dcmif_node at 640x480, live, while the prior refreshes.

The deployed graph: a camera (best effort, 640x480 bgr8 at 15 Hz, in this process) → dcmif_node (its own
process) → a reliable subscriber (this process), every process with config/fastdds_shm.xml. Latency is
fused image received − its header stamp (the camera's publish time), one clock. Per network resolution it
records median and p95 latency, the medians of the first and second half (a growing backlog would show as a
rise), the sustained rate, the node's counters, and from /diagnostics the node's own overhead (decoding,
encoding, publishing: what the node adds to inference) and its inference time.

    .venv/bin/python benchmarks/node_latency.py                # models/dcmif_tiny.onnx, CPU
    .venv/bin/python benchmarks/node_latency.py --model /tmp/x.onnx --out /tmp/latency.json --duration 20
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import onnxruntime

from dcmif_ros.benchmark import cpu_name
from dcmif_ros.commands.bench import parse_sizes
from dcmif_ros.engine import load_manifest
from dcmif_ros.pipeline import default_model_path
from dcmif_ros.ros.live_run import LiveRunConfig, run_live

GOAL_FPS = 15.0
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "node_latency_cpu.json"
NATIVE = "native"
DEFAULT_SIZES = f"{NATIVE},320x240"


def processing_sizes(text: str) -> list[tuple[int, int] | None]:
    """'native,320x240' → [None, (320, 240)]; None runs the network at the camera's 640x480."""
    return [None if item == NATIVE else parse_sizes(item)[0] for item in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model_path(), help="ONNX model (default: %(default)s)")
    parser.add_argument("--provider", default="cpu", help="execution provider (default: %(default)s)")
    parser.add_argument("--prior", default="embedded", help="prior backend (default: %(default)s)")
    parser.add_argument("--refresh-every", type=int, default=15, metavar="N",
                        help="refresh the prior every N processed frames (default: %(default)s)")
    parser.add_argument("--processing-sizes", type=processing_sizes, default=processing_sizes(DEFAULT_SIZES),
                        help=f"comma-separated {NATIVE} or WIDTHxHEIGHT network resolutions (default: {DEFAULT_SIZES})")
    parser.add_argument("--rate", type=float, default=GOAL_FPS, help="camera frames per second (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default: %(default)s)")
    parser.add_argument("--logs", type=Path, default=Path("out/node_latency"),
                        help="folder for the node's logs and parameters, per run (default: %(default)s)")
    args = parser.parse_args()

    manifest = load_manifest(args.model)
    runs = []
    for size in args.processing_sizes:
        label = NATIVE if size is None else f"{size[0]}x{size[1]}"
        parameters = {"model_path": str(args.model.resolve()), "provider": args.provider, "prior": args.prior,
                      "refresh_every_n_frames": args.refresh_every}
        if size is not None:
            parameters["processing_width"], parameters["processing_height"] = size
        load_before = os.getloadavg()
        result = run_live(LiveRunConfig(out_dir=args.logs / label, node_parameters=parameters,
                                        rate_hz=args.rate, duration_s=args.duration))
        run = {"processing_size": label, "load_average_before": load_before, "load_average_after": os.getloadavg(),
               **result.summary()}
        runs.append(run)
        print(describe(run), flush=True)

    report = {
        "benchmark": "dcmif_node end-to-end latency, 640x480 camera, live prior refresh",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "onnxruntime": onnxruntime.__version__},
        "model": {"path": str(args.model), "name": manifest["model"], "trained": manifest["trained"],
                  "parameters": manifest["parameters"]},
        "provider": args.provider, "prior": args.prior, "refresh_every_n_frames": args.refresh_every,
        "camera": {"size": [640, 480], "rate_hz": args.rate, "duration_s": args.duration, "reliability": "best_effort"},
        "goal_fps": GOAL_FPS,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def describe(run: dict) -> str:
    latency, node, diagnostics = run["latency_ms"] or {}, run["node"] or {}, run["node_diagnostics"]
    return (f"network at {run['processing_size']}: {run['rate_hz']:.1f} frames/s sustained, latency median "
            f"{latency.get('median_ms', float('nan')):.0f} ms, p95 {latency.get('p95_ms', float('nan')):.0f} ms "
            f"(halves {latency.get('first_half_median_ms', float('nan')):.0f} / "
            f"{latency.get('second_half_median_ms', float('nan')):.0f} ms); node: {node.get('frames_processed')} of "
            f"{node.get('frames_received')} frames fused, inference median "
            f"{diagnostics.get('inference median (ms)')} ms, node overhead median "
            f"{diagnostics.get('node overhead median (ms)')} ms, prior version {node.get('prior_version')}")


if __name__ == "__main__":
    raise SystemExit(main())
