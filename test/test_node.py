"""dcmif_node in one process with real rclpy: headers, QoS, real-time dropping, bad input, lifecycle,
parameters, status and diagnostics, clean shutdown, and faults (a dead worker, floods of bad frames).

Model: the randomly initialised tiny network (``random_tiny_onnx``); frames are small so that each test
takes seconds on a shared CPU. Cross-process behaviour is in test_node_cross_process.py.
"""
from __future__ import annotations

import threading
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from dcmif_msgs.msg import FusionStatus
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import Log
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import Image

from dcmif_ros.node import WORKER_THREAD_NAME
from dcmif_ros.node import main as node_main
from dcmif_ros.inference.pipeline import FusionPipeline
from dcmif_ros.prior.refresher import WORKER_THREAD_NAME as PRIOR_THREAD_NAME
from dcmif_ros.ros import health
from node_harness import WAIT_S, InProcessGraph, image, private_domain_id, unique_namespace, wait_until

DOMAIN_ID = private_domain_id(salt=37)
DIAGNOSTICS_PERIOD_S = 0.2
LIBRARY_SINGLETON_THREADS = {"tqdm_monitor"}
"""Process-wide threads libraries start once and keep (tqdm's, started by transformers loading MiniLM)."""
BURST_FRAMES = 100
BURST_PERIOD_S = 0.003  # 330 frames/s: the subscription sees each frame, the model cannot keep up
BURST_LATENCY_BOUND_S = 3.0  # a queue of 100 frames would take 100 inferences; one frame takes well under 0.3 s


@pytest.fixture
def make_graph(random_tiny_onnx, monkeypatch):
    """Build InProcessGraphs on the random model (CPU, no prior unless asked); all closed afterwards."""
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    graphs: list[InProcessGraph] = []

    def make(autostart: bool = True, namespace: str | None = None, **parameters) -> InProcessGraph:
        defaults = {"model_path": str(random_tiny_onnx), "provider": "cpu", "prior": "none",
                    "diagnostics_period_s": DIAGNOSTICS_PERIOD_S}
        graphs.append(InProcessGraph(DOMAIN_ID, {**defaults, **parameters}, autostart, namespace))
        return graphs[-1]

    yield make
    for graph in graphs:
        graph.close()


def test_a_frame_comes_back_on_both_outputs_with_its_header(make_graph):
    graph = make_graph()
    fused, pseudo_thermal = graph.listen("fused/image"), graph.listen("pseudo_thermal/image")
    frames = [
        image("bgr8", 64, 48, sec=1_700_000_001, nanosec=123_456_789, frame_id="camera_optical_frame"),
        image("rgb8", 62, 40, sec=1_700_000_002, nanosec=5, frame_id="padded", padding=8),
        image("yuv422_yuy2", 64, 48, sec=1_700_000_003, frame_id="usb_cam", bytes_per_pixel=2),
        image("mono16", 30, 20, sec=1_700_000_004, frame_id="thermal16", bytes_per_pixel=2),
    ]
    for frame in frames:
        out = graph.fuse(frame)
        assert wait_until(lambda: any(m.header.stamp == frame.header.stamp for m in pseudo_thermal))
        grey = next(m for m in pseudo_thermal if m.header.stamp == frame.header.stamp)
        for message, encoding, channels in ((out, "bgr8", 3), (grey, "mono8", 1)):
            assert message.header == frame.header, f"{encoding} output must carry the input header verbatim"
            assert (message.encoding, message.width, message.height) == (encoding, frame.width, frame.height)
            assert message.step == frame.width * channels and len(message.data) == message.step * message.height


def test_input_is_best_effort_and_outputs_are_reliable(make_graph):
    graph = make_graph()
    graph.listen("fused/image")  # a reliable subscriber matched: it would not match a best-effort publisher
    subscriptions = graph.node.get_subscriptions_info_by_topic(f"{graph.namespace}/image_raw")
    publishers = graph.node.get_publishers_info_by_topic(f"{graph.namespace}/fused/image")
    ours = [s for s in subscriptions if s.node_name == graph.node.get_name()]
    assert [s.qos_profile.reliability for s in ours] == [ReliabilityPolicy.BEST_EFFORT]
    assert graph.node._subscription.qos_profile.depth == 1, "keep only the newest frame"  # the graph has no depth
    assert [p.qos_profile.reliability for p in publishers] == [ReliabilityPolicy.RELIABLE]
    assert graph.node.has_parameter(f"qos_overrides.{graph.namespace}/image_raw.subscription.reliability")


