"""dcmif_node with a real thermal camera (use_ir): stamp pairing, fall-back to the inferred infrared, recovery.

Models: the random tiny DCMIF network (``random_tiny_onnx``) and a random dual-modal DCMIF exported here; what
is checked is the plumbing (which path fused which frame), not image quality. Real rclpy, in one process.
"""
from __future__ import annotations

import pytest
import torch
from dcmif_msgs.msg import FusionStatus
from sensor_msgs.msg import Image

from dcmif_ros.inference.dual import DUAL_DCMIF, DualDCMIF
from dcmif_ros.inference.export import export_dual
from dcmif_ros.models import get_config
from node_harness import BEST_EFFORT, InProcessGraph, image, private_domain_id, wait_until

DOMAIN_ID = private_domain_id(salt=53)
DIAGNOSTICS_PERIOD_S = 0.2
IR_TIMEOUT_S = 1.0
T0 = 1_700_001_000  # header stamps, seconds
VIS_SIZE, IR_SIZE = (64, 48), (32, 24)  # (width, height): the thermal camera has a lower resolution
DUAL = FusionStatus.FUSION_MODE_DUAL_DCMIF
VIS_ONLY = FusionStatus.FUSION_MODE_VIS_ONLY


@pytest.fixture(scope="module")
def random_dual_onnx(tmp_path_factory):
    torch.manual_seed(0)
    net = DualDCMIF(get_config("tiny"))
    with torch.no_grad():
        net.dictionary.normal_(0.0, 0.1)
    return export_dual(net, tmp_path_factory.mktemp("dual"), "dual_random", DUAL_DCMIF, trained=False, int8_data=[])


class ThermalGraph:
    """An InProcessGraph with use_ir, a thermal camera on ir_image, and the outputs listened to."""

    def __init__(self, graph: InProcessGraph):
        self.graph = graph
        self.thermal = graph.probe.create_publisher(Image, "ir_image", BEST_EFFORT)
        self.fused = graph.listen("fused/image")
        self.thermal_out = graph.listen("pseudo_thermal/image")
        graph.listen_status()

    def publish_ir(self, sec: int, nanosec: int = 0) -> None:
        assert wait_until(lambda: self.thermal.get_subscription_count() > 0), "dcmif_node is not on ir_image"
        self.thermal.publish(image("mono16", *IR_SIZE, sec=sec, nanosec=nanosec, bytes_per_pixel=2))

    def fuse(self, sec: int, nanosec: int = 0) -> FusionStatus:
        """Publish a visible frame, wait for its fused image, and return the status that reports it."""
        frame = image("bgr8", *VIS_SIZE, sec=sec, nanosec=nanosec)
        self.graph.fuse(frame)
        return self.graph.latest_status(lambda s: s.last_input_stamp == frame.header.stamp)


@pytest.fixture
def thermal_graph(random_tiny_onnx, random_dual_onnx, monkeypatch):
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    graph = InProcessGraph(DOMAIN_ID, {
        "model_path": str(random_tiny_onnx), "dual_model_path": str(random_dual_onnx), "use_ir": True,
        "ir_timeout_s": IR_TIMEOUT_S, "provider": "cpu", "prior": "none", "diagnostics_period_s": DIAGNOSTICS_PERIOD_S,
    })
    yield ThermalGraph(graph)
    graph.close()


def test_a_visible_frame_with_a_matching_infrared_stamp_is_fused_dual(thermal_graph):
    thermal_graph.publish_ir(T0, nanosec=20_000_000)  # 20 ms apart: within the 50 ms tolerance
    status = thermal_graph.fuse(T0)
    assert status.fusion_mode == DUAL and status.level != FusionStatus.LEVEL_ERROR
    registered = next(m for m in thermal_graph.thermal_out if m.header.stamp.sec == T0)
    assert (registered.encoding, registered.width, registered.height) == ("mono8", *VIS_SIZE), \
        "pseudo_thermal/image carries the real infrared, resized to the visible frame"


def test_no_infrared_for_longer_than_the_timeout_falls_back_and_infrared_recovers(thermal_graph):
    assert thermal_graph.fuse(T0).fusion_mode == VIS_ONLY, "no thermal frame yet: DCMIF's inferred infrared"
    thermal_graph.publish_ir(T0 + 1)
    assert thermal_graph.fuse(T0 + 1).fusion_mode == DUAL
    lost = thermal_graph.fuse(T0 + 1 + 2 * int(IR_TIMEOUT_S))
    assert lost.fusion_mode == VIS_ONLY, "the thermal camera went quiet for twice the timeout"
    thermal_graph.publish_ir(T0 + 5)
    assert thermal_graph.fuse(T0 + 5).fusion_mode == DUAL, "infrared is back"


def test_a_visible_frame_the_live_thermal_camera_missed_is_skipped(thermal_graph):
    thermal_graph.publish_ir(T0)
    thermal_graph.fuse(T0)
    missed = image("bgr8", *VIS_SIZE, sec=T0, nanosec=500_000_000)  # no infrared within 50 ms, camera still live
    thermal_graph.graph.publish(missed)
    status = thermal_graph.graph.latest_status(lambda s: s.frames_dropped == 1)
    assert status.frames_processed == 1 and status.fusion_mode == DUAL
    assert all(m.header.stamp != missed.header.stamp for m in thermal_graph.fused), "not mixed in visible-only"
