"""What happened to every input frame, and how long the recent ones took: the numbers behind status and
/diagnostics.

Written from several threads (the image callback counts arrivals, each worker counts its frames' outcomes) and
read by the report timer, hence the lock. Counters start at zero on configure and only grow, so
``processed + dropped <= received`` always holds; the difference is the frames in flight. Each worker also
marks when it takes a frame, and all of them when they last served one, so health can tell a stuck or starved
worker.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time

LATENCY_WINDOW_FRAMES = 100
"""Recent frames the latency percentiles are taken over."""


@dataclass(frozen=True)
class FrameCounts:
    received: int
    processed: int
    stale: int  # replaced by a newer frame before a worker took it, fused after a newer one was published, or
    # left waiting at deactivation
    rejected: int  # undecodable or invalid images
    failed: int  # inference raised
    idle: int  # skipped: no subscriber on any image output
    lost_in_transport: int  # the middleware reported samples lost before they reached the callback
    inference_ms_last: float | None  # the engine's run, its pre- and post-processing included
    inference_ms_median: float | None
    inference_ms_p95: float | None
    overhead_ms_median: float | None  # what the node adds to inference: decoding, encoding, publishing
    overhead_ms_p95: float | None
    node_latency_ms_median: float | None  # callback → outputs published: waiting for the worker + the above
    node_latency_ms_p95: float | None
    last_input_stamp: Time | None  # of the last processed frame
    last_frame_id: str  # of the last received frame
    last_received_s: float | None  # time.monotonic() of the last arrival
    last_error: str
    last_served_s: float | None  # time.monotonic() the worker last published a frame or skipped it as idle
    busy_since_s: float | None  # time.monotonic() the longest-busy worker took its frame; None while all wait

    @property
    def dropped(self) -> int:
        return self.stale + self.rejected + self.failed + self.idle


class FrameStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received = self._processed = self._stale = 0
        self._rejected = self._failed = self._idle = self._lost = 0
        self._inference_ms: deque[float] = deque(maxlen=LATENCY_WINDOW_FRAMES)
        self._overhead_ms: deque[float] = deque(maxlen=LATENCY_WINDOW_FRAMES)
        self._node_latency_ms: deque[float] = deque(maxlen=LATENCY_WINDOW_FRAMES)
        self._last_input_stamp: Time | None = None
        self._last_frame_id = ""
        self._last_received_s: float | None = None
        self._last_error = ""
        self._last_served_s: float | None = None
        self._busy_since_s: dict[int, float] = {}  # worker thread ident → time.monotonic() it took its frame

    def count_received(self, frame_id: str, replaced_one: bool) -> None:
        with self._lock:
            self._received += 1
            self._stale += replaced_one
            self._last_frame_id = frame_id
            self._last_received_s = time.monotonic()

    def count_stale(self) -> None:
        with self._lock:
            self._stale += 1

    def start_frame(self, taken_s: float) -> None:
        """The calling worker took a frame at ``taken_s``; every count_* of its outcome (from the same worker
        thread) ends it."""
        with self._lock:
            self._busy_since_s[threading.get_ident()] = taken_s

    def end_frame(self) -> None:
        """The calling worker is done with its frame, whatever became of it (its count_* already ended it,
        unless the thread is ending)."""
        with self._lock:
            self._end_frame()

    def _end_frame(self) -> None:
        self._busy_since_s.pop(threading.get_ident(), None)

    def count_processed(self, received_s: float, taken_s: float, inference_ms: float, stamp: Time) -> None:
        """One frame published: it arrived at ``received_s`` and the worker took it at ``taken_s``."""
        now = time.monotonic()
        with self._lock:
            self._end_frame()
            self._last_served_s = now
            self._processed += 1
            self._inference_ms.append(inference_ms)
            self._overhead_ms.append((now - taken_s) * 1e3 - inference_ms)
            self._node_latency_ms.append((now - received_s) * 1e3)
            self._last_input_stamp = stamp

    def count_rejected(self, reason: str) -> None:
        with self._lock:
            self._end_frame()
            self._rejected += 1
            self._last_error = reason

    def count_failed(self, reason: str) -> None:
        with self._lock:
            self._end_frame()
            self._failed += 1
            self._last_error = reason

    def count_idle(self) -> None:
        with self._lock:
            self._end_frame()
            self._last_served_s = time.monotonic()
            self._idle += 1

    def count_superseded(self) -> None:
        """The calling worker's frame was fused after a newer one was published: dropped, as a replaced frame
        is (the outputs' stamps never go back in time)."""
        with self._lock:
            self._end_frame()
            self._last_served_s = time.monotonic()
            self._stale += 1

    def count_lost(self, count: int) -> None:
        with self._lock:
            self._lost += count

    def snapshot(self) -> FrameCounts:
        with self._lock:
            inference = np.array(self._inference_ms)
            overhead = np.array(self._overhead_ms)
            latency = np.array(self._node_latency_ms)
            return FrameCounts(
                received=self._received, processed=self._processed, stale=self._stale,
                rejected=self._rejected, failed=self._failed, idle=self._idle, lost_in_transport=self._lost,
                inference_ms_last=float(inference[-1]) if inference.size else None,
                inference_ms_median=_percentile(inference, 50), inference_ms_p95=_percentile(inference, 95),
                overhead_ms_median=_percentile(overhead, 50), overhead_ms_p95=_percentile(overhead, 95),
                node_latency_ms_median=_percentile(latency, 50), node_latency_ms_p95=_percentile(latency, 95),
                last_input_stamp=self._last_input_stamp, last_frame_id=self._last_frame_id,
                last_received_s=self._last_received_s, last_error=self._last_error,
                last_served_s=self._last_served_s, busy_since_s=min(self._busy_since_s.values(), default=None),
            )


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None
