"""Fuzz dcmif_node across processes: malformed images interleaved with valid frames and transport losses.

What a hostile or broken camera can do, in one randomised (seeded) sequence sent to a node in its own process:
unknown and unsupported encodings, random and megabyte-long encoding strings, empty images, short data, a
step smaller than a row, odd YUV widths, images declaring 10000x10000 pixels, and frames larger than the
shared-memory segment (lost in transport). After each valid frame the fuzzer waits for its fused image, so
every valid frame is given time. Then it starves the node (bad frames only) until health must say ERROR, and
sends one valid frame to see it recover. It records what the node reported (status), its memory (RSS), its
log, and whether it lived. ``test/test_node_fuzz.py`` runs a few hundred messages; ``benchmarks/node_fuzz.py``
runs the soak.
"""
from __future__ import annotations

import os
import random
import string
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from dcmif_msgs.msg import FusionStatus
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from dcmif_ros.node import FUSED_TOPIC, INPUT_TOPIC, STATUS_TOPIC
from dcmif_ros.ros.fastdds import fastdds_environment
from dcmif_ros.ros.health import NO_OUTPUT_ERROR_S
from dcmif_ros.ros.node_process import NodeDiedError, NodeProcess

CAMERA_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
VIEWER_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
SPIN_STEP_S = 0.005
READY_TIMEOUT_S = 120.0
FUSED_TIMEOUT_S = 15.0
"""A valid frame not fused within this long counts as missed."""
SETTLE_TIMEOUT_S = 10.0
WARM_UP_WAIT_S = 0.5
VALID_SHARE = 0.2
LOSS_EVERY = 150
"""One frame too large for the shared-memory segment per this many messages."""
OVERSIZE = (4000, 3000)  # width, height: 36 MB in bgr8, over config/fastdds_shm.xml's 32 MiB segment
OVERSIZE_SETTLE_S = 0.5
HUGE_TEXT_CHARS = 1_000_000
HUGE_TEXT_EVERY = 100
BAD_FRAME_GAP_S = 0.003
STARVE_RATE_HZ = 20.0
FRAME_SIZE = (64, 48)
PROCESSING_SIZE = (160, 120)
"""An oversize frame that does arrive is fused at this size: the run measures robustness, not the model's memory
(at its native 4000x3000, onnxruntime's arena grows to about 5.5 GB and keeps it)."""
FIRST_STAMP_SEC = 1_700_000_000
MALFORMED_KINDS = ("random encoding", "unsupported encoding", "no pixels", "short data", "small step",
                   "odd yuv width", "over pixel limit")
HUGE_TEXT_KINDS = ("huge encoding", "huge frame_id")
"""Megabyte messages, sent once per HUGE_TEXT_EVERY messages."""
VALID_ENCODINGS = {"bgr8": 3, "rgb8": 3, "mono8": 1, "yuv422": 2, "mono16": 2}


@dataclass(frozen=True)
class FuzzConfig:
    model_path: Path
    out_dir: Path
    messages: int = 300
    seed: int = 0
    namespace: str = "/dcmif_fuzz"
    diagnostics_period_s: float = 0.5


@dataclass
class FuzzResult:
    sent: dict[str, int] = field(default_factory=dict)  # messages by kind
    valid_sent: int = 0
    valid_fused: int = 0
    oversize_sent: int = 0
    final_status: dict = field(default_factory=dict)
    levels_seen: list[int] = field(default_factory=list)  # FusionStatus.LEVEL_* in order, repeats collapsed
    error_while_starved: bool = False
    level_after_recovery: int | None = None
    rss_mb_start: float = 0.0
    rss_mb_end: float = 0.0
    rss_mb_peak: float = 0.0
    node_alive: bool = True
    node_exit_status: int | None = None
    log_lines: int = 0
    log_lines_per_minute: float = 0.0
    longest_log_line: int = 0
    duration_s: float = 0.0

    def summary(self) -> dict:
        return asdict(self)


