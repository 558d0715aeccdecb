"""Engine benchmark: the numbers behind ``dcmif bench`` (and the committed results in benchmarks/)."""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcmif_ros.inference.graph_optimization import RUNS_IN_A_ROW, timed_in_blocks

WARMUP_RUNS = 3


@dataclass(frozen=True)
class BenchmarkSettings:
    model_path: Path
    sizes: list[tuple[int, int]]
    provider: str = "auto"
    precision: str = "auto"
    runs: int = 30
    threads: int | None = None
    processing_size: tuple[int, int] | None = None
    compare_torch: bool = True
    prior: str = "none"


def cpu_name() -> str:
    """The CPU's model name (Linux), else what platform reports: timings are only comparable on the same one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def summarize(samples_ms: list[float]) -> dict[str, float]:
    values = np.asarray(samples_ms)
    return {"median": round(float(np.median(values)), 3), "p95": round(float(np.percentile(values, 95)), 3),
            "mean": round(float(values.mean()), 3)}


def sample_frame(width: int, height: int) -> np.ndarray:
    """A real photograph (scikit-image sample data) resized to the benchmark size."""
    import cv2
    from skimage import data

    return cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (width, height), interpolation=cv2.INTER_AREA)


def time_torch(model_path: Path, frame: np.ndarray, runs: int) -> list[float]:
    """PyTorch eager on the checkpoint the ONNX was exported from, same pre/post-processing path."""
    import torch

    from dcmif_ros.inference.checkpoint import load_bundle
    from dcmif_ros.inference.engine import pad_to_multiple
    from dcmif_ros.image_codec import to_uint8
    import cv2

    import json
    manifest = json.loads(model_path.with_suffix(".json").read_text())
    weights = model_path.with_name(manifest["weights_file"]) if manifest.get("weights_file") else None
    if weights is None or not weights.is_file():
        return []
    net = load_bundle(weights).net
    samples = []
    with torch.inference_mode():
        for i in range(runs + WARMUP_RUNS):
            t0 = time.perf_counter()
            ycrcb = cv2.cvtColor(frame, cv2.COLOR_BGR2YCrCb)
            y = pad_to_multiple(ycrcb[:, :, 0].astype(np.float32) / 255.0, net.config.pad_multiple,
                                net.config.min_side)
            fused, pseudo, gate = net(torch.from_numpy(y)[None, None], *net.identity_film())
            ycrcb[:, :, 0] = to_uint8(fused[0, 0, : frame.shape[0], : frame.shape[1]].numpy())
            cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)
            if i >= WARMUP_RUNS:
                samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def run_benchmark(settings: BenchmarkSettings) -> list[dict]:
    from dcmif_ros.inference.pipeline import FusionPipeline, PipelineConfig

    pipeline = FusionPipeline(PipelineConfig(model_path=settings.model_path, provider=settings.provider,
                                             precision=settings.precision, processing_size=settings.processing_size,
                                             prior=settings.prior, threads=settings.threads))
    results = []
    try:
        for width, height in settings.sizes:
            frame = sample_frame(width, height)

            def fused_only_ms() -> float:
                """A frame whose pseudo-IR nobody reads (a detector's): the graph without it, the prior alike."""
                prior = pipeline.refresher.current
                return pipeline.engine.run(frame, prior.gamma, prior.beta, want_pseudo_ir=False).timings_ms["total"]

            # a viewer's frames (every output, their stages) and a detector's in alternating blocks: interleaved
            # against the machine's drift, without a switch between their sessions on every frame
            rounds = -(-settings.runs // (RUNS_IN_A_ROW - 1))
            whole, fused_only = timed_in_blocks([lambda: pipeline.process(frame).timings_ms, fused_only_ms], rounds)
            totals = [timings["total"] for timings in whole]
            stages = {name: [timings[name] for timings in whole] for name in whole[0] if name != "total"}
            latency = summarize(totals)
            row = {
                "model": pipeline.engine.manifest["model"],
                "size": f"{width}x{height}",
                "processing_size": "x".join(map(str, settings.processing_size)) if settings.processing_size else "native",
                "provider": pipeline.engine.provider,
                "precision": pipeline.engine.precision,
                "prior": settings.prior,
                "fps": round(1000.0 / latency["median"], 2),
                "latency_ms": latency,
                "stages": {k: summarize(v) for k, v in stages.items()},
                "fused_only_latency_ms": summarize(fused_only),
                "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
            }
            if settings.compare_torch and settings.processing_size is None:
                torch_samples = time_torch(settings.model_path, frame, max(settings.runs // 3, 3))
                if torch_samples:
                    row["torch_latency_ms"] = summarize(torch_samples)
                    row["speedup_vs_torch"] = round(row["torch_latency_ms"]["median"] / latency["median"], 2)
            results.append(row)
    finally:
        pipeline.close()
    return results
