"""``dcmif bench``'s timing: every figure measured, the two graphs timed in blocks, not run by run."""
from __future__ import annotations

import onnxruntime as ort

from dcmif_ros import benchmark
from dcmif_ros.inference.engine import FusionEngine
from dcmif_ros.inference.graph_optimization import (RUNS_IN_A_ROW, WARM_UP_ROUNDS, interleaved_median_ms,
                                                    timed_in_blocks, timing_feed)


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


def test_blocks_drop_each_ones_first_run_and_the_warm_up_rounds():
    """Call k of every block returns k: kept are 2..RUNS_IN_A_ROW from every timed round, never a block's first
    call (the one that pays for a switch) nor any call of the warm-up rounds."""
    calls = {"whole": 0, "cut": 0}

    def measure(name):
        def call():
            calls[name] += 1
            warm_up = calls[name] <= WARM_UP_ROUNDS * RUNS_IN_A_ROW
            return (calls[name] - 1) % RUNS_IN_A_ROW + 1 + (100 if warm_up else 0)
        return call

    rounds = 3
    whole, cut = timed_in_blocks([measure("whole"), measure("cut")], rounds)
    expected = list(range(2, RUNS_IN_A_ROW + 1)) * rounds
    assert whole == expected and cut == expected
    assert calls == dict.fromkeys(("whole", "cut"), RUNS_IN_A_ROW * (WARM_UP_ROUNDS + rounds))


def test_interleaved_median_times_real_sessions(random_tiny_onnx):
    session = ort.InferenceSession(str(random_tiny_onnx), providers=["CPUExecutionProvider"])
    medians = interleaved_median_ms([session, session], timing_feed(session, 16), 1)
    assert len(medians) == 2 and all(0 < value < 60_000 for value in medians)