def run_fuzz(config: FuzzConfig) -> FuzzResult:
    """Start a node, fuzz it, stop it; the node's death is recorded, not raised."""
    os.environ.update(fastdds_environment(os.environ))  # before this process's first participant
    config.out_dir.mkdir(parents=True, exist_ok=True)
    width, height = PROCESSING_SIZE
    parameters = {"model_path": str(config.model_path), "provider": "cpu", "prior": "none",
                  "processing_width": width, "processing_height": height,
                  "diagnostics_period_s": config.diagnostics_period_s}
    node_process = NodeProcess(config.out_dir, parameters, config.namespace)
    context = Context()
    rclpy.init(context=context)
    result = FuzzResult()
    try:
        node_process.start()
        fuzzer = _Fuzzer(context, config, node_process, result)
        try:
            fuzzer.run()
        except NodeDiedError:
            pass  # recorded below (node_alive, node_exit_status) with the log
        finally:
            fuzzer.destroy()
    finally:
        result.node_alive = node_process.pid is not None and _alive(node_process)
        result.node_exit_status = node_process.stop()
        context.try_shutdown()
        _read_log(node_process.log_path, result)
    return result


class _Fuzzer:
    def __init__(self, context: Context, config: FuzzConfig, node_process: NodeProcess, result: FuzzResult):
        self._config, self._node_process, self._result = config, node_process, result
        self._rng = random.Random(config.seed)
        self._node = Node("dcmif_fuzzer", namespace=config.namespace, context=context)
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self._node)
        self._camera = self._node.create_publisher(Image, INPUT_TOPIC, CAMERA_QOS)
        self._fused_stamps: set[tuple[int, int]] = set()
        self._statuses: list[FusionStatus] = []
        self._fused = self._node.create_subscription(
            Image, FUSED_TOPIC, lambda m: self._fused_stamps.add((m.header.stamp.sec, m.header.stamp.nanosec)),
            VIEWER_QOS)
        self._node.create_subscription(FusionStatus, STATUS_TOPIC, self._on_status, VIEWER_QOS)
        self._next_sec = FIRST_STAMP_SEC

    def run(self) -> None:
        started = time.monotonic()
        ready = self._spin_until(lambda: self._camera.get_subscription_count() > 0
                                 and self._fused.get_publisher_count() > 0, READY_TIMEOUT_S)
        if not ready or not self._spin_until(self._warm_up, READY_TIMEOUT_S):
            return
        self._result.rss_mb_start = _memory_mb(self._node_process.pid, "VmRSS")
        for index in range(self._config.messages):
            if index and index % LOSS_EVERY == 0:
                self._send_oversize()
            if self._rng.random() < VALID_SHARE:
                self._send_valid()
            else:
                self._send(*self._malformed(index))
                self._spin_for(BAD_FRAME_GAP_S)
        self._starve_then_recover()
        self._spin_until(self._settled, SETTLE_TIMEOUT_S)
        pid = self._node_process.pid
        self._result.rss_mb_end = _memory_mb(pid, "VmRSS")
        self._result.rss_mb_peak = _memory_mb(pid, "VmHWM")
        self._result.final_status = _status_fields(self._statuses[-1]) if self._statuses else {}
        self._result.duration_s = time.monotonic() - started

    def destroy(self) -> None:
        self._executor.shutdown()
        self._node.destroy_node()

    # --- what is sent -----------------------------------------------------------------------------------

    def _warm_up(self) -> bool:
        """One valid frame, True once fused: the node's side of discovery may lag ours, losing the first frames."""
        self._send("warm-up", self._valid_frame())
        return self._spin_until(lambda: bool(self._fused_stamps), WARM_UP_WAIT_S)

    def _send_valid(self) -> None:
        message = self._valid_frame()
        self._send("valid", message)
        self._result.valid_sent += 1
        stamp = (message.header.stamp.sec, message.header.stamp.nanosec)
        self._result.valid_fused += self._spin_until(lambda: stamp in self._fused_stamps, FUSED_TIMEOUT_S)

    def _valid_frame(self) -> Image:
        encoding = self._rng.choice(sorted(VALID_ENCODINGS))
        width, height = FRAME_SIZE
        return self._image(encoding, width, height, width * VALID_ENCODINGS[encoding])

    def _send_oversize(self) -> None:
        width, height = OVERSIZE
        self._send("oversize", self._image("bgr8", width, height, width * 3))
        self._result.oversize_sent += 1
        self._spin_for(OVERSIZE_SETTLE_S)  # lets its fragments go before the next frame shares the link

    def _malformed(self, index: int) -> tuple[str, Image]:
        huge = index % HUGE_TEXT_EVERY == HUGE_TEXT_EVERY // 2
        kind = self._rng.choice(HUGE_TEXT_KINDS if huge else MALFORMED_KINDS)
        width, height = FRAME_SIZE
        image = self._image
        if kind == "random encoding":
            encoding = "".join(self._rng.choices(string.printable, k=self._rng.randint(1, 20)))
            return kind, image(encoding, width, height, width * 3)
        if kind == "unsupported encoding":
            return kind, image(self._rng.choice(["rgb16", "32FC1", "16UC3", "bgra16", "8UC1"]), width, height,
                               width * 6)
        if kind == "no pixels":
            return kind, image("bgr8", 0, self._rng.choice([0, height]), 0)
        if kind == "short data":
            return kind, image("bgr8", width, height, width * 3, length=self._rng.randint(0, width * height * 3 - 1))
        if kind == "small step":
            return kind, image("rgb8", width, height, self._rng.randint(0, width * 3 - 1))
        if kind == "odd yuv width":
            return kind, image("yuv422", width - 1, height, (width - 1) * 2)
        if kind == "over pixel limit":
            return kind, image("bgr8", 10_000, 10_000, 30_000, length=64)
        if kind == "huge encoding":
            return kind, image("e" * HUGE_TEXT_CHARS, width, height, width * 3)
        message = image("32FC1", width, height, width * 4)  # huge frame_id, on a frame that is rejected
        message.header.frame_id = "f" * HUGE_TEXT_CHARS
        return kind, message

    def _image(self, encoding: str, width: int, height: int, step: int, length: int | None = None) -> Image:
        size = step * height if length is None else length
        data = np.random.default_rng(self._next_sec).integers(0, 256, size, dtype=np.uint8).tobytes()
        header = Header(stamp=Time(sec=self._next_sec, nanosec=0), frame_id="fuzz_camera")
        self._next_sec += 1
        return Image(header=header, height=height, width=width, encoding=encoding, step=step, data=data)

    def _send(self, kind: str, message: Image) -> None:
        self._node_process.check_alive()
        self._camera.publish(message)
        self._result.sent[kind] = self._result.sent.get(kind, 0) + 1

    def _starve_then_recover(self) -> None:
        """Only bad frames until health must say ERROR (and a report has gone out), then one valid frame."""
        deadline = time.monotonic() + NO_OUTPUT_ERROR_S + 3 * self._config.diagnostics_period_s + 1.0
        while time.monotonic() < deadline and not self._result.error_while_starved:
            self._send("starving", self._image("rgb16", *FRAME_SIZE, FRAME_SIZE[0] * 6))
            self._spin_for(1.0 / STARVE_RATE_HZ)
            self._result.error_while_starved = any(s.level == FusionStatus.LEVEL_ERROR for s in self._statuses[-3:])
        self._send_valid()
        reports = len(self._statuses)
        self._spin_until(lambda: len(self._statuses) >= reports + 3, SETTLE_TIMEOUT_S)
        self._result.level_after_recovery = self._statuses[-1].level if self._statuses else None

    # --- spinning ---------------------------------------------------------------------------------------

    def _on_status(self, status: FusionStatus) -> None:
        self._statuses.append(status)
        if not self._result.levels_seen or self._result.levels_seen[-1] != status.level:
            self._result.levels_seen.append(status.level)

    def _settled(self) -> bool:
        """Nothing in flight: every received frame is accounted for in the latest status."""
        last = self._statuses[-1] if self._statuses else None
        return last is not None and last.frames_processed + last.frames_dropped == last.frames_received

    def _spin_for(self, seconds: float) -> None:
        self._spin_until(lambda: False, seconds)

    def _spin_until(self, done, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            self._node_process.check_alive()
            if time.monotonic() >= deadline:
                return False
            self._executor.spin_once(timeout_sec=SPIN_STEP_S)
        return True


def _status_fields(status: FusionStatus) -> dict:
    return {name: getattr(status, name) for name in (
        "level", "frames_received", "frames_processed", "frames_dropped", "frames_replaced", "frames_rejected",
        "frames_lost_in_transport", "last_error")}


def _memory_mb(pid: int | None, field_name: str) -> float:
    """A /proc/PID/status figure (VmRSS now, VmHWM the peak) in MB; 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def _alive(node_process: NodeProcess) -> bool:
    try:
        node_process.check_alive()
    except NodeDiedError:
        return False
    return True


def _read_log(path: Path, result: FuzzResult) -> None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return
    result.log_lines = len(lines)
    result.longest_log_line = max((len(line) for line in lines), default=0)
    result.log_lines_per_minute = len(lines) / max(result.duration_s, 1.0) * 60.0
