"""Log the node's recurring problems: once per interval per kind of problem, each kind at its own severity.

A camera sending the same bad frame 30 times a second, or a publisher sending endless distinct garbage (301
random encodings), logs one line per kind per interval, not one per frame. The key is the kind, never the
text, so nothing an input controls can grow the log or the throttle's memory; the text is clipped
(``dcmif_ros.bounded_text``).

rclpy refuses to log at two severities from one call site (``ValueError: Logger severity cannot be changed
between calls``: it caches the severity per calling line), so each severity has its own line below.
"""
from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

from rclpy.impl.rcutils_logger import RcutilsLogger

from dcmif_ros.bounded_text import clip


class Severity(enum.Enum):
    WARNING = "warning"
    ERROR = "error"


class ProblemKind(enum.Enum):
    """What went wrong; all are errors except frames lost in transport, a link problem the node survives."""

    REJECTED_INPUT = "rejected input"  # a frame the node cannot use: the sender's fault
    INFERENCE_FAILED = "inference failed"
    WORKER_FAULT = "worker fault"  # an unexpected exception in the fusion worker, outside inference
    HEALTH_ERROR = "health error"  # status and /diagnostics turned ERROR
    LOST_IN_TRANSPORT = "lost in transport"

    @property
    def severity(self) -> Severity:
        return Severity.WARNING if self is ProblemKind.LOST_IN_TRANSPORT else Severity.ERROR


class ProblemLog:
    """Thread-safe: the image worker and the executor's event callbacks both report problems."""

    def __init__(self, logger: RcutilsLogger, interval_s: float, clock: Callable[[], float] = time.monotonic):
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_logged_s: dict[ProblemKind, float] = {}
        self._suppressed: dict[ProblemKind, int] = dict.fromkeys(ProblemKind, 0)

    def report(self, kind: ProblemKind, message: str) -> bool:
        """Log ``message`` unless ``kind`` was logged within the interval; True if it was logged."""
        now = self._clock()
        with self._lock:
            last = self._last_logged_s.get(kind)
            if last is not None and now - last < self._interval_s:
                self._suppressed[kind] += 1
                return False
            suppressed, self._suppressed[kind] = self._suppressed[kind], 0
            self._last_logged_s[kind] = now
        text = clip(message)
        if suppressed:
            text += f" ({suppressed} more of this kind since the last such line)"
        if kind.severity is Severity.ERROR:
            self._logger.error(text)
        else:
            self._logger.warning(text)
        return True
