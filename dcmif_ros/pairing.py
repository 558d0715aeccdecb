"""Pair visible frames with infrared frames by timestamp, for a node with an optional thermal camera.

Two cameras never trigger together, so each visible frame takes the infrared frame nearest in time, if one
lies within ``tolerance_s``. Whether a thermal camera is there at all is a separate question: the pairer is in
``dual`` mode while infrared frames keep arriving (the newest one no older than ``ir_timeout_s`` before the
latest visible stamp), and falls back to ``vis_only`` (DCMIF's inferred infrared) when they stop. A visible
frame in dual mode may still find no partner (e.g. a dropped infrared frame); the caller decides what to do
with that frame (fuse it visible-only, or skip it).

Pure Python, no ROS: stamps are seconds (``header.stamp`` as a float). Thread-safe, because image callbacks
may run on different executor threads.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Any

VIS_ONLY = "vis_only"
DUAL = "dual"
MAX_BUFFERED = 64  # infrared frames kept at most, whatever the rates


@dataclass(order=True)
class _Stamped:
    stamp: float
    image: Any = field(compare=False)


class StampPairer:
    """Buffers infrared frames and matches visible stamps to the nearest one within ``tolerance_s``."""

    def __init__(self, tolerance_s: float, ir_timeout_s: float, max_buffered: int = MAX_BUFFERED):
        if tolerance_s < 0 or ir_timeout_s <= 0 or max_buffered < 1:
            raise ValueError(f"need tolerance_s >= 0, ir_timeout_s > 0 and max_buffered >= 1, got {tolerance_s}, "
                             f"{ir_timeout_s} and {max_buffered}")
        self.tolerance_s, self.ir_timeout_s, self.max_buffered = tolerance_s, ir_timeout_s, max_buffered
        self._frames: list[_Stamped] = []  # sorted by stamp
        self._latest_vis: float | None = None
        self._lock = threading.Lock()

    def add_ir(self, stamp: float, image: Any) -> None:
        """Buffer an infrared frame (arrival order need not be stamp order); old frames are dropped."""
        with self._lock:
            bisect.insort(self._frames, _Stamped(float(stamp), image))
            horizon = self._frames[-1].stamp - self.ir_timeout_s - self.tolerance_s
            keep_from = bisect.bisect_left(self._frames, _Stamped(horizon, None))
            del self._frames[: max(keep_from, len(self._frames) - self.max_buffered)]

    def match(self, vis_stamp: float) -> Any | None:
        """The infrared image nearest to ``vis_stamp`` within the tolerance (the earlier one on a tie), or None."""
        vis_stamp = float(vis_stamp)
        with self._lock:
            self._latest_vis = vis_stamp if self._latest_vis is None else max(self._latest_vis, vis_stamp)
            index = bisect.bisect_left(self._frames, _Stamped(vis_stamp, None))
            candidates = self._frames[max(index - 1, 0): index + 1]
            if not candidates:
                return None
            nearest = min(candidates, key=lambda frame: (abs(frame.stamp - vis_stamp), frame.stamp))
            return nearest.image if abs(nearest.stamp - vis_stamp) <= self.tolerance_s else None

    @property
    def mode(self) -> str:
        """``dual`` while infrared keeps arriving (relative to the latest visible stamp), else ``vis_only``."""
        with self._lock:
            if not self._frames:
                return VIS_ONLY
            reference = self._frames[-1].stamp if self._latest_vis is None else self._latest_vis
            return DUAL if reference - self._frames[-1].stamp <= self.ir_timeout_s else VIS_ONLY
