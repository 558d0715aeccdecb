"""dcmif_node fuzzed across processes: a few hundred malformed images interleaved with valid frames and
transport losses (dcmif_ros.ros.fuzz_run). The node must live, fuse every valid frame it was given time for,
count every frame it received, keep its memory and its log bounded, and report health truthfully.

``DCMIF_FUZZ_MESSAGES=1000`` makes this the soak run (benchmarks/node_fuzz.py runs it with a report).
"""
from __future__ import annotations

import os

import pytest
from dcmif_msgs.msg import FusionStatus

from dcmif_ros.ros.fuzz_run import FuzzConfig, run_fuzz
from node_harness import LOCALHOST_ONLY, private_domain_id, unique_namespace

MESSAGES = int(os.environ.get("DCMIF_FUZZ_MESSAGES", "300"))
RSS_GROWTH_BOUND_MB = 400.0  # 115-190 MB measured, after 36 MB frames arrived; a 10000x10000 PNG alone cost
# 4.3 GB before the pixel limit
PEAK_RSS_BOUND_MB = 1500.0
LOG_LINES_PER_MINUTE_BOUND = 60.0  # one line per kind of problem per 5 s would be at most 12 per kind
LONGEST_LOG_LINE_BOUND = 1000  # a 1 MB encoding is sent, and must not be echoed


@pytest.fixture(scope="module")
def fuzzed(random_tiny_onnx, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**LOCALHOST_ONLY, "ROS_DOMAIN_ID": str(private_domain_id(salt=89))}.items():
            patch.setenv(name, value)
        return run_fuzz(FuzzConfig(random_tiny_onnx, tmp_path_factory.mktemp("fuzz"), messages=MESSAGES,
                                   namespace=unique_namespace()))


def test_the_node_lives_through_the_fuzz_and_stops_cleanly(fuzzed):
    assert fuzzed.node_alive and fuzzed.node_exit_status == 0, fuzzed.summary()
    malformed = sum(count for kind, count in fuzzed.sent.items() if kind not in ("valid", "warm-up", "oversize"))
    assert malformed >= MESSAGES * 0.6 and fuzzed.oversize_sent >= 1


def test_every_valid_frame_is_fused(fuzzed):
    assert fuzzed.valid_sent >= MESSAGES * 0.1 and fuzzed.valid_fused == fuzzed.valid_sent, fuzzed.summary()
    processed = fuzzed.final_status["frames_processed"]
    assert fuzzed.valid_fused <= processed <= fuzzed.valid_fused + fuzzed.sent["warm-up"]


def test_every_received_frame_is_counted(fuzzed):
    status = fuzzed.final_status
    assert status["frames_processed"] + status["frames_dropped"] == status["frames_received"]
    assert status["frames_dropped"] == status["frames_rejected"] + status["frames_replaced"], "nothing failed"
    assert status["frames_rejected"] >= 0.8 * (status["frames_received"] - status["frames_processed"])
    assert 1 <= status["frames_lost_in_transport"] <= fuzzed.oversize_sent + fuzzed.sent["valid"], status


def test_memory_and_log_stay_bounded(fuzzed):
    assert fuzzed.rss_mb_end - fuzzed.rss_mb_start < RSS_GROWTH_BOUND_MB, fuzzed.summary()
    assert fuzzed.rss_mb_peak < PEAK_RSS_BOUND_MB, fuzzed.summary()
    assert fuzzed.log_lines_per_minute < LOG_LINES_PER_MINUTE_BOUND and fuzzed.longest_log_line < LONGEST_LOG_LINE_BOUND
    assert len(fuzzed.final_status["last_error"]) < LONGEST_LOG_LINE_BOUND


def test_health_says_error_while_nothing_is_fused_and_recovers(fuzzed):
    assert FusionStatus.LEVEL_WARN in fuzzed.levels_seen, "rejected frames make the node WARN"
    assert fuzzed.error_while_starved, f"only bad frames for seconds must be an ERROR: {fuzzed.levels_seen}"
    assert fuzzed.level_after_recovery in (FusionStatus.LEVEL_OK, FusionStatus.LEVEL_WARN)
