"""The node's small parts without a ROS graph: health levels, the one-frame slot, the problem log, runtime
parameter rules, the Fast DDS environment and the sample camera's frames."""
from __future__ import annotations

import dataclasses
import threading
import time

import cv2
import numpy as np
import pytest
import rclpy.logging
from dcmif_msgs.msg import FusionStatus
from rclpy.parameter import Parameter

from dcmif_ros.bounded_text import MAX_MESSAGE_CHARS, clip, quote
from dcmif_ros.ros.fastdds import LEGACY_PROFILE_ENV_VAR, PROFILE_ENV_VAR, fastdds_environment
from dcmif_ros.ros.frame_slot import LatestFrameSlot
from dcmif_ros.ros.frame_stats import FrameStats
from dcmif_ros.ros.health import (
    INPUT_STALE_AFTER_S,
    NO_OUTPUT_ERROR_S,
    EngineState,
    NodeReport,
    PriorState,
    WorkerState,
    assess,
)
from dcmif_ros.ros.problem_log import ProblemKind, ProblemLog
from dcmif_ros.ros.qos import plausible_loss
from dcmif_ros.ros.parameters import OutputSwitches, RuntimeSettings, runtime_change_problem
from dcmif_ros.sample_camera import SECONDS_PER_PHOTO, SampleFrames


def healthy_report(**changes) -> NodeReport:
    report = NodeReport(
        counts=FrameStats().snapshot(), input_rate_hz=15.0, output_rate_hz=15.0, new_rejected=0, new_failed=0,
        new_processed=15, new_lost=0, seconds_since_input=0.05,
        engine=EngineState("dcmif_tiny", "CPUExecutionProvider", "fp32", ""),
        prior=PriorState("embedded", 3, 1.0, 10, 3, "", None, 30.0),
        worker=WorkerState(alive=True, busy_s=None, seconds_since_served=0.05),
    )
    return dataclasses.replace(report, **changes)


@pytest.mark.parametrize(("changes", "level", "words"), [
    ({}, FusionStatus.LEVEL_OK, "fusing at 15.0 Hz"),
    ({"new_rejected": 2}, FusionStatus.LEVEL_WARN, "2 input frame(s) rejected"),
    ({"new_lost": 5}, FusionStatus.LEVEL_WARN, "fastdds_shm.xml"),
    ({"engine": EngineState("m", "CPUExecutionProvider", "fp32", "asked for 'cuda'")}, FusionStatus.LEVEL_WARN, "cuda"),
    ({"prior": PriorState("vlm:/x", 1, 90.0, 900, 1, "", 45.0, 30.0)}, FusionStatus.LEVEL_WARN, "running for 45 s"),
    ({"new_failed": 3, "new_processed": 0}, FusionStatus.LEVEL_ERROR, "inference failed on 3 frame(s)"),
    ({"new_failed": 1, "new_processed": 9}, FusionStatus.LEVEL_WARN, "inference failed on 1 frame(s)"),
    ({"seconds_since_input": None}, FusionStatus.LEVEL_STALE, "no input image received yet"),
    ({"seconds_since_input": INPUT_STALE_AFTER_S + 2}, FusionStatus.LEVEL_STALE, "no input image for 5 s"),
    ({"worker": WorkerState(False, None, 0.1)}, FusionStatus.LEVEL_ERROR, "worker thread has stopped"),
    ({"worker": WorkerState(True, NO_OUTPUT_ERROR_S + 1, NO_OUTPUT_ERROR_S + 1)}, FusionStatus.LEVEL_ERROR,
     "on one frame for 6 s"),
    ({"worker": WorkerState(True, None, NO_OUTPUT_ERROR_S + 2), "new_rejected": 30}, FusionStatus.LEVEL_ERROR,
     "no frame fused for 7 s while frames arrive"),
    ({"worker": WorkerState(True, None, NO_OUTPUT_ERROR_S + 2), "seconds_since_input": None},
     FusionStatus.LEVEL_STALE, "no input image received yet"),
])
def test_health_levels(changes, level, words):
    health = assess(healthy_report(**changes))
    assert health.level == level and words in health.message


def test_slot_keeps_only_the_newest_frame_and_reports_replacements():
    slot = LatestFrameSlot()
    assert slot.put("first") is False
    assert slot.put("second") is True
    taken = slot.take()
    assert taken.message == "second" and taken.taken_s >= taken.received_s
    slot.put("third")
    assert slot.close() is True, "a frame still waiting at close is reported (counted as dropped)"
    assert slot.take() is None


def test_slot_wakes_a_waiting_worker_on_close():
    slot = LatestFrameSlot()
    results = []
    worker = threading.Thread(target=lambda: results.append(slot.take()))
    worker.start()
    time.sleep(0.05)
    slot.close()
    worker.join(2.0)
    assert not worker.is_alive() and results == [None]


def test_the_transport_loss_hint_knows_whether_the_profile_is_loaded(monkeypatch):
    monkeypatch.delenv(PROFILE_ENV_VAR, raising=False)
    monkeypatch.delenv(LEGACY_PROFILE_ENV_VAR, raising=False)
    without = assess(healthy_report(new_lost=5)).message
    monkeypatch.setenv(PROFILE_ENV_VAR, "/opt/dcmif/fastdds_shm.xml")
    loaded = assess(healthy_report(new_lost=5)).message
    assert "load config/fastdds_shm.xml" in without
    assert "/opt/dcmif/fastdds_shm.xml is loaded" in loaded and "load config" not in loaded