def test_qos_override_applies_and_an_incompatible_camera_is_logged_with_the_policy(make_graph):
    namespace = unique_namespace()
    override = f"qos_overrides.{namespace}/image_raw.subscription.reliability"
    graph = make_graph(namespace=namespace, **{override: "reliable"})
    subscriptions = graph.node.get_subscriptions_info_by_topic(f"{namespace}/image_raw")
    ours = [s for s in subscriptions if s.node_name == graph.node.get_name()]
    assert [s.qos_profile.reliability for s in ours] == [ReliabilityPolicy.RELIABLE]
    # The probe's camera publishes best effort, which a reliable subscription refuses.
    assert wait_until(lambda: any("RELIABILITY" in log.msg and override in log.msg
                                  for log in graph.logs if log.level == Log.WARN)), (
        f"no WARN naming the policy and the override; logs: {[log.msg for log in graph.logs]}")


def test_a_burst_of_100_frames_keeps_latency_bounded_and_counts_drops(make_graph):
    graph = make_graph()
    fused, statuses = graph.listen("fused/image"), graph.listen_status()
    frames = [image("bgr8", 160, 120, sec=i) for i in range(BURST_FRAMES)]
    clock = graph.probe.get_clock()
    for frame in frames:  # stamped on the ROS clock as a camera does, so latency = receipt - stamp
        frame.header.stamp = clock.now().to_msg()
        graph.publish(frame)
        time.sleep(BURST_PERIOD_S)
    newest = frames[-1].header.stamp
    assert wait_until(lambda: fused and fused[-1].header.stamp == newest), (
        "the newest frame of the burst must be processed (stale ones are dropped, not queued)")
    latencies_s = [(clock.now().nanoseconds - (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)) * 1e-9
                   for m in fused]
    assert max(latencies_s) < BURST_LATENCY_BOUND_S, f"latencies {latencies_s}"
    status = graph.latest_status(lambda s: s.frames_processed == len(fused)
                                 and s.frames_processed + s.frames_dropped == s.frames_received)
    assert status.frames_received <= BURST_FRAMES
    assert status.frames_dropped >= BURST_FRAMES / 4, f"frames replaced while the worker was busy: {status}"
    assert status.frames_processed < BURST_FRAMES / 2


def test_bad_frames_are_reported_and_good_frames_still_served(make_graph):
    graph = make_graph()
    graph.listen("fused/image")
    graph.listen_status()
    bad_frames = {
        "32FC1": image("32FC1", 16, 8, sec=1_700_000_200, bytes_per_pixel=4),
        "no pixels": image("bgr8", 0, 0, sec=1_700_000_201, data=b""),
        "too short": image("bgr8", 64, 48, sec=1_700_000_202, data=bytes(100)),
    }
    for index, (expected, frame) in enumerate(bad_frames.items()):
        graph.publish(frame)
        status = graph.latest_status(lambda s: expected in s.last_error)
        assert status.frames_rejected == index + 1 and status.frames_dropped >= index + 1
        good = image("bgr8", 64, 48, sec=1_700_000_300 + index)
        assert graph.fuse(good).header == good.header, "the node must keep serving after a bad frame"
    first = next(iter(bad_frames))
    errors = [log.msg for log in graph.logs if log.level == Log.ERROR]
    assert len(errors) == 1 and first in errors[0], f"one ERROR line per kind of problem per interval: {errors}"


def test_deactivate_frees_the_model_and_activate_resumes(make_graph):
    graph = make_graph()
    fused = graph.listen("fused/image")
    graph.fuse(image(sec=1_700_000_400))
    assert graph.change_state(Transition.TRANSITION_DEACTIVATE)
    assert graph.node._pipeline is None and graph.node._workers == []
    assert not any(t.name.startswith(WORKER_THREAD_NAME) for t in threading.enumerate())
    graph.camera.publish(image(sec=1_700_000_401))
    time.sleep(0.5)
    assert all(m.header.stamp.sec != 1_700_000_401 for m in fused), "an inactive node must not publish"
    assert graph.change_state(Transition.TRANSITION_ACTIVATE)
    assert graph.fuse(image(sec=1_700_000_402)).header.stamp.sec == 1_700_000_402


