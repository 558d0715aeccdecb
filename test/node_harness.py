"""Test helpers for dcmif_node: a private ROS domain, image messages, and an in-process graph.

Each test module gets its own domain id (from the pid and a per-module salt) and each graph its own
namespace, with discovery limited to this host, so parallel test runs do not hear each other.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from dcmif_msgs.msg import FusionStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.msg import Log
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from dcmif_ros.node import DcmifNode

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
BEST_EFFORT = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
WAIT_S = 20.0
"""Upper bound of every wait; a healthy run needs a fraction of it."""
LOCALHOST_ONLY = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def private_domain_id(salt: int) -> int:
    """1..100 (safe Fast DDS ports); modules pass different salts so they never share a domain."""
    return 1 + (os.getpid() + salt) % 100


def localhost_context(domain_id: int) -> Context:
    """An initialised rclpy context of its own on ``domain_id``, discovering peers on this host only."""
    context = Context()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in LOCALHOST_ONLY.items():
            patch.setenv(name, value)
        rclpy.init(context=context, domain_id=domain_id)
    return context


class OutputObserver:
    """The downstream side of a graph in this process: reliable subscribers to a node's fused images and status
    (under ``prefix``), spun in a thread of their own, on a localhost context of their own."""

    def __init__(self, namespace: str, domain_id: int, prefix: str = "", name: str = "observer"):
        self.context = localhost_context(domain_id)
        self.node = Node(name, namespace=namespace, context=self.context)
        self.fused: list[Image] = []
        self.statuses: list[FusionStatus] = []
        self.node.create_subscription(Image, f"{prefix}fused/image", self.fused.append, RELIABLE)
        self.node.create_subscription(FusionStatus, f"{prefix}status", self.statuses.append, RELIABLE)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def close(self) -> None:
        self.executor.shutdown()
        self._spinner.join(WAIT_S)
        self.node.destroy_node()
        self.context.try_shutdown()


def unique_namespace() -> str:
    return f"/dcmif_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def image(encoding: str = "bgr8", width: int = 64, height: int = 48, *, sec: int = 1_700_000_000,
          nanosec: int = 0, frame_id: str = "test_camera", bytes_per_pixel: int = 3, padding: int = 0,
          data: bytes | None = None) -> Image:
    """An Image of random pixels (any bytes are valid pixels in every supported encoding)."""
    step = width * bytes_per_pixel + padding
    if data is None:
        data = np.random.default_rng(sec + nanosec).integers(0, 256, step * height, dtype=np.uint8).tobytes()
    return Image(header=Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id), height=height,
                 width=width, encoding=encoding, step=step, data=data)


def wait_until(predicate: Callable[[], object], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


class InProcessGraph:
    """dcmif_node plus a probe node (the camera and the downstream subscribers), spun in a background thread.

    ``received[topic]`` collects what the probe's subscriptions got; ``logs`` the node's /rosout lines.
    """

    def __init__(self, domain_id: int, parameters: dict, autostart: bool = True, namespace: str | None = None):
        self.namespace = namespace or unique_namespace()
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = DcmifNode(context=self.context, namespace=self.namespace,
                              parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
        self.probe = Node("probe", context=self.context, namespace=self.namespace)
        self.camera = self.probe.create_publisher(Image, "image_raw", BEST_EFFORT)
        self.received: dict[str, list] = {}
        self.logs: list[Log] = []
        logger_name = f"{self.namespace.strip('/')}.{self.node.get_name()}"
        self.probe.create_subscription(
            Log, "/rosout", lambda log: self.logs.append(log) if log.name == logger_name else None, RELIABLE)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        if autostart:
            assert self.node.start_up(), "dcmif_node did not configure and activate"
        self._spinner = threading.Thread(target=self.executor.spin, name="test-executor", daemon=True)
        self._spinner.start()

    def listen(self, topic: str, message_type=Image, qos: QoSProfile = RELIABLE) -> list:
        """Subscribe the probe to ``topic`` (relative to the graph's namespace) and wait until it matches."""
        self.received[topic] = []
        subscription = self.probe.create_subscription(message_type, topic, self.received[topic].append, qos)
        assert wait_until(lambda: subscription.get_publisher_count() > 0), f"nothing publishes {topic}"
        return self.received[topic]

    def listen_status(self) -> list[FusionStatus]:
        return self.listen("status", FusionStatus)

    def publish(self, message: Image) -> None:
        assert wait_until(lambda: self.camera.get_subscription_count() > 0), "dcmif_node is not subscribed"
        self.camera.publish(message)

    def fuse(self, message: Image, topic: str = "fused/image") -> Image:
        """Publish one frame and return the ``topic`` image carrying its stamp."""
        stamp = message.header.stamp
        outputs = self.received[topic]
        self.publish(message)
        assert wait_until(lambda: any(m.header.stamp == stamp for m in outputs)), f"no {topic} for {stamp}"
        return next(m for m in outputs if m.header.stamp == stamp)

    def latest_status(self, after: Callable[[FusionStatus], bool] = lambda status: True) -> FusionStatus:
        statuses = self.received["status"]
        assert wait_until(lambda: statuses and after(statuses[-1])), "no status message satisfying the test"
        return statuses[-1]

    def change_state(self, transition_id: int) -> bool:
        client = self.probe.create_client(ChangeState, f"{self.namespace}/{self.node.get_name()}/change_state")
        try:
            assert client.wait_for_service(timeout_sec=WAIT_S)
            future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
            assert wait_until(future.done), "no answer from change_state"
            return future.result().success
        finally:
            self.probe.destroy_client(client)

    def node_log_levels(self) -> set[int]:
        return {log.level for log in self.logs}

    def close(self) -> None:
        """Idempotent: tests may close early to check what shutdown leaves behind."""
        if not self.context.ok():
            return
        self.executor.shutdown()
        self._spinner.join(WAIT_S)
        self.node.release()
        self.node.destroy_node()
        self.probe.destroy_node()
        self.context.try_shutdown()
