"""Through ROS, as a user starts it: dcmif_node bare (no parameters file), a 640x480 camera at 15 Hz, per camera QoS.

The deployed graph: a camera (640x480 bgr8 at 15 Hz, reliable as usb_cam publishes or best effort as RealSense
does, in this process) → ``dcmif_node`` (the console script, its own process, started with no parameters file:
its own defaults, i.e. processing resolution auto, precision auto, the embedded prior refreshing every 30 frames)
→ reliable subscribers (this process): the fused image alone, as a detector subscribes (``detector``), or with the
pseudo-thermal image too, as a viewer does (``viewer``; the node skips the pseudo-IR's share of the graph when
nobody reads it); every process loads config/fastdds_shm.xml. Latency is
fused image received − its header stamp (the camera's publish time), one clock; every fused header must be a
published frame's, verbatim. Per configuration and camera QoS it records the sustained rate, median and p95
latency (and per half: a growing backlog would show as a rise), the node's counters and its /diagnostics
values, and whether the goals hold (≥ 15 frames/s, p50 < 100 ms, p95 < 200 ms, headers intact).

Configurations: ``bare`` (no parameters at all), ``int8`` (only ``precision: int8``), ``native`` (only the
network at the camera's 640x480, how the node ran before ``auto``).

    .venv/bin/python benchmarks/node_latency.py                       # bare and int8, both QoS, both subscribers
    .venv/bin/python benchmarks/node_latency.py --configs bare --duration 10 --out /tmp/latency.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import onnxruntime

from dcmif_ros.benchmark import cpu_name
from dcmif_ros.inference.engine import load_manifest
from dcmif_ros.inference.pipeline import default_model_path
from dcmif_ros.ros.live_run import LiveRunConfig, run_live

GOALS = {"fps_min": 15.0, "p50_ms_max": 100.0, "p95_ms_max": 200.0}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "node_latency_cpu.json"
CONFIGS = {"bare": {}, "int8": {"precision": "int8"},
           "native": {"processing_width": 640, "processing_height": 480}}
CAMERA_QOS = ("reliable", "best_effort")
SUBSCRIBERS = {"detector": False, "viewer": True}  # name: whether the pseudo-thermal image is subscribed too


def machine_speed(model: Path) -> dict:
    """How fast this CPU is right now (load included): the fp32 network alone at the node's 320x240, so runs on
    other machines or under other load can be compared."""
    from dcmif_ros.benchmark import BenchmarkSettings, run_benchmark

    [row] = run_benchmark(BenchmarkSettings(model_path=model, sizes=[(320, 240)], provider="cpu", precision="fp32",
                                            runs=15, compare_torch=False))
    return {"network_320x240_ms": row["stages"]["infer"], "load_average": [round(v, 2) for v in os.getloadavg()]}


def goals_met(run: dict) -> dict:
    latency = run["latency_ms"] or {}
    checks = {"fps": run["rate_hz"] >= GOALS["fps_min"],
              "p50": latency.get("median_ms", float("inf")) < GOALS["p50_ms_max"],
              "p95": latency.get("p95_ms", float("inf")) < GOALS["p95_ms_max"],
              "headers_intact": run["headers_intact"]}
    return checks | {"all": all(checks.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="bare,int8",
                        help=f"comma-separated, of {', '.join(CONFIGS)} (default: %(default)s)")
    parser.add_argument("--camera-qos", default=",".join(CAMERA_QOS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--subscribers", default=",".join(SUBSCRIBERS),
                        help="comma-separated, of detector (fused only), viewer (fused and pseudo-thermal) "
                             "(default: %(default)s)")
    parser.add_argument("--rate", type=float, default=15.0, help="camera frames per second (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default: %(default)s)")
    parser.add_argument("--logs", type=Path, default=Path("out/node_latency"),
                        help="folder for the node's logs, per run (default: %(default)s)")
    parser.add_argument("--note", default="", help="conditions worth recording (e.g. other jobs on the machine)")
    args = parser.parse_args()

    model = default_model_path()
    manifest = load_manifest(model)
    calibration = machine_speed(model)
    print(f"this CPU runs the fp32 network at 320x240 in {calibration['network_320x240_ms']['median']:.0f} ms "
          "(median, alone)", flush=True)
    runs = []
    for config in args.configs.split(","):
        for reliability in args.camera_qos.split(","):  # subscribers innermost: their runs alternate
            for subscribers in args.subscribers.split(","):
                load_before = os.getloadavg()
                result = run_live(LiveRunConfig(out_dir=args.logs / f"{config}_{subscribers}_{reliability}",
                                                node_parameters=CONFIGS[config], rate_hz=args.rate,
                                                duration_s=args.duration, camera_reliability=reliability,
                                                pseudo_thermal=SUBSCRIBERS[subscribers]))
                run = {"config": config, "node_parameters": CONFIGS[config], "subscribers": subscribers,
                       "camera_reliability": reliability, "load_average_before": [round(v, 2) for v in load_before],
                       "load_average_after": [round(v, 2) for v in os.getloadavg()], **result.summary()}
                run["goals_met"] = goals_met(run)
                runs.append(run)
                print(describe(run), flush=True)

    report = {
        "benchmark": __doc__.split("\n\n")[0],
        "command": "python benchmarks/node_latency.py",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "onnxruntime": onnxruntime.__version__},
        "note": args.note,
        "machine_speed": calibration,
        "model": {"path": str(model), "name": manifest["model"], "trained": manifest["trained"]},
        "camera": {"size": [640, 480], "rate_hz": args.rate, "duration_s": args.duration},
        "goals": GOALS,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def describe(run: dict) -> str:
    latency, node, diagnostics = run["latency_ms"] or {}, run["node"] or {}, run["node_diagnostics"]
    return (f"{run['config']} / {run['subscribers']} / {run['camera_reliability']} camera: {run['rate_hz']:.1f} frames/s, latency median "
            f"{latency.get('median_ms', float('nan')):.0f} ms, p95 {latency.get('p95_ms', float('nan')):.0f} ms "
            f"(halves {latency.get('first_half_median_ms', float('nan')):.0f} / "
            f"{latency.get('second_half_median_ms', float('nan')):.0f} ms), headers intact {run['headers_intact']}; "
            f"node: {node.get('frames_processed')} of {node.get('frames_received')} fused, "
            f"{diagnostics.get('precision')} at {diagnostics.get('network resolution')}, inference median "
            f"{diagnostics.get('inference median (ms)')} ms; goals met: {run['goals_met']['all']}")


if __name__ == "__main__":
    raise SystemExit(main())