class RecordingLogger:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def error(self, message: str) -> None:
        self.lines.append(("error", message))

    def warning(self, message: str) -> None:
        self.lines.append(("warning", message))


def test_problems_are_throttled_by_kind_never_by_text():
    logger = RecordingLogger()
    problems = ProblemLog(logger, interval_s=60.0)
    assert problems.report(ProblemKind.REJECTED_INPUT, "unsupported image encoding 'a'")
    for encoding in ("b", "c", "rgb16"):
        assert not problems.report(ProblemKind.REJECTED_INPUT, f"unsupported image encoding {encoding!r}")
    assert problems.report(ProblemKind.LOST_IN_TRANSPORT, "3 input frame(s) lost"), "another kind logs at once"
    assert logger.lines == [("error", "unsupported image encoding 'a'"), ("warning", "3 input frame(s) lost")]


def test_a_problem_says_how_many_like_it_were_suppressed():
    logger, now = RecordingLogger(), [100.0]
    problems = ProblemLog(logger, interval_s=5.0, clock=lambda: now[0])
    problems.report(ProblemKind.INFERENCE_FAILED, "x" * 10 * MAX_MESSAGE_CHARS)
    problems.report(ProblemKind.INFERENCE_FAILED, "second")
    problems.report(ProblemKind.INFERENCE_FAILED, "third")
    now[0] += 5.0
    problems.report(ProblemKind.INFERENCE_FAILED, "fourth")
    assert len(logger.lines[0][1]) < MAX_MESSAGE_CHARS + 40, "long text is clipped"
    assert logger.lines[1:] == [("error", "fourth (2 more of this kind since the last such line)")]


def test_both_severities_reach_one_rclpy_logger():
    """rclpy raises 'Logger severity cannot be changed between calls' when one call site logs at two."""
    problems = ProblemLog(rclpy.logging.get_logger("dcmif_problem_log_test"), interval_s=0.0)
    for kind in (ProblemKind.REJECTED_INPUT, ProblemKind.LOST_IN_TRANSPORT, ProblemKind.WORKER_FAULT):
        assert problems.report(kind, f"{kind.value} happened")


def test_text_from_inputs_is_bounded():
    assert clip("short") == "short"
    assert clip("y" * 1_000_000) == "y" * MAX_MESSAGE_CHARS + "... (1000000 characters)"
    assert quote("bgr8") == "'bgr8'" and quote("\n" * 100).startswith("'\\n") and len(quote("z" * 10**6)) < 80


def test_runtime_rules():
    current = RuntimeSettings(OutputSwitches(fused=True, pseudo_thermal=True, debug_gate=False, status=True), 30)
    period = [Parameter("refresh_every_n_frames", value=5)]
    assert runtime_change_problem(current, "embedded", period) is None
    assert "prior is 'none'" in runtime_change_problem(current, "none", period)
    all_off = [Parameter("publish_fused", value=False), Parameter("publish_pseudo_thermal", value=False)]
    assert "at least one" in runtime_change_problem(current, "embedded", all_off)
    changed = current.with_changes(period + [Parameter("publish_debug_gate", value=True)])
    assert changed.refresh_every_n_frames == 5 and changed.outputs.debug_gate and changed.outputs.fused


def test_fastdds_environment_adds_the_profile_but_respects_the_users():
    env = fastdds_environment({})
    assert env[PROFILE_ENV_VAR].endswith("config/fastdds_shm.xml") and env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
    assert LEGACY_PROFILE_ENV_VAR not in env, "Kilted's rmw warns that the legacy variable is deprecated"
    mine = {LEGACY_PROFILE_ENV_VAR: "/my/profile.xml", "RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert fastdds_environment(mine) == mine


def test_sample_frames_look_like_video():
    frames = SampleFrames(size=(640, 480), rate_hz=15.0)
    first, second, later = frames.frame(0), frames.frame(1), frames.frame(30)
    assert first.shape == (480, 640, 3) and first.dtype == np.uint8
    step = np.abs(first.astype(int) - second).mean()
    assert 0 < step < np.abs(first.astype(int) - later).mean(), "consecutive frames differ a little, later ones more"


def test_sample_frames_replay_the_photos_given(tmp_path):
    paths = []
    for index, value in enumerate((40, 200)):
        paths.append(tmp_path / f"scene{index}.png")
        cv2.imwrite(str(paths[-1]), np.full((120, 160, 3), value, np.uint8))
    frames = SampleFrames(size=(64, 48), rate_hz=1.0, photos=paths)
    seconds_per_photo = int(SECONDS_PER_PHOTO)
    assert frames.frame(0).shape == (48, 64, 3)
    assert (frames.frame(0) == 40).all() and (frames.frame(seconds_per_photo) == 200).all()


@pytest.mark.parametrize(("reported", "counted"), [(1, 1), (300, 300), (2147483647, 1), (-5, 1)])
def test_an_implausible_transport_loss_count_counts_as_one_frame(reported, counted):
    """rmw_fastrtps reported total_count_change 2147483647 after a frame over the shared-memory segment."""
    assert plausible_loss(reported) == counted
