"""Run the live graph once and measure it: sample camera → dcmif_node (its own process) → this process.

``dcmif demo`` and ``benchmarks/node_latency.py`` both call :func:`run_live`. This process hosts the sample
camera and the subscribers, so every image crosses a process boundary twice, as with a real camera driver
and a real detector. End-to-end latency is publish → fused image received, both read on the ROS clock
(the fused image carries the camera's stamp), so nothing depends on the node's own account of itself.
"""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from dcmif_msgs.msg import FusionStatus
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from dcmif_ros.image_codec import decode_image_fields
from dcmif_ros.node import FUSED_TOPIC, INPUT_TOPIC, NODE_NAME, PSEUDO_THERMAL_TOPIC, STATUS_TOPIC
from dcmif_ros.ros.diagnostics import DIAGNOSTICS_TOPIC, STATUS_TASK
from dcmif_ros.ros.fastdds import fastdds_environment
from dcmif_ros.ros.node_process import NodeDiedError, NodeProcess
from dcmif_ros.sample_camera import DEFAULT_FRAME_ID, DEFAULT_RATE_HZ, DEFAULT_SIZE, SampleCamera, SampleFrames

VIEWER_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
"""What a downstream detector would use (yolo_ros's default image_reliability is reliable)."""
SPIN_STEP_S = 0.02
DRAIN_TIMEOUT_S = 5.0  # after the camera stops, wait this long at most for frames still in the node
DRAIN_QUIET_S = 1.0  # ... and stop waiting once nothing arrived for this long
STATUS_SUMMARY_FIELDS = ("frames_received", "frames_processed", "frames_dropped", "execution_provider",
                         "inference_latency_ms", "inference_latency_p95_ms", "prior_backend", "prior_version",
                         "level", "last_error")
RECENT_FRAMES = 24  # inputs and outputs kept for pairing into contact-sheet rows


@dataclass(frozen=True)
class LiveRunConfig:
    out_dir: Path
    node_parameters: dict  # empty: the node starts bare (no parameters file), as a user would start it
    namespace: str = "dcmif_demo"
    rate_hz: float = DEFAULT_RATE_HZ
    duration_s: float = 10.0
    frame_size: tuple[int, int] = DEFAULT_SIZE
    camera_reliability: str = "best_effort"
    sample_rows: int = 0  # (input, pseudo-thermal, fused) triples to keep, spread over the run
    # also subscribe to the pseudo-thermal image, as a viewer does; False: the fused image only, as a detector
    # does (the node then skips the pseudo-IR's share of the graph)
    pseudo_thermal: bool = True
    photos: tuple[Path, ...] = ()  # image files the sample camera replays (none: its bundled photos)
    startup_timeout_s: float = 180.0

    def __post_init__(self):
        if self.sample_rows and not self.pseudo_thermal:
            raise ValueError("contact-sheet rows need the pseudo-thermal image: sample_rows needs pseudo_thermal")


@dataclass(frozen=True)
class LatencySummary:
    count: int
    median_ms: float
    p95_ms: float
    max_ms: float
    first_half_median_ms: float  # with second_half_median_ms: a growing backlog would show as a rise
    second_half_median_ms: float

    @classmethod
    def of(cls, latencies_ms: list[float]) -> LatencySummary:
        values = np.asarray(latencies_ms, dtype=float)
        half = len(values) // 2
        return cls(len(values), *(float(np.percentile(values, q)) for q in (50, 95, 100)),
                   float(np.median(values[:half])) if half else float("nan"),
                   float(np.median(values[half:])) if half else float("nan"))


@dataclass(frozen=True)
class Sample:
    input: np.ndarray
    pseudo_thermal: np.ndarray
    fused: np.ndarray


@dataclass
class LiveRunResult:
    published: int
    fused_received: int
    pseudo_thermal_received: int
    rate_hz: float  # fused frames received per second, first to last
    latency: LatencySummary | None
    headers_altered: int  # fused images whose header is not a published frame's (stamp and frame_id) verbatim
    last_status: FusionStatus | None
    node_diagnostics: dict  # the node's last /diagnostics entry: level, message and its values
    samples: list[Sample] = field(default_factory=list)
    node_exit_status: int | None = None

    def summary(self) -> dict:
        """The figures as JSON-ready values (the node's own account from its last status message)."""
        status = self.last_status
        return {
            "published": self.published,
            "fused_received": self.fused_received,
            "pseudo_thermal_received": self.pseudo_thermal_received,
            "rate_hz": _rounded(self.rate_hz),
            "headers_intact": self.fused_received > 0 and self.headers_altered == 0,
            "latency_ms": None if self.latency is None else {
                key: _rounded(value) for key, value in asdict(self.latency).items()},
            "node": None if status is None else {
                name: _rounded(getattr(status, name)) for name in STATUS_SUMMARY_FIELDS},
            "node_diagnostics": self.node_diagnostics,
        }


def run_live(config: LiveRunConfig) -> LiveRunResult:
    """Start the node, stream for ``duration_s`` once it is ready, stop everything; NodeDiedError if it dies."""
    os.environ.update(fastdds_environment(os.environ))  # before this process's first participant
    config.out_dir.mkdir(parents=True, exist_ok=True)
    frames = SampleFrames(config.frame_size, config.rate_hz, config.photos)  # a bad photo fails before the node starts
    node_process = NodeProcess(config.out_dir, config.node_parameters, config.namespace)
    context = Context()
    rclpy.init(context=context)
    try:
        node_process.start()
        viewer = _Viewer(context, config, frames)
        try:
            result = viewer.run(node_process)
        finally:
            viewer.destroy()
        result.node_exit_status = node_process.stop()
        return result
    finally:
        node_process.stop()
        context.try_shutdown()


