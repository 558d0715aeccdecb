"""The hand-over between the image callback and the inference workers: a one-frame mailbox.

The callback only stores the newest message (microseconds, never waits for inference or the prior); a
frame not yet taken by a worker is replaced and reported as dropped. So a free worker always processes
the newest frame and the backlog can never exceed one frame, whatever the camera rate. Frames are numbered
in arrival order, so the workers can publish in that order whatever the stamps do (a bag replayed in a loop).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class PendingFrame:
    message: Any
    received_s: float  # time.monotonic() when the callback stored it
    sequence: int = 0  # arrival order: later frames have larger numbers, whatever their stamps
    taken_s: float = 0.0  # time.monotonic() when a worker took it


class LatestFrameSlot:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._pending: PendingFrame | None = None
        self._closed = False
        self._arrivals = 0

    def put(self, message: Any) -> bool:
        """Store ``message`` for the workers; True if it replaced a frame no worker took."""
        with self._changed:
            replaced = self._pending is not None
            self._arrivals += 1
            self._pending = PendingFrame(message, time.monotonic(), self._arrivals)
            self._changed.notify()
            return replaced

    def take(self) -> PendingFrame | None:
        """Wait for the next frame; None once closed (a worker's signal to return)."""
        with self._changed:
            self._changed.wait_for(lambda: self._pending is not None or self._closed)
            if self._closed:
                return None
            pending, self._pending = self._pending, None
            return replace(pending, taken_s=time.monotonic())

    def close(self) -> bool:
        """Wake the workers for good; True if a frame was still waiting (it is dropped)."""
        with self._changed:
            self._closed = True
            dropped, self._pending = self._pending is not None, None
            self._changed.notify_all()
            return dropped
