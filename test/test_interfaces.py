"""dcmif_msgs/FusionStatus on the wire: schema, in-process and cross-process round trips with real rclpy.

Every test uses its own ROS context on a domain id derived from the pid of the test process, with
discovery limited to this host, and topic names unique to the test, so parallel runs do not cross-talk.
Also: scripts/build_interfaces.sh (the Python-only build) is idempotent, fails in one line, and puts the
type support libraries where the wheels' start-up hook puts them on LD_LIBRARY_PATH.
"""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from builtin_interfaces.msg import Time

try:
    import dcmif_msgs
    from dcmif_msgs.msg import FusionStatus
except ImportError as exc:  # also when only the source directory dcmif_msgs/ is importable
    raise ImportError(f"dcmif_msgs is not built ({exc}): run scripts/build_interfaces.sh") from exc

# Domain ids 1..100 are safe for Fast DDS port arithmetic on Linux; 0 (the default) is left to users.
DOMAIN_ID = 1 + os.getpid() % 100
TIMEOUT_S = 15.0
ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "scripts" / "build_interfaces.sh"

# Every field of FusionStatus with its wire type: a change to the message is an API change.
EXPECTED_FIELDS = {
    "header": "std_msgs/Header",
    "level": "uint8",
    "fusion_mode": "string",
    "model_name": "string",
    "execution_provider": "string",
    "inference_latency_ms": "double",
    "inference_latency_p95_ms": "double",
    "last_input_stamp": "builtin_interfaces/Time",
    "frames_received": "uint64",
    "frames_processed": "uint64",
    "frames_dropped": "uint64",
    "frames_replaced": "uint64",
    "frames_rejected": "uint64",
    "frames_lost_in_transport": "uint64",
    "prior_version": "uint64",
    "prior_age_s": "double",
    "prior_age_frames": "uint64",
    "prior_backend": "string",
    "last_error": "string",
    "precision": "string",
    "processing_width": "uint32",
    "processing_height": "uint32",
}

# Known values for every field, chosen at the edges of their types (uint64 max, full-precision
# doubles, non-ASCII text). The nested messages are given as [sec, nanosec(, frame_id)].
VALUES = {
    "header": [1_700_000_123, 999_999_999, "camera_optical_frame"],
    "level": 1,
    "fusion_mode": "dual_lrcfuse",
    "model_name": "dcmif_test_model",
    "execution_provider": "CUDAExecutionProvider",
    "inference_latency_ms": 12.345678901234567,
    "inference_latency_p95_ms": 2.0 ** -20,
    "last_input_stamp": [1_700_000_122, 5],
    "frames_received": 2**64 - 1,
    "frames_processed": 2**63 + 7,
    "frames_dropped": 123_456_789_012,
    "frames_replaced": 123_456_000_000,
    "frames_rejected": 789_012,
    "frames_lost_in_transport": 2**40 + 3,
    "prior_version": 42,
    "prior_age_s": 3.25e-3,
    "prior_age_frames": 17,
    "prior_backend": "minilm",
    "last_error": "CUDA out of memory: fell back to CPU (Ω, ü, 測試)",
    "precision": "int8",
    "processing_width": 2**32 - 1,
    "processing_height": 240,
}


def build_status(values):
    """A FusionStatus from VALUES (the publisher subprocess runs this same function's source)."""
    from builtin_interfaces.msg import Time
    from dcmif_msgs.msg import FusionStatus

    msg = FusionStatus()
    for name, value in values.items():
        if name == "header":
            msg.header.stamp = Time(sec=value[0], nanosec=value[1])
            msg.header.frame_id = value[2]
        elif name == "last_input_stamp":
            msg.last_input_stamp = Time(sec=value[0], nanosec=value[1])
        else:
            setattr(msg, name, value)
    return msg


PUBLISHER_SOURCE = inspect.getsource(build_status) + textwrap.dedent(
    """
    import json, sys, time
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from dcmif_msgs.msg import FusionStatus

    topic, values = sys.argv[1], json.loads(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("fusion_status_test_publisher")
    pub = node.create_publisher(
        FusionStatus, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    msg = build_status(values)
    deadline = time.monotonic() + 30.0  # the test kills us long before; never linger
    try:
        while time.monotonic() < deadline:
            pub.publish(msg)
            time.sleep(0.05)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    """
)


def unique_topic(kind: str) -> str:
    return f"/dcmif_test/{kind}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def assert_same_status(received: FusionStatus, sent: FusionStatus) -> None:
    for name in FusionStatus.get_fields_and_field_types():
        assert getattr(received, name) == getattr(sent, name), f"field {name} differs after the round trip"
    assert received == sent


