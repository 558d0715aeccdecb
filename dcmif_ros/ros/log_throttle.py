"""Log a recurring problem once per interval, per kind of problem.

rclpy's ``throttle_duration_sec`` throttles per call site, so after one bad frame a different problem would
stay silent for the whole interval. Here the key is the message with its numbers masked: a camera sending
the same bad frame 30 times a second logs once per interval, while a new kind of problem logs at once.
"""
from __future__ import annotations

import re
import time

_NUMBER = re.compile(r"\d+")
MAX_TRACKED_KINDS = 64
"""Bounds memory when a publisher sends endless distinct garbage (e.g. random encoding names)."""


class KeyedThrottle:
    def __init__(self, interval_s: float):
        self._interval_s = interval_s
        self._last_logged_s: dict[str, float] = {}

    def should_log(self, message: str) -> bool:
        key = _NUMBER.sub("#", message)
        now = time.monotonic()
        last = self._last_logged_s.get(key)
        if last is not None and now - last < self._interval_s:
            return False
        if len(self._last_logged_s) >= MAX_TRACKED_KINDS:
            self._last_logged_s = {k: t for k, t in self._last_logged_s.items() if now - t < self._interval_s}
        self._last_logged_s[key] = now
        return True