def test_runtime_parameters_are_validated_and_applied(make_graph):
    graph = make_graph()
    fused, gates = graph.listen("fused/image"), graph.listen("debug/gate")
    node = graph.node

    def reason(*parameters: Parameter) -> str:
        result = node.set_parameters_atomically(list(parameters))
        return "" if result.successful else result.reason

    assert "prior is 'none'" in reason(Parameter("refresh_every_n_frames", value=5))
    assert "at least one of" in reason(Parameter("publish_fused", value=False),
                                       Parameter("publish_pseudo_thermal", value=False))
    assert "read-only" in reason(Parameter("model_path", value="/elsewhere.onnx"))
    assert reason(Parameter("refresh_every_n_frames", value=0)), "below the descriptor's range"
    assert not reason(Parameter("publish_debug_gate", value=True))
    frame = image(sec=1_700_000_500)
    gate = graph.fuse(frame, topic="debug/gate")
    assert gate.header == frame.header and (gate.encoding, gate.width, gate.height) == ("bgr8", 64, 48)
    assert wait_until(lambda: any(m.header == frame.header for m in fused))


def test_outputs_without_subscribers_are_not_computed(make_graph, monkeypatch):
    calls: list[tuple[bool, bool]] = []  # (want_gate, want_pseudo_ir) of each frame
    original = FusionPipeline.process

    def spy(self, frame, want_gate=False, want_pseudo_ir=True):
        calls.append((want_gate, want_pseudo_ir))
        return original(self, frame, want_gate, want_pseudo_ir)

    monkeypatch.setattr(FusionPipeline, "process", spy)
    graph = make_graph(publish_debug_gate=True)
    graph.listen_status()
    graph.publish(image(sec=1_700_000_600))
    status = graph.latest_status(lambda s: s.frames_dropped == 1)
    assert status.frames_processed == 0 and not calls, "no image subscriber: no inference at all"
    graph.listen("fused/image")
    graph.fuse(image(sec=1_700_000_601))
    assert calls == [(False, False)], "only fused/image has a subscriber: neither gate nor pseudo-IR is computed"
    graph.listen("debug/gate")
    graph.fuse(image(sec=1_700_000_602), topic="debug/gate")
    assert calls[-1] == (True, False)
    graph.listen("pseudo_thermal/image")
    graph.fuse(image(sec=1_700_000_603), topic="pseudo_thermal/image")
    assert calls[-1] == (True, True)


def test_status_and_diagnostics_are_quiet_and_slow_when_all_is_well(make_graph):
    graph = make_graph()
    graph.listen("fused/image")
    statuses, diagnostics = graph.listen_status(), graph.listen("/diagnostics", DiagnosticArray)
    for index in range(3):
        graph.fuse(image(sec=1_700_000_700 + index))
    status = graph.latest_status(lambda s: s.frames_processed == 3)
    assert status.level == FusionStatus.LEVEL_OK and status.last_error == ""
    assert (status.execution_provider, status.model_name) == ("CPUExecutionProvider", "dcmif_random")
    assert status.fusion_mode == FusionStatus.FUSION_MODE_VIS_ONLY and status.prior_backend == "none"
    assert status.last_input_stamp.sec == 1_700_000_702 and status.inference_latency_ms > 0
    ours = f"{graph.node.get_name()}: fusion"
    assert wait_until(lambda: any(s.name == ours for d in diagnostics for s in d.status))
    entry = [s for d in diagnostics for s in d.status if s.name == ours][-1]
    assert entry.level == DiagnosticStatus.OK and entry.hardware_id == "onnxruntime CPUExecutionProvider"
    values = {kv.key: kv.value for kv in entry.values}
    assert values["frames processed"] == "3"
    # the defaults in force: auto resolution (a 64x48 frame runs at its own size), the fp32 graph on the CPU
    assert (status.precision, status.processing_width, status.processing_height) == ("fp32", 64, 48)
    assert (values["precision"], values["network resolution"], values["processing size parameter"]) == \
        ("fp32", "64x48", "auto")
    assert not graph.node_log_levels() & {Log.WARN, Log.ERROR, Log.FATAL}
    count, window_s = len(statuses), 1.0
    time.sleep(window_s)
    assert len(statuses) - count <= window_s / DIAGNOSTICS_PERIOD_S + 1


