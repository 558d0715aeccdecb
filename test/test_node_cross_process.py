"""dcmif_node across processes, as deployed: the node, the camera and this test each in its own process.

The node and the camera load config/fastdds_shm.xml (NodeProcess and fastdds_environment), which is what
lets 640x480 images cross a best-effort link; this process subscribes reliably, which needs no profile.
Also: Ctrl-C stops the node cleanly, a node that cannot start fails loudly, and ``dcmif demo`` runs the
whole graph, writes its outputs and leaves no process behind.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from dcmif_ros.commands.demo import CONTACT_SHEET_TILE, LABEL_HEIGHT
from dcmif_ros.ros.fastdds import PROFILE_ENV_VAR, fastdds_environment, fastdds_profile_path
from dcmif_ros.ros.node_process import NodeDiedError, NodeProcess
from dcmif_ros.sample_camera import DEFAULT_FRAME_ID, DEFAULT_SIZE
from node_harness import LOCALHOST_ONLY, WAIT_S, OutputObserver, private_domain_id, unique_namespace, wait_until

DOMAIN_ID = private_domain_id(salt=71)
CAMERA_RATE_HZ = 15.0
CAMERA_SECONDS = 4.0
MIN_DELIVERED = 0.9  # of the camera's frames reaching the node (without the profile, best effort gets ~0)
SUBPROCESS_TIMEOUT_S = 180
NODE_PARAMETERS = {"provider": "cpu", "prior": "none", "processing_width": 160, "processing_height": 120,
                   "diagnostics_period_s": 0.5}
"""Inference at 160x120 keeps the shared CPU free; the images on the wire stay 640x480."""


@pytest.fixture(scope="module")
def ros_env() -> dict[str, str]:
    return fastdds_environment({**os.environ, **LOCALHOST_ONLY, "ROS_DOMAIN_ID": str(DOMAIN_ID)})


@pytest.fixture(scope="module")
def node_process(random_tiny_onnx, tmp_path_factory, ros_env):
    namespace = unique_namespace()
    process = NodeProcess(tmp_path_factory.mktemp("node"), {"model_path": str(random_tiny_onnx), **NODE_PARAMETERS},
                          namespace, env=ros_env).start()
    yield process, namespace
    process.stop()


@pytest.fixture(scope="module")
def observer(node_process):
    watcher = OutputObserver(node_process[1], DOMAIN_ID)
    yield watcher
    watcher.close()


def run_camera(reliability: str, namespace: str, env: dict[str, str]) -> int:
    """The sample camera as a separate process, as usb_cam or a RealSense driver would be; frames published."""
    command = [sys.executable, "-m", "dcmif_ros.sample_camera", "--reliability", reliability,
               "--rate", str(CAMERA_RATE_HZ), "--duration", str(CAMERA_SECONDS), "--wait-for-subscriber", str(WAIT_S),
               "--ros-args", "-r", f"__ns:={namespace}"]
    result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=SUBPROCESS_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])["published"]


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes containing ``text`` (how a leaked node would show up)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(command)
    return found


def run_demo(out: Path, model: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "dcmif_ros.cli", "demo", "--out", str(out), "--model", str(model),
               "--provider", "cpu", "--prior", "none", "--processing-size", "160x120", "--duration", "3", *extra]
    return subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S)


def test_every_process_gets_the_shared_memory_profile(ros_env):
    assert ros_env[PROFILE_ENV_VAR] == str(fastdds_profile_path()) and fastdds_profile_path().is_file()
    assert "<segment_size>33554432</segment_size>" in fastdds_profile_path().read_text()


@pytest.mark.parametrize("reliability", ["reliable", "best_effort"])
def test_camera_frames_reach_the_node_and_fused_images_come_back(node_process, observer, ros_env, reliability):
    process, namespace = node_process
    assert wait_until(lambda: observer.statuses, WAIT_S * 3), f"no status from the node:\n{process.log_tail()}"
    received_before, fused_before = observer.statuses[-1].frames_received, len(observer.fused)

    published = run_camera(reliability, namespace, ros_env)
    process.check_alive()

    assert published >= CAMERA_RATE_HZ * CAMERA_SECONDS * 0.8, "the camera itself fell behind"
    assert wait_until(lambda: observer.statuses[-1].frames_received - received_before >= MIN_DELIVERED * published)
    fused = observer.fused[fused_before:]
    assert fused, "no fused image came back"
    assert all(m.header.frame_id == DEFAULT_FRAME_ID and (m.width, m.height) == DEFAULT_SIZE for m in fused)
    stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in fused]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), "newest frames only, in order"


def test_the_node_stops_cleanly_on_ctrl_c(node_process):
    process, _ = node_process
    assert process.stop() == 0, f"exit status of dcmif_node after SIGINT; its log:\n{process.log_tail()}"


def test_a_node_that_cannot_start_exits_with_a_clear_error(tmp_path, ros_env):
    process = NodeProcess(tmp_path, {"model_path": str(tmp_path / "missing.onnx")}, unique_namespace(), env=ros_env)
    process.start()
    try:
        def died() -> bool:
            try:
                process.check_alive()
            except NodeDiedError:
                return True
            return False

        assert wait_until(died, WAIT_S * 2), "a node without a model must exit when autostart fails"
        with pytest.raises(NodeDiedError, match=r"exited with status 1(.|\n)*missing\.onnx' is not a file"):
            process.check_alive()
    finally:
        process.stop()


def test_demo_writes_its_outputs_and_leaves_no_process(random_tiny_onnx, tmp_path, ros_env):
    out = tmp_path / "demo"
    result = run_demo(out, random_tiny_onnx, ros_env, "--rows", "2")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fused_received"] > 0 and summary["latency_ms"]["median_ms"] > 0 and summary["rate_hz"] > 0
    assert summary["node"]["frames_processed"] > 0 and summary["node"]["execution_provider"] == "CPUExecutionProvider"
    assert "end-to-end latency" in result.stdout
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    width, height = CONTACT_SHEET_TILE
    assert sheet.shape == (LABEL_HEIGHT + 2 * height, 3 * width, 3)
    assert not processes_mentioning(str(out)), "the demo left a process behind"


def test_demo_fails_loudly_when_the_node_dies(tmp_path, ros_env):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    out = tmp_path / "demo"
    result = run_demo(out, broken, ros_env)
    assert result.returncode == 2
    assert "dcmif_node exited with status 1" in result.stderr and "manifest" in result.stderr, result.stderr
    assert not processes_mentioning(str(out))
