"""``dcmif bench``'s timing: every figure measured, the two graphs timed in blocks, not run by run."""
from __future__ import annotations

import onnxruntime as ort
import pytest

from dcmif_ros import benchmark
from dcmif_ros.inference.engine import FusionEngine
from dcmif_ros.inference import graph_optimization
from dcmif_ros.inference.graph_optimization import RUNS_IN_A_ROW, interleaved_median_ms, timing_feed


def test_bench_times_the_whole_graph_and_the_cut_in_blocks(random_tiny_onnx, monkeypatch):
    order = []
    original = FusionEngine.run

    def recording(self, frame, gamma=None, beta=None, want_gate=False, want_pseudo_ir=True):
        order.append(want_pseudo_ir)
        return original(self, frame, gamma, beta, want_gate=want_gate, want_pseudo_ir=want_pseudo_ir)

    monkeypatch.setattr(FusionEngine, "run", recording)
    runs = 6
    [row] = benchmark.run_benchmark(benchmark.BenchmarkSettings(
        model_path=random_tiny_onnx, sizes=[(64, 48)], provider="cpu", runs=runs, compare_torch=False))
    assert row["size"] == "64x48" and row["fps"] > 0
    assert 0 < row["latency_ms"]["median"] and 0 < row["fused_only_latency_ms"]["median"]
    assert set(row["stages"]) == {"pre", "infer", "post"}
    timed = order[-(2 * RUNS_IN_A_ROW * -(-runs // (RUNS_IN_A_ROW - 1))):]
    switches = sum(1 for before, after in zip(timed, timed[1:]) if before != after)
    assert switches == 2 * -(-runs // (RUNS_IN_A_ROW - 1)) - 1  # one per block, not one per frame


def test_interleaved_timing_leaves_out_each_blocks_first_run(random_tiny_onnx, monkeypatch):
    session = ort.InferenceSession(str(random_tiny_onnx), providers=["CPUExecutionProvider"])
    clock = iter(range(10_000))
    monkeypatch.setattr(graph_optimization.time, "perf_counter", lambda: next(clock) / 1000.0)
    calls = []

    class Counting:
        def run(self, outputs, feed):
            calls.append(1)
            return session.run(outputs, feed)

    rounds = 3
    medians = interleaved_median_ms([Counting(), Counting()], timing_feed(session, 16), rounds)
    assert len(calls) == 2 * RUNS_IN_A_ROW * (graph_optimization.WARM_UP_RUNS + rounds)
    assert medians == [pytest.approx(1.0), pytest.approx(1.0)]  # each timed run: two clock ticks, one ms apart
