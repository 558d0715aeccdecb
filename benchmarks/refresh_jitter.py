"""Frame-time jitter of the image path while the prior refreshes beside it, per way of running the refresh.

A 640x480 frame every 1/15 s goes through ``FusionPipeline.process`` (the node's worker, without ROS) with the
node's defaults (processing resolution auto, embedded prior, a refresh in a background thread every N frames).
Each frame's time is filed under "refresh running" when a refresh was in flight while it was processed, else
"quiet". Variants: the first pass in the image path's own session at normal priority (how the node ran before),
in a one-thread session of its own, that plus the refresh thread at a lower priority (niceness +10, the default),
and that thread in Linux's idle scheduling class instead (it runs only on CPU time the image path leaves).

    .venv/bin/python benchmarks/refresh_jitter.py --out benchmarks/results/refresh_jitter_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from dcmif_ros.benchmark import cpu_name, sample_frame
from dcmif_ros.inference.pipeline import PRIOR_SESSION_THREADS, FusionPipeline, PipelineConfig
from dcmif_ros.prior.refresher import PRIOR_NICENESS
from dcmif_ros.inference.processing_resolution import AUTO

CAMERA_RATE_HZ = 15.0
VARIANTS = {
    "shared session, normal priority": {"prior_threads": None, "prior_niceness": 0, "prior_idle": False},
    "own 1-thread session, normal priority": {"prior_threads": PRIOR_SESSION_THREADS, "prior_niceness": 0,
                                              "prior_idle": False},
    "own 1-thread session, lower priority (default)": {"prior_threads": PRIOR_SESSION_THREADS,
                                                       "prior_niceness": PRIOR_NICENESS, "prior_idle": False},
    "own 1-thread session, idle scheduling class": {"prior_threads": PRIOR_SESSION_THREADS, "prior_idle": True},
}


def summary(samples: list[float]) -> dict:
    if not samples:
        return {"frames": 0}
    values = np.asarray(samples)
    return {"frames": len(values), "median_ms": round(float(np.median(values)), 1),
            "p95_ms": round(float(np.percentile(values, 95)), 1), "max_ms": round(float(values.max()), 1),
            "over_frame_period": int((values > 1000.0 / CAMERA_RATE_HZ).sum())}


def measure(settings: dict, frames: list[np.ndarray], seconds: float, refresh_every: int) -> dict:
    config = PipelineConfig(provider="cpu", prior="embedded", processing_size=AUTO,
                            refresh_every_n_frames=refresh_every, **settings)
    quiet, refreshing = [], []
    with FusionPipeline(config) as pipeline:
        period, start = 1.0 / CAMERA_RATE_HZ, time.monotonic()
        index = 0
        while time.monotonic() - start < seconds:
            before = pipeline.refresher.stats.in_flight_s is not None
            began = time.perf_counter()
            pipeline.process(frames[index % len(frames)])
            took = (time.perf_counter() - began) * 1e3
            (refreshing if before or pipeline.refresher.stats.in_flight_s is not None else quiet).append(took)
            index += 1
            time.sleep(max(0.0, start + index * period - time.monotonic()))
        stats = pipeline.refresher.stats
    return {"settings": settings, "quiet": summary(quiet), "refresh_running": summary(refreshing),
            "refreshes": stats.refreshed, "refresh_skipped": stats.skipped,
            "refresh_ms_last": None if stats.last_latency_s is None else round(stats.last_latency_s * 1e3, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per variant (default: %(default)s)")
    parser.add_argument("--refresh-every", type=int, default=15, help="frames (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/refresh_jitter_cpu.json"))
    args = parser.parse_args()
    frames = [np.roll(sample_frame(640, 480), shift, axis=1) for shift in range(0, 64, 8)]
    runs = {}
    for name, settings in VARIANTS.items():
        load = os.getloadavg()
        runs[name] = measure(settings, frames, args.seconds, args.refresh_every) | {
            "load_average_before": [round(v, 2) for v in load]}
        print(name, json.dumps(runs[name]), flush=True)
    report = {"benchmark": __doc__.split("\n\n")[0], "command": "python benchmarks/refresh_jitter.py",
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count()},
              "camera": {"size": [640, 480], "rate_hz": CAMERA_RATE_HZ}, "seconds_per_variant": args.seconds,
              "refresh_every_n_frames": args.refresh_every, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