def test_prior_refreshes_and_shutdown_leaves_no_threads(make_graph):
    threads_before = {t.ident for t in threading.enumerate()}
    graph = make_graph(prior="embedded", refresh_every_n_frames=2, diagnostics_period_s=0.5)
    graph.listen("fused/image")
    graph.listen_status()
    assert any(t.name == PRIOR_THREAD_NAME for t in threading.enumerate())
    for index in range(4):
        graph.fuse(image(sec=1_700_000_800 + index))
    status = graph.latest_status(lambda s: s.prior_version >= 1)
    assert status.prior_backend == "embedded"
    assert graph.change_state(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    dcmif_threads = [t.name for t in threading.enumerate()
                     if t.name.startswith(WORKER_THREAD_NAME) or t.name == PRIOR_THREAD_NAME]
    assert not dcmif_threads, f"threads left after shutdown: {dcmif_threads}"
    graph.close()

    def leaked() -> list[str]:
        return [t.name for t in threading.enumerate()
                if t.ident not in threads_before and t.name not in LIBRARY_SINGLETON_THREADS]

    assert wait_until(lambda: not leaked(), WAIT_S / 4), f"leaked threads: {leaked()}"


# --- faults: the node never dies and never reports OK while it fuses nothing (issue 19) ---------------------

def unsupported_frame(sec: int, encoding: str = "rgb16") -> Image:
    return image(encoding, 16, 8, sec=sec, bytes_per_pixel=6)


def logged(graph: InProcessGraph, level: int, text: str) -> bool:
    return any(text in log.msg for log in graph.logs if log.level == level)


@pytest.mark.parametrize("loss_first", [True, False], ids=["loss-then-reject", "reject-then-loss"])
def test_a_rejected_frame_next_to_a_transport_loss_kills_nothing(make_graph, loss_first):
    """rclpy refuses two severities from one logging call site; both orders used to kill a thread."""
    graph = make_graph()
    graph.listen("fused/image")
    graph.listen_status()
    if loss_first:
        graph.node._on_frames_lost(300)  # what the middleware's message_lost event calls
    graph.publish(unsupported_frame(1_700_000_500))
    assert wait_until(lambda: logged(graph, Log.ERROR, "'rgb16'")), [log.msg for log in graph.logs]
    graph.node._on_frames_lost(5 if loss_first else 305)
    assert wait_until(lambda: logged(graph, Log.WARN, "lost in transport"))
    good = image("bgr8", 64, 48, sec=1_700_000_501)
    assert graph.fuse(good).header == good.header, "the worker must survive both problems"
    status = graph.latest_status(lambda s: s.frames_processed >= 1)
    assert (status.frames_rejected, status.frames_lost_in_transport) == (1, 305)
    assert status.frames_dropped == status.frames_rejected + status.frames_replaced


def test_two_workers_fuse_side_by_side_and_never_publish_back_in_time(make_graph, monkeypatch):
    """Two workers take frames; a frame fused after a later-arriving one was published is dropped (counted as
    replaced), so the outputs never go back in time."""
    graph = make_graph()
    assert graph.node._config.workers == 2 and len(graph.node._workers) == 2  # the auto choice on the CPU
    fused = graph.listen("fused/image")
    graph.listen_status()
    pipeline = graph.node._pipeline
    process, slow_started = pipeline.process, threading.Event()

    older, newer = image("bgr8", 64, 48, sec=1_700_000_650), image("bgr8", 64, 48, sec=1_700_000_651)

    def first_one_slow(frame, **wanted):
        if not slow_started.is_set():
            slow_started.set()  # and hold this frame until the other worker has published the next one
            wait_until(lambda: any(m.header.stamp == newer.header.stamp for m in fused))
        return process(frame, **wanted)

    monkeypatch.setattr(pipeline, "process", first_one_slow)
    graph.publish(older)
    assert wait_until(slow_started.is_set)
    assert graph.fuse(newer).header == newer.header
    status = graph.latest_status(lambda s: s.frames_replaced >= 1 and s.frames_processed >= 1)
    assert (status.frames_processed, status.frames_replaced) == (1, 1)
    assert [m.header.stamp for m in fused] == [newer.header.stamp]


def test_outputs_follow_a_camera_whose_stamps_jump_back(make_graph):
    """A bag replayed in a loop or a restarted driver: the order that counts is arrival, not the stamps."""
    graph = make_graph()
    graph.listen("fused/image")
    later, earlier = image("bgr8", 64, 48, sec=1_700_000_670), image("bgr8", 64, 48, sec=1_700_000_100)
    assert graph.fuse(later).header == later.header
    assert graph.fuse(earlier).header == earlier.header


def test_one_worker_when_asked(make_graph):
    graph = make_graph(inference_workers=1)
    assert len(graph.node._workers) == 1
    graph.listen("fused/image")
    frame = image("bgr8", 64, 48, sec=1_700_000_660)
    assert graph.fuse(frame).header == frame.header


def test_an_unexpected_worker_exception_costs_one_frame_not_the_worker(make_graph, monkeypatch):
    graph = make_graph()
    graph.listen("fused/image")
    graph.listen_status()
    wanted = graph.node._wanted_outputs
    faults = iter([KeyError("a bug outside inference")])

    def fails_once():
        fault = next(faults, None)
        if fault is not None:
            raise fault
        return wanted()

    monkeypatch.setattr(graph.node, "_wanted_outputs", fails_once)
    graph.publish(image("bgr8", 64, 48, sec=1_700_000_600))
    status = graph.latest_status(lambda s: "KeyError" in s.last_error)
    assert "the fusion worker lost a 'bgr8' 64x48 image" in status.last_error and status.frames_dropped == 1
    assert wait_until(lambda: logged(graph, Log.ERROR, "a bug outside inference"))
    good = image("bgr8", 64, 48, sec=1_700_000_601)
    assert graph.fuse(good).header == good.header


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the SystemExit below
def test_a_stopped_worker_turns_health_to_error_and_is_restarted(make_graph, monkeypatch):
    graph = make_graph()
    graph.listen("fused/image")
    statuses = graph.listen_status()
    diagnostics = graph.listen("/diagnostics", DiagnosticArray)
    fuse = graph.node._fuse

    def exits_once(*args):
        monkeypatch.setattr(graph.node, "_fuse", fuse)
        raise SystemExit  # what no `except Exception` catches: the thread ends silently

    monkeypatch.setattr(graph.node, "_fuse", exits_once)
    graph.publish(image("bgr8", 64, 48, sec=1_700_000_700))
    assert wait_until(lambda: any(s.level == FusionStatus.LEVEL_ERROR for s in statuses)), "status must say ERROR"
    error = next(s for s in statuses if s.level == FusionStatus.LEVEL_ERROR)
    assert wait_until(lambda: any(a.status[0].level == DiagnosticStatus.ERROR and "worker" in a.status[0].message
                                  for a in diagnostics))
    assert wait_until(lambda: logged(graph, Log.ERROR, "a fusion worker thread has stopped")), error
    good = image("bgr8", 64, 48, sec=1_700_000_701)
    assert graph.fuse(good).header == good.header, "the report timer restarts the worker"


def test_frames_arriving_and_none_fused_for_seconds_is_an_error(make_graph, monkeypatch):
    monkeypatch.setattr(health, "NO_OUTPUT_ERROR_S", 1.0)
    graph = make_graph()
    graph.listen("fused/image")
    statuses = graph.listen_status()
    diagnostics = graph.listen("/diagnostics", DiagnosticArray)
    deadline = time.monotonic() + 1.0 + 4 * DIAGNOSTICS_PERIOD_S
    sec = 1_700_000_800
    while time.monotonic() < deadline:
        graph.publish(unsupported_frame(sec))
        sec += 1
        time.sleep(0.05)
    assert wait_until(lambda: statuses[-1].level == FusionStatus.LEVEL_ERROR), statuses[-1]
    assert any("no frame fused for" in a.status[0].message and "'rgb16'" in a.status[0].message
               for a in diagnostics if a.status[0].level == DiagnosticStatus.ERROR)
    assert logged(graph, Log.ERROR, "status ERROR: no frame fused for")


def test_distinct_garbage_logs_one_line_per_kind_and_echoes_bounded_text(make_graph):
    graph = make_graph()
    graph.listen("fused/image")
    graph.listen_status()
    encodings = [f"garbage{index}" for index in range(40)] + ["x" * 1_000_000]
    for index, encoding in enumerate(encodings):
        graph.publish(unsupported_frame(1_700_000_900 + index, encoding))
        time.sleep(0.01)
    status = graph.latest_status(lambda s: s.frames_rejected + s.frames_replaced == len(encodings))
    assert "x" * 40 in status.last_error and len(status.last_error) < 1000, "a 1 MB encoding must not be echoed"
    rejected_lines = [log.msg for log in graph.logs if log.level == Log.ERROR and "dropped a" in log.msg]
    assert len(rejected_lines) == 1, f"one line per kind of problem per interval, got {len(rejected_lines)}"
    assert all(len(log.msg) < 1000 for log in graph.logs)


def test_an_image_over_max_input_pixels_is_refused_before_decoding(make_graph):
    graph = make_graph(max_input_pixels=64 * 48)
    graph.listen("fused/image")
    graph.listen_status()
    graph.publish(image("bgr8", 10_000, 10_000, sec=1_700_001_000, data=bytes(64)))
    status = graph.latest_status(lambda s: s.frames_rejected == 1)
    assert "10000x10000 = 100000000 pixels is over the limit of 3072 pixels (max_input_pixels)" in status.last_error
    good = image("bgr8", 64, 48, sec=1_700_001_001)
    assert graph.fuse(good).header == good.header, "an image at the limit passes"


def test_a_start_up_value_out_of_range_fails_in_one_line(capfd):
    assert node_main(["--ros-args", "-p", "processing_width:=-5"]) == 1
    err = capfd.readouterr().err
    assert "processing_width: -5 is outside the allowed range 0..8192" in err and "Traceback" not in err, err