@pytest.fixture
def ros(monkeypatch):
    """A private rclpy context, executor and node; everything is shut down afterwards."""
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    executor = SingleThreadedExecutor(context=context)
    node = Node(f"fusion_status_test_{os.getpid()}", context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        context.try_shutdown()


def spin_until(executor, predicate, timeout_s: float, on_tick=None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if on_tick is not None:
            on_tick()
        executor.spin_once(timeout_sec=0.05)
        if predicate():
            return True
    return False


def test_fusion_status_is_the_built_package_and_has_the_documented_schema():
    # Without the build, `import dcmif_msgs` can resolve to the repository's dcmif_msgs/ directory
    # as an empty namespace package; insist on the generated one.
    assert getattr(dcmif_msgs, "__file__", None), (
        "dcmif_msgs is not the generated package: run scripts/build_interfaces.sh"
    )
    assert FusionStatus.get_fields_and_field_types() == EXPECTED_FIELDS
    assert (FusionStatus.FUSION_MODE_VIS_ONLY, FusionStatus.FUSION_MODE_DUAL_DCMIF,
            FusionStatus.FUSION_MODE_DUAL_LRCFUSE) == ("vis_only", "dual_dcmif", "dual_lrcfuse")
    assert (FusionStatus.LEVEL_OK, FusionStatus.LEVEL_WARN, FusionStatus.LEVEL_ERROR,
            FusionStatus.LEVEL_STALE) == (0, 1, 2, 3)
    default = FusionStatus()
    assert default.frames_received == 0 and default.last_error == "" and default.level == FusionStatus.LEVEL_OK


def test_values_cover_every_field():
    assert set(VALUES) == set(EXPECTED_FIELDS), "give every FusionStatus field a known value in VALUES"
    msg = build_status(VALUES)
    assert msg.header.stamp == Time(sec=1_700_000_123, nanosec=999_999_999)
    assert msg.frames_received == 2**64 - 1


def test_round_trip_in_process(ros):
    node, executor = ros
    topic = unique_topic("in_process")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    received: list[FusionStatus] = []
    node.create_subscription(FusionStatus, topic, received.append, qos)
    publisher = node.create_publisher(FusionStatus, topic, qos)
    sent = build_status(VALUES)

    assert spin_until(executor, lambda: received, TIMEOUT_S, on_tick=lambda: publisher.publish(sent)), (
        f"no FusionStatus received on {topic} within {TIMEOUT_S} s"
    )
    assert_same_status(received[0], sent)
    assert received[0].header.stamp.sec == 1_700_000_123
    assert received[0].header.stamp.nanosec == 999_999_999
    assert received[0].header.frame_id == "camera_optical_frame"


def test_round_trip_across_processes(ros):
    node, executor = ros
    topic = unique_topic("cross_process")
    received: list[FusionStatus] = []
    node.create_subscription(
        FusionStatus, topic, received.append, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    # sys.executable is the venv's python under `make test` (the interpreter that imported rclpy here).
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER_SOURCE, topic, json.dumps(VALUES)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        got = spin_until(executor, lambda: received or proc.poll() is not None, TIMEOUT_S)
        if not received:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            tail = err.decode(errors="replace").strip().splitlines()[-5:]
            reason = "publisher exited" if got else f"nothing received within {TIMEOUT_S} s"
            pytest.fail(f"cross-process round trip on {topic}: {reason}; publisher stderr: {tail}")
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
    assert_same_status(received[0], build_status(VALUES))


# --- scripts/build_interfaces.sh (the Python-only build) ---------------------------------------------

def run_build_script(**env_overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_overrides)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)  # let the venv's python bootstrap as from a shell
    return subprocess.run(["bash", str(BUILD_SCRIPT)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=900)


def test_venv_build_puts_libraries_where_the_wheels_bootstrap_finds_them():
    site = Path(dcmif_msgs.__file__).resolve().parent.parent
    prefix = Path(sys.prefix).resolve()
    if not site.is_relative_to(prefix):
        pytest.skip(f"dcmif_msgs comes from {site} (a colcon install), not from this venv")
    lib = prefix / "lib" / "libdcmif_msgs__rosidl_typesupport_fastrtps_c.so"
    assert lib.is_file(), f"{lib} missing: run scripts/build_interfaces.sh"
    # ros_wheels_bootstrapper.pth re-executes the interpreter with <prefix>/lib on LD_LIBRARY_PATH.
    ld_path = [Path(p).resolve() for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    assert prefix / "lib" in ld_path


def test_build_script_second_run_is_quick_and_up_to_date():
    first = run_build_script()
    assert first.returncode == 0, first.stderr.strip()
    start = time.monotonic()
    second = run_build_script()
    elapsed = time.monotonic() - start
    assert second.returncode == 0, second.stderr.strip()
    assert second.stdout.strip() == "dcmif_msgs: up to date" and second.stderr == ""
    assert elapsed < 10, f"second run took {elapsed:.1f} s"


def test_build_script_without_venv_fails_in_one_line():
    result = run_build_script(DCMIF_VENV="/nonexistent/venv")
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 1
    assert lines == ["dcmif_msgs build failed: no Python in /nonexistent/venv (create it with scripts/setup_env.sh)"]


def test_rosbags_decodes_what_rclpy_serialises():
    """Bag tooling without ROS (rosbags) reads FusionStatus from the .msg text, byte-compatible with rclpy."""
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(getattr(Stores, "ROS2_KILTED", Stores.LATEST))
    text = (ROOT / "msg" / "FusionStatus.msg").read_text(encoding="utf-8")
    store.register(get_types_from_msg(text, "dcmif_msgs/msg/FusionStatus"))
    sent = build_status(VALUES)
    decoded = store.deserialize_cdr(serialize_message(sent), "dcmif_msgs/msg/FusionStatus")
    for name, value in VALUES.items():
        if name == "header":
            assert (decoded.header.stamp.sec, decoded.header.stamp.nanosec, decoded.header.frame_id) == tuple(value)
        elif name == "last_input_stamp":
            assert (decoded.last_input_stamp.sec, decoded.last_input_stamp.nanosec) == tuple(value)
        else:
            assert getattr(decoded, name) == value, name
    # and back: rosbags' CDR is what rclpy reads
    assert deserialize_message(bytes(store.serialize_cdr(decoded, "dcmif_msgs/msg/FusionStatus")), FusionStatus) == sent
