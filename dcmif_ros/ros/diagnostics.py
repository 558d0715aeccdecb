"""The node's entry on /diagnostics, written with diagnostic_msgs directly.

diagnostic_updater is the usual tool, but it has no PyPI wheel and this package must run from the ROS 2
PyPI wheels as well as from a ROS install; all we need from it is one status per period, so this module
follows its conventions instead: a DiagnosticArray on the absolute topic /diagnostics, a status named
'<node name>: fusion', the hardware id naming what runs the model, and the figures as key/value strings
(rqt_runtime_monitor and diagnostic_aggregator read them as they read the updater's).
"""
from __future__ import annotations

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import LifecycleNode
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

from dcmif_ros.ros.health import Health, NodeReport

DIAGNOSTICS_TOPIC = "/diagnostics"
DIAGNOSTICS_DEPTH = 10
STATUS_TASK = "fusion"


def diagnostic_status(report: NodeReport, health: Health, node_name: str) -> DiagnosticStatus:
    counts, prior = report.counts, report.prior
    values = {
        "input rate (Hz)": _number(report.input_rate_hz),
        "output rate (Hz)": _number(report.output_rate_hz),
        "frames received": counts.received,
        "frames processed": counts.processed,
        "frames dropped": counts.dropped,
        "dropped: replaced by a newer frame": counts.stale,
        "dropped: rejected input": counts.rejected,
        "dropped: inference failed": counts.failed,
        "dropped: no subscriber": counts.idle,
        "frames lost in transport": counts.lost_in_transport,
        "inference last (ms)": _number(counts.inference_ms_last),
        "inference median (ms)": _number(counts.inference_ms_median),
        "inference p95 (ms)": _number(counts.inference_ms_p95),
        "node overhead median (ms)": _number(counts.overhead_ms_median),
        "node overhead p95 (ms)": _number(counts.overhead_ms_p95),
        "node latency median (ms)": _number(counts.node_latency_ms_median),
        "node latency p95 (ms)": _number(counts.node_latency_ms_p95),
        "model": report.engine.model_name,
        "execution provider": report.engine.provider,
        "precision": report.engine.precision,
        "network resolution": _size(report.engine.network_size),
        "processing size parameter": report.engine.processing,
        "inference workers": report.worker.workers,
        "onnxruntime threads": report.worker.session_threads or "onnxruntime's choice",
        "prior backend": prior.backend,
        "prior version": prior.version,
        "prior age (s)": _number(prior.age_s),
        "prior age (frames)": prior.age_frames,
        "prior refreshes": prior.refreshed,
        "last error": counts.last_error,
    }
    return DiagnosticStatus(
        level=bytes([health.level]), name=f"{node_name}: {STATUS_TASK}", message=health.message,
        hardware_id=f"onnxruntime {report.engine.provider}",
        values=[KeyValue(key=key, value=str(value)) for key, value in values.items()],
    )


class DiagnosticsPublisher:
    def __init__(self, node: LifecycleNode):
        self._node = node
        self._publisher = node.create_lifecycle_publisher(
            DiagnosticArray, DIAGNOSTICS_TOPIC,
            QoSProfile(depth=DIAGNOSTICS_DEPTH, reliability=ReliabilityPolicy.RELIABLE))

    def publish(self, report: NodeReport, health: Health, stamp: Time) -> None:
        status = diagnostic_status(report, health, self._node.get_name())
        self._publisher.publish(DiagnosticArray(header=Header(stamp=stamp), status=[status]))

    def destroy(self) -> None:
        self._node.destroy_lifecycle_publisher(self._publisher)


def _size(size: tuple[int, int] | None) -> str:
    return "n/a" if size is None else f"{size[0]}x{size[1]}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
