"""Which onnxruntime graph optimisation level a graph runs at on the CPU, measured for each graph at export.

The highest level (``ORT_ENABLE_ALL``) adds the NCHWc layout transform. It made the earlier graphs, whose work is
one- and few-channel full-resolution convolutions wrapped in layout reorders, slower on 2 cores (640×480:
DCMIF tiny 217 → 184 ms, DCMIF dual 302 → 244 ms, LRCFuse 731 → 637 ms without it), and the semantic DCMIF graph,
whose MobileNetV2 branch and blocked synthesis are many-channel convolutions, faster (320×240: 89.6 → 46.8 ms
with it). So the export times both levels, interleaved, and records in the manifest
(``cpu_graph_optimization``) the highest unless it is not at least ``ALL_MIN_SPEEDUP`` faster (so timing noise
does not flip a manifest); a manifest without that entry keeps the level every graph had before it existed.
GPU providers always run at the highest level.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

LEVELS = ("extended", "all")
DEFAULT_CPU_LEVEL = "extended"  # what manifests written before the measurement existed ran at
TIMING_SIZE = (240, 320)  # (height, width): the node's CPU processing resolution, rounded up to the pad multiple
TIMING_ROUNDS = 6  # of RUNS_IN_A_ROW runs per level
WARM_UP_ROUNDS = 1
RUNS_IN_A_ROW = 5
"""Sessions timed against each other run in alternating blocks of this many runs, the first of each untimed: it
pays for the switch from the other sessions (their threads still spinning, caches holding their buffers; +7 to
+14 ms on a 320×240 DCMIF frame here), which a process running one session frame after frame never pays, while
alternating blocks keep the machine's drift out of the comparison."""
ALL_MIN_SPEEDUP = 1.05
ORT_LOG_ERRORS_ONLY = 3  # onnxruntime's log severity "error": its optimisers warn about ops they leave alone
MANIFEST_KEY = "cpu_graph_optimization"
T = TypeVar("T")


def ort_level(name: str):
    import onnxruntime as ort

    return {"extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[name]


def graph_optimization_level(first_provider: str, manifest: dict | None = None):
    """The level a session for ``first_provider`` opens ``manifest``'s graph at: the measured one on the CPU."""
    if first_provider != "CPUExecutionProvider":
        return ort_level("all")
    return ort_level(cpu_level(manifest))


def cpu_session_options(level: str):
    """Options for a CPU session at optimisation level ``level`` (a name in ``LEVELS``), logging errors only: what
    every timing of a graph against another opens, at the level the engine would."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort_level(level)
    options.log_severity_level = ORT_LOG_ERRORS_ONLY
    return options


def cpu_level(manifest: dict | None) -> str:
    """The level name CPU sessions open ``manifest``'s graph at: the measured one, else ``DEFAULT_CPU_LEVEL``."""
    return (((manifest or {}).get(MANIFEST_KEY) or {}).get("level", DEFAULT_CPU_LEVEL))


def timing_feed(session, multiple: int) -> dict[str, np.ndarray]:
    """Inputs for timing: images (N, 1, H, W) at ``TIMING_SIZE`` rounded up to ``multiple``, FiLM vectors at the
    identity (γ 1, β 0)."""
    height, width = (-(-side // multiple) * multiple for side in TIMING_SIZE)
    rng = np.random.default_rng(0)
    feed = {}
    for graph_input in session.get_inputs():
        if len(graph_input.shape) == 4:
            feed[graph_input.name] = rng.random((1, 1, height, width), dtype=np.float32)
        else:
            fill = np.ones if graph_input.name == "gamma" else np.zeros
            feed[graph_input.name] = fill((1, graph_input.shape[1]), np.float32)
    return feed


def timed_in_blocks(measures: list[Callable[[], T]], rounds: int) -> list[list[T]]:
    """What each measure returned (its timing), kept from ``rounds`` rounds after ``WARM_UP_ROUNDS`` untimed ones,
    each round calling every measure ``RUNS_IN_A_ROW`` times in a row and dropping the first call of each block."""
    samples: list[list[T]] = [[] for _ in measures]
    for round_index in range(WARM_UP_ROUNDS + rounds):
        for measure, kept in zip(measures, samples):
            for repeat in range(RUNS_IN_A_ROW):
                timing = measure()
                if round_index >= WARM_UP_ROUNDS and repeat:
                    kept.append(timing)
    return samples


def run_ms(session, feed: dict[str, np.ndarray]) -> Callable[[], float]:
    """A measure for ``timed_in_blocks``: one run of ``session`` on ``feed``, in milliseconds."""
    def measure() -> float:
        start = time.perf_counter()
        session.run(None, feed)
        return (time.perf_counter() - start) * 1e3
    return measure


def interleaved_median_ms(sessions: list, feed: dict[str, np.ndarray], rounds: int) -> list[float]:
    """Median milliseconds per run of each session on ``feed``, timed in alternating blocks (``timed_in_blocks``)."""
    return [float(np.median(samples)) for samples in timed_in_blocks([run_ms(s, feed) for s in sessions], rounds)]


def measure_cpu_levels(onnx_path, multiple: int) -> dict:
    """Median ms per run at each level on this machine's CPU and the level CPU sessions should use."""
    import onnxruntime as ort

    from dcmif_ros.benchmark import cpu_name

    sessions = [ort.InferenceSession(str(onnx_path), cpu_session_options(name), providers=["CPUExecutionProvider"])
                for name in LEVELS]
    feed = timing_feed(sessions[0], multiple)
    ms = dict(zip(LEVELS, (round(value, 2) for value in interleaved_median_ms(sessions, feed, TIMING_ROUNDS))))
    level = "all" if ms["extended"] >= ALL_MIN_SPEEDUP * ms["all"] else "extended"
    height, width = next(v for v in feed.values() if v.ndim == 4).shape[-2:]
    return {"level": level, "ms": ms, "size": f"{width}x{height}", "min_speedup_for_all": ALL_MIN_SPEEDUP,
            "cpu": cpu_name()}


def graph_without(graph_path, dropped: str) -> bytes | None:
    """The graph at ``graph_path`` without output ``dropped`` and the nodes only it needs, serialised (None if
    the graph has no such output). onnxruntime runs every node of a session's graph whatever outputs a run asks
    for, so a frame whose pseudo-IR nobody reads runs this cut instead (docs/node.md, "Outputs nobody reads")."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(str(graph_path))
    outputs = [output.name for output in model.graph.output]
    if dropped not in outputs:
        return None
    inputs = [graph_input.name for graph_input in model.graph.input]
    kept = Extractor(model).extract_model(inputs, [name for name in outputs if name != dropped])
    return kept.SerializeToString()
