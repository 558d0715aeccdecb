"""Two or more exported graphs timed against each other, interleaved in one process, whole and cut.

This VM's speed moves by tens of per cent within minutes, so a graph's speed against another's is only known when
their runs alternate: each round runs every session a few times in a row (``RUNS_IN_A_ROW``, the first, which pays
for the switch from the others, untimed), and the medians are compared. Each graph runs whole
(fused, pseudo-IR, gate) and as the cut without the pseudo-IR that the node runs when nobody reads it
(``graph_optimization.graph_without``; dual-modal graphs have no cut), at its manifest's CPU optimisation level, two
intra-op threads, on one random frame at the node's CPU processing resolution with identity FiLM (the first graph's
pad multiple: graphs of one model family share it).

    git show aa1eae8:models/dcmif_tiny.onnx > /tmp/old/dcmif_tiny.onnx   # and its .json beside it
    python benchmarks/graph_speed.py /tmp/old/dcmif_tiny.onnx models/dcmif_tiny.onnx \
        --out benchmarks/results/graph_speed_fifth_round.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from dcmif_ros.benchmark import cpu_name
from dcmif_ros.inference.engine import PSEUDO_IR_OUTPUT, load_manifest
from dcmif_ros.inference.graph_optimization import (RUNS_IN_A_ROW, cpu_level, cpu_session_options, graph_without,
                                                    interleaved_median_ms, timing_feed)

THREADS = 2


def session(model, manifest: dict):
    """A CPU session at the level the engine would open ``manifest``'s graph at, on ``THREADS`` threads."""
    import onnxruntime as ort

    options = cpu_session_options(cpu_level(manifest))
    options.intra_op_num_threads = THREADS
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graphs", nargs="+", type=Path, help="exported ONNX graphs, each with its manifest beside it")
    parser.add_argument("--rounds", type=int, default=12,
                        help=f"timed rounds, each of {RUNS_IN_A_ROW} runs per graph (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args()
    sessions, labels = [], []
    for graph in args.graphs:
        manifest = load_manifest(graph)
        sessions.append(session(str(graph), manifest))
        labels.append(f"{graph} whole")
        cut = graph_without(graph, PSEUDO_IR_OUTPUT)
        if cut is not None:
            sessions.append(session(cut, manifest))
            labels.append(f"{graph} without pseudo-IR")
    feed = timing_feed(sessions[0], int(load_manifest(args.graphs[0])["pad_multiple"]))
    medians = interleaved_median_ms(sessions, feed, args.rounds)
    height, width = next(value for value in feed.values() if value.ndim == 4).shape[-2:]
    results = {"benchmark": __doc__.splitlines()[0], "size": f"{width}x{height}", "rounds": args.rounds,
               "runs_in_a_row": RUNS_IN_A_ROW, "threads": THREADS, "cpu": cpu_name(),
               "median_ms": {label: round(value, 1) for label, value in zip(labels, medians)}}
    for label, value in results["median_ms"].items():
        print(f"{label}: {value} ms")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
