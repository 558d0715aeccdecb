"""StampPairer: nearest infrared frame within the tolerance, dual/vis-only mode, bounded buffer."""
from __future__ import annotations

import threading

import pytest

from dcmif_ros.pairing import DUAL, VIS_ONLY, StampPairer

TOLERANCE_S = 0.02
TIMEOUT_S = 0.5


@pytest.fixture()
def pairer() -> StampPairer:
    return StampPairer(TOLERANCE_S, TIMEOUT_S)


def test_no_infrared_means_visible_only(pairer):
    assert pairer.mode == VIS_ONLY
    assert pairer.match(10.0) is None
    assert pairer.mode == VIS_ONLY


def test_nearest_frame_within_tolerance_is_matched(pairer):
    for stamp in (10.00, 10.033, 10.066):
        pairer.add_ir(stamp, f"ir@{stamp}")
    assert pairer.match(10.030) == "ir@10.033"
    assert pairer.match(10.060) == "ir@10.066"
    assert pairer.match(10.0) == "ir@10.0"
    assert pairer.mode == DUAL


def test_frames_outside_the_tolerance_are_not_matched(pairer):
    pairer.add_ir(10.0, "a")
    pairer.add_ir(10.1, "b")
    assert pairer.match(10.05) is None  # 50 ms from both
    assert pairer.match(10.1 + TOLERANCE_S * 0.99) == "b"
    assert pairer.match(10.1 + TOLERANCE_S * 1.01) is None


def test_a_tie_takes_the_earlier_frame(pairer):
    pairer.add_ir(10.00, "earlier")
    pairer.add_ir(10.02, "later")
    assert pairer.match(10.01) == "earlier"


def test_out_of_order_infrared_is_sorted(pairer):
    for stamp in (10.2, 10.0, 10.1):
        pairer.add_ir(stamp, stamp)
    assert [pairer.match(s) for s in (10.0, 10.1, 10.2)] == [10.0, 10.1, 10.2]


def test_mode_falls_back_when_infrared_stops_and_recovers(pairer):
    pairer.add_ir(10.0, "ir")
    assert pairer.match(10.0) == "ir" and pairer.mode == DUAL
    pairer.match(10.0 + TIMEOUT_S * 0.9)
    assert pairer.mode == DUAL
    assert pairer.match(10.0 + TIMEOUT_S * 1.1) is None
    assert pairer.mode == VIS_ONLY
    pairer.add_ir(10.0 + TIMEOUT_S * 1.1, "back")
    assert pairer.mode == DUAL


def test_old_frames_are_dropped_and_the_buffer_is_bounded():
    pairer = StampPairer(TOLERANCE_S, TIMEOUT_S, max_buffered=8)
    pairer.add_ir(0.0, "old")
    pairer.add_ir(10.0, "new")
    assert pairer.match(0.0) is None  # older than the timeout behind the newest frame: gone
    for i in range(100):
        pairer.add_ir(20.0 + i * 1e-3, i)
    assert len(pairer._frames) == 8
    assert pairer.match(20.099) == 99


def test_concurrent_callbacks_do_not_corrupt_the_buffer(pairer):
    def feed(offset: float) -> None:
        for i in range(500):
            pairer.add_ir(offset + i * 1e-3, i)
            pairer.match(offset + i * 1e-3)

    threads = [threading.Thread(target=feed, args=(k * 1e-4,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps = [frame.stamp for frame in pairer._frames]
    assert stamps == sorted(stamps) and len(stamps) <= pairer.max_buffered


@pytest.mark.parametrize("tolerance,timeout,buffered", [(-0.1, 1.0, 8), (0.1, 0.0, 8), (0.1, 1.0, 0)])
def test_bad_settings_are_refused(tolerance, timeout, buffered):
    with pytest.raises(ValueError):
        StampPairer(tolerance, timeout, buffered)
