"""One health report per period, shared by the status topic and /diagnostics, and the rule for its level.

OK is the quiet state: frames dropped because a newer one arrived are the design working, not a fault.
WARN means running degraded (CPU fallback, bad input frames, frames lost in transport, the prior not
refreshing); ERROR means no output: inference fails on every frame, the fusion worker died or is stuck, or
frames arrive and none was fused for ``NO_OUTPUT_ERROR_S``; STALE means no image arrived for a while.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from dcmif_msgs.msg import FusionStatus

from dcmif_ros.inference.pipeline import FusionPipeline
from dcmif_ros.ros.fastdds import transport_loss_hint
from dcmif_ros.inference.processing_resolution import describe as describe_processing
from dcmif_ros.ros.frame_stats import FrameCounts

INPUT_STALE_AFTER_S = 3.0
"""No image for this long (or none yet) makes the level STALE."""

NO_OUTPUT_ERROR_S = 5.0
"""Frames arriving and none fused for this long, or one frame in the worker this long, makes the level ERROR."""


@dataclass(frozen=True)
class EngineState:
    model_name: str
    provider: str  # onnxruntime's name of the provider in use, e.g. CPUExecutionProvider
    precision: str  # fp32, fp16 or int8: which exported graph runs
    fallback_warning: str  # empty unless a GPU provider (or int8) was asked for and the session runs on CPU
    processing: str = "native"  # how the network resolution was asked for: auto, native or WxH
    network_size: tuple[int, int] | None = None  # (width, height) the last frame ran at; None before the first

    @classmethod
    def of(cls, pipeline: FusionPipeline) -> EngineState:
        """With provider 'auto' the CPU is a documented outcome, not a fallback to warn about, unless int8 was
        asked for and a GPU had to give way to the CPU."""
        engine = pipeline.engine
        reported = pipeline.config.provider != "auto" or pipeline.config.precision == "int8"
        return cls(engine.model_path.stem, engine.providers[0], engine.precision,
                   (engine.fallback_warning or "") if reported else "",
                   describe_processing(engine.processing_size), engine.network_size)


@dataclass(frozen=True)
class PriorState:
    backend: str  # the ``prior`` parameter: embedded, none or vlm:PATH
    version: int  # 0 = the built-in identity prior
    age_s: float
    age_frames: int  # frames processed since it was installed
    refreshed: int
    last_error: str
    in_flight_s: float | None
    timeout_s: float

    @classmethod
    def of(cls, pipeline: FusionPipeline) -> PriorState:
        refresher = pipeline.refresher
        current, stats = refresher.current, refresher.stats
        return cls(
            backend=pipeline.prior_name, version=current.version, age_s=current.age_s(),
            # a prior computed from frame k is installed after frame k was processed
            age_frames=max(current.age_frames(refresher.frame_count) - 1, 0), refreshed=stats.refreshed,
            last_error=refresher.last_error or "", in_flight_s=stats.in_flight_s,
            timeout_s=pipeline.config.prior_timeout_s,
        )


@dataclass(frozen=True)
class WorkerState:
    """The fusion worker threads, seen from the report timer."""

    alive: bool  # every worker thread
    busy_s: float | None  # how long the longest-busy worker has been on its frame; None while all wait
    seconds_since_served: float  # since a worker last published a frame (or skipped one as unwanted), or started
    workers: int = 1
    session_threads: int | None = None  # intra-op threads of the session the workers share; None: onnxruntime's

    @classmethod
    def of(cls, alive: bool, counts: FrameCounts, started_s: float, now_s: float, workers: int = 1,
           session_threads: int | None = None) -> WorkerState:
        served_s = max(counts.last_served_s or started_s, started_s)
        return cls(alive, None if counts.busy_since_s is None else now_s - counts.busy_since_s, now_s - served_s,
                   workers, session_threads)


@dataclass(frozen=True)
class NodeReport:
    counts: FrameCounts
    input_rate_hz: float
    output_rate_hz: float
    new_rejected: int  # since the previous report
    new_failed: int
    new_processed: int
    new_lost: int
    seconds_since_input: float | None
    engine: EngineState
    prior: PriorState
    worker: WorkerState


@dataclass(frozen=True)
class Health:
    level: int  # FusionStatus.LEVEL_* (the numbers of diagnostic_msgs/DiagnosticStatus)
    message: str


class ReportBuilder:
    """Turns cumulative counts into a report with rates and per-period changes."""

    def __init__(self) -> None:
        self._previous: FrameCounts | None = None
        self._previous_s: float | None = None

    def build(self, counts: FrameCounts, engine: EngineState, prior: PriorState, worker: WorkerState,
              now_s: float) -> NodeReport:
        before = self._previous
        elapsed = now_s - self._previous_s if self._previous_s is not None else 0.0
        self._previous, self._previous_s = counts, now_s

        def change(field: str) -> int:
            return getattr(counts, field) - (getattr(before, field) if before else 0)

        def rate(field: str) -> float:
            return change(field) / elapsed if before and elapsed > 0 else 0.0

        return NodeReport(
            counts=counts, input_rate_hz=rate("received"), output_rate_hz=rate("processed"),
            new_rejected=change("rejected"), new_failed=change("failed"), new_processed=change("processed"),
            new_lost=change("lost_in_transport"),
            seconds_since_input=None if counts.last_received_s is None else now_s - counts.last_received_s,
            engine=engine, prior=prior, worker=worker,
        )


def assess(report: NodeReport) -> Health:
    counts, prior = report.counts, report.prior
    errors = _output_problems(report)
    warnings: list[str] = []
    if report.new_failed:
        (warnings if report.new_processed else errors).append(
            f"inference failed on {report.new_failed} frame(s): {counts.last_error}")
    if report.engine.fallback_warning:
        warnings.append(report.engine.fallback_warning)
    if report.new_rejected:
        warnings.append(f"{report.new_rejected} input frame(s) rejected: {counts.last_error}")
    if report.new_lost:
        warnings.append(f"{report.new_lost} frame(s) lost in transport ({transport_loss_hint(os.environ)})")
    if prior.last_error:
        warnings.append(prior.last_error)
    if prior.in_flight_s is not None and prior.in_flight_s > prior.timeout_s:
        warnings.append(f"a prior refresh has been running for {prior.in_flight_s:.0f} s "
                        f"(timeout {prior.timeout_s:g} s)")
    if errors:
        return Health(FusionStatus.LEVEL_ERROR, "; ".join(errors + warnings))
    if warnings:
        return Health(FusionStatus.LEVEL_WARN, "; ".join(warnings))
    if report.seconds_since_input is None:
        return Health(FusionStatus.LEVEL_STALE, "no input image received yet")
    if report.seconds_since_input > INPUT_STALE_AFTER_S:
        return Health(FusionStatus.LEVEL_STALE, f"no input image for {report.seconds_since_input:.0f} s")
    return Health(FusionStatus.LEVEL_OK, f"fusing at {report.output_rate_hz:.1f} Hz")


def _output_problems(report: NodeReport) -> list[str]:
    """Why no output comes although it should: the worker is dead or stuck, or fuses nothing it gets."""
    worker = report.worker
    if not worker.alive:
        return ["a fusion worker thread has stopped (it is restarted)"]
    if worker.busy_s is not None and worker.busy_s > NO_OUTPUT_ERROR_S:
        return [f"the fusion worker has been on one frame for {worker.busy_s:.0f} s"]
    receiving = report.seconds_since_input is not None and report.seconds_since_input <= INPUT_STALE_AFTER_S
    if receiving and worker.seconds_since_served > NO_OUTPUT_ERROR_S:
        last_error = report.counts.last_error
        return [f"no frame fused for {worker.seconds_since_served:.0f} s while frames arrive"
                + (f" (last error: {last_error})" if last_error else "")]
    return []