class _Viewer:
    """The camera and the subscribers, in one node of this process."""

    def __init__(self, context: Context, config: LiveRunConfig, frames: SampleFrames):
        self._config = config
        self._node = Node("dcmif_live_viewer", namespace=config.namespace, context=context)
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self._node)
        self._clock = self._node.get_clock()
        self._camera = SampleCamera(self._node, frames,
                                    config.camera_reliability, INPUT_TOPIC, on_frame=self._on_camera_frame)
        self._latencies_ms: list[float] = []
        self._fused_times: list[float] = []
        self._pseudo_thermal_received = 0
        self._published_stamps: set[int] = set()
        self._headers_altered = 0
        self._last_status: FusionStatus | None = None
        self._node_diagnostics: dict = {}
        self._recent: dict[str, OrderedDict[int, np.ndarray]] = {
            kind: OrderedDict() for kind in ("input", "pseudo_thermal", "fused")}
        self._samples: list[Sample] = []
        self._next_sample_s = 0.0
        self._started_s = 0.0
        self._fused_subscription = self._node.create_subscription(Image, FUSED_TOPIC, self._on_fused, VIEWER_QOS)
        if config.pseudo_thermal:
            self._node.create_subscription(Image, PSEUDO_THERMAL_TOPIC, self._on_pseudo_thermal, VIEWER_QOS)
        self._node.create_subscription(FusionStatus, STATUS_TOPIC, self._on_status, VIEWER_QOS)
        self._node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics, VIEWER_QOS)

    def run(self, node_process: NodeProcess) -> LiveRunResult:
        config = self._config
        if not self._spin_until(self._node_ready, config.startup_timeout_s, node_process):
            raise NodeDiedError(f"dcmif_node was not ready within {config.startup_timeout_s:g} s; "
                                f"the end of {node_process.log_path}:\n{node_process.log_tail()}")
        self._started_s = time.monotonic()
        self._camera.start()
        self._spin_until(lambda: False, config.duration_s, node_process)
        self._camera.stop()
        self._spin_until(lambda: self._quiet_for(DRAIN_QUIET_S), DRAIN_TIMEOUT_S, node_process)
        return LiveRunResult(
            published=self._camera.published, fused_received=len(self._latencies_ms),
            pseudo_thermal_received=self._pseudo_thermal_received, rate_hz=self._fused_rate(),
            latency=LatencySummary.of(self._latencies_ms) if self._latencies_ms else None,
            headers_altered=self._headers_altered, last_status=self._last_status, node_diagnostics=self._node_diagnostics, samples=self._samples,
        )

    def destroy(self) -> None:
        self._executor.shutdown()
        self._node.destroy_node()

    def _node_ready(self) -> bool:
        """The node has subscribed to the camera (it does on activation) and we see its outputs."""
        return (self._camera.publisher.get_subscription_count() > 0
                and self._fused_subscription.get_publisher_count() > 0)

    def _spin_until(self, done, timeout_s: float, node_process: NodeProcess) -> bool:
        """Spin until ``done()`` or the timeout, whichever first; NodeDiedError as soon as the node exits."""
        deadline = time.monotonic() + timeout_s
        while not done():
            node_process.check_alive()
            if time.monotonic() >= deadline:
                return False
            self._executor.spin_once(timeout_sec=SPIN_STEP_S)
        return True

    def _quiet_for(self, seconds: float) -> bool:
        last = self._fused_times[-1] if self._fused_times else self._started_s
        return time.monotonic() - last >= seconds

    def _fused_rate(self) -> float:
        if len(self._fused_times) < 2:
            return 0.0
        return (len(self._fused_times) - 1) / (self._fused_times[-1] - self._fused_times[0])

    def _on_camera_frame(self, index: int, stamp: Time, frame: np.ndarray) -> None:
        self._published_stamps.add(_nanoseconds(stamp))
        if self._config.sample_rows:
            self._remember("input", stamp, frame)

    def _on_fused(self, message: Image) -> None:
        received_ns = self._clock.now().nanoseconds
        self._fused_times.append(time.monotonic())
        self._latencies_ms.append((received_ns - _nanoseconds(message.header.stamp)) * 1e-6)
        if message.header.frame_id != DEFAULT_FRAME_ID or _nanoseconds(message.header.stamp) not in self._published_stamps:
            self._headers_altered += 1
        if self._config.sample_rows:
            self._remember("fused", message.header.stamp, decode_image_fields(message))

    def _on_pseudo_thermal(self, message: Image) -> None:
        self._pseudo_thermal_received += 1
        if self._config.sample_rows:
            self._remember("pseudo_thermal", message.header.stamp, decode_image_fields(message))

    def _on_status(self, message: FusionStatus) -> None:
        self._last_status = message

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name == f"{NODE_NAME}: {STATUS_TASK}":
                self._node_diagnostics = {"level": status.level[0], "message": status.message,
                                          **{kv.key: kv.value for kv in status.values}}

    def _remember(self, kind: str, stamp: Time, image: np.ndarray) -> None:
        """Keep recent images by stamp; once all three of a stamp are here and a row is due, take them."""
        key = _nanoseconds(stamp)
        recent = self._recent[kind]
        recent[key] = image
        if len(recent) > RECENT_FRAMES:
            recent.popitem(last=False)
        rows_due = len(self._samples) < self._config.sample_rows
        if rows_due and time.monotonic() - self._started_s >= self._next_sample_s \
                and all(key in images for images in self._recent.values()):
            self._samples.append(Sample(*(self._recent[k][key] for k in ("input", "pseudo_thermal", "fused"))))
            self._next_sample_s += self._config.duration_s / self._config.sample_rows


def _rounded(value):
    return round(value, 2) if isinstance(value, float) else value


def _nanoseconds(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec
