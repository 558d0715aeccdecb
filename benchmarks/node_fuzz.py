"""The 1000-message soak of dcmif_node: the cross-process fuzz of test/test_node_fuzz.py, longer, with a report.

Malformed images (random and megabyte-long encodings, empty, short, 10000x10000 claims, ...) interleaved with
valid frames and frames over the shared-memory segment, then a starve phase (see dcmif_ros.ros.fuzz_run).
Records crashes, valid frames fused, what status counted, RSS at start, end and peak, and log lines per
minute; docs/node.md quotes the numbers.

    .venv/bin/python benchmarks/node_fuzz.py                       # 1000 messages, models/dcmif_tiny.onnx
    .venv/bin/python benchmarks/node_fuzz.py --messages 5000 --out /tmp/soak.json
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from dcmif_ros.inference.pipeline import default_model_path
from dcmif_ros.ros.fuzz_run import FuzzConfig, run_fuzz

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "node_fuzz_soak.json"
SOAK_DOMAIN_ID = "93"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model_path(), help="ONNX model (default: %(default)s)")
    parser.add_argument("--messages", type=int, default=1000, help="messages sent (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sequence (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report (default: %(default)s)")
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", SOAK_DOMAIN_ID)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with tempfile.TemporaryDirectory(prefix="dcmif_soak_") as scratch:
        result = run_fuzz(FuzzConfig(args.model, Path(scratch), messages=args.messages, seed=args.seed))
        log_tail = Path(scratch, "dcmif_node.log").read_text(errors="replace").splitlines()
    report = {"model": str(args.model), "messages": args.messages, "seed": args.seed,
              "crashes": 0 if result.node_alive and result.node_exit_status == 0 else 1,
              **result.summary(), "node_log": [line[:300] for line in log_tail]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({key: value for key, value in report.items() if key not in ("sent", "node_log")}, indent=2))
    return 0 if report["crashes"] == 0 and result.valid_fused == result.valid_sent else 1


if __name__ == "__main__":
    raise SystemExit(main())
