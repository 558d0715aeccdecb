"""Recompute the FiLM prior every N processed frames without ever stalling the image path.

The inference path calls ``notify_frame`` after each processed frame and reads ``current`` before each
inference. Counting frames, not seconds, makes bag replay at any rate give the same refresh points.
Frames are numbered from 0; a refresh is due on frames 0, N, 2N, ...

* Asynchronous (live): a due frame is copied into a one-slot mailbox for a worker thread. If a refresh is
  still running the request is skipped; if one is still waiting it is replaced by the newer frame. Both are
  counted as skipped. ``notify_frame`` never waits for a computation.
* Synchronous (offline tools): the due frame is computed inline, so every N-th frame refreshes exactly.

A new prior replaces the old by one reference assignment of an immutable ``Prior``. A computation that
raises, returns something unusable, or takes longer than ``timeout_s`` changes nothing but ``last_error``
and the counters: the last good prior stays, and a late result is discarded. Python cannot interrupt a
running computation, so a timeout is detected when it returns; ``RefreshStats.in_flight_s`` shows one
that is still running.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dcmif_ros.prior.film_prior import Prior

LOG = logging.getLogger(__name__)

#: Name of the worker thread, so it can be told apart in thread dumps.
WORKER_THREAD_NAME = "dcmif-prior-refresher"

#: How much nicer (lower priority, Linux ``setpriority`` per thread) the refresh thread runs than the image path:
#: a refresh may take a few hundred ms of CPU, the image path must not wait for it on a saturated CPU.
PRIOR_NICENESS = 10

#: Makes a prior (γ, β, source text) from a visible BGR frame; the refresher stamps version and timing.
ComputePrior = Callable[[np.ndarray], Prior]


@dataclass(frozen=True)
class RefreshConfig:
    """``every_n_frames``: refresh cadence in processed frames; ``timeout_s``: longest acceptable compute.

    For reproducible offline runs use ``synchronous=True`` and leave ``timeout_s`` infinite, so that machine
    load cannot change which refreshes are applied.
    """

    every_n_frames: int
    timeout_s: float = math.inf
    synchronous: bool = False
    worker_niceness: int = 0  # added to the worker thread's niceness (0: same priority as the caller)
    # the worker thread in Linux's idle scheduling class (SCHED_IDLE): it gets only CPU time no other thread wants,
    # so a refresh never delays a frame, and on a saturated CPU refreshes come later instead (niceness then moot)
    worker_idle: bool = False

    def __post_init__(self) -> None:
        if self.every_n_frames < 1:
            raise ValueError(f"every_n_frames must be at least 1, got {self.every_n_frames}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")


@dataclass(frozen=True)
class RefreshStats:
    """Counters since construction; ``requested`` = ``refreshed + skipped + failed + timed_out`` once idle."""

    requested: int
    refreshed: int
    skipped: int
    failed: int
    timed_out: int
    last_latency_s: float | None
    in_flight_s: float | None


@dataclass(frozen=True)
class _Request:
    frame_index: int
    frame: np.ndarray


@dataclass
class _Counters:
    requested: int = 0
    refreshed: int = 0
    skipped: int = 0
    failed: int = 0
    timed_out: int = 0
    last_latency_s: float | None = None


class PriorRefresher:
    """Keeps ``current`` up to date from ``compute``; see the module docstring for the rules."""

    def __init__(self, compute: ComputePrior, config: RefreshConfig, initial: Prior):
        self._compute = compute
        self._config = config
        self._current = dataclasses.replace(initial, version=0)
        self._last_error: str | None = None
        self._frame_count = 0
        self._counters = _Counters()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: _Request | None = None
        self._running_since: float | None = None
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._worker_serving = False

    @property
    def current(self) -> Prior:
        """The prior in force; a plain attribute read, safe from any thread."""
        return self._current

    @property
    def last_error(self) -> str | None:
        """Why the latest refresh was not applied, or None when it succeeded (or none ran yet)."""
        return self._last_error

    @property
    def frame_count(self) -> int:
        """Processed frames notified so far (the index the next frame will get)."""
        return self._frame_count

    @property
    def stats(self) -> RefreshStats:
        with self._lock:
            counters = dataclasses.replace(self._counters)
            running_since = self._running_since
        in_flight = None if running_since is None else time.monotonic() - running_since
        return RefreshStats(**dataclasses.asdict(counters), in_flight_s=in_flight)

    @property
    def every_n_frames(self) -> int:
        return self._config.every_n_frames

    def set_every_n_frames(self, every_n_frames: int) -> None:
        """Change the cadence while running (the ROS node's ``refresh_every_n_frames`` parameter).

        Validated like ``RefreshConfig``; applies from the next processed frame, which keeps its index.
        """
        self._config = dataclasses.replace(self._config, every_n_frames=every_n_frames)

    def start(self) -> None:
        """Start (or, after ``stop``, restart) the worker in asynchronous mode; synchronous mode needs no thread."""
        if self._config.synchronous:
            return
        with self._changed:
            self._stopping = False
            if self._worker_serving:  # still running, e.g. a stop that timed out: it keeps serving
                return
            self._worker_serving = True
            self._worker = threading.Thread(target=self._serve, name=WORKER_THREAD_NAME, daemon=True)
        self._worker.start()

    def notify_frame(self, frame_bgr: np.ndarray) -> None:
        """Count one processed frame; on every N-th, refresh from it. Safe from several inference workers."""
        with self._lock:
            frame_index = self._frame_count
            self._frame_count += 1
        if frame_index % self._config.every_n_frames:
            return
        if self._config.synchronous:
            with self._lock:
                self._counters.requested += 1
            self._refresh(_Request(frame_index, frame_bgr))
            return
        with self._changed:
            self._counters.requested += 1
            if self._stopping or self._running_since is not None:
                self._counters.skipped += 1
                return
            if self._pending is not None:
                self._counters.skipped += 1  # the older waiting frame is superseded by this one
            self._pending = _Request(frame_index, np.array(frame_bgr, copy=True))
            self._changed.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no refresh is waiting or running (e.g. at the end of an offline run); False on timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._pending is None and self._running_since is None, timeout=timeout_s
            )

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the worker; a waiting request is dropped. False if a computation is still running after the wait."""
        with self._changed:
            self._stopping = True
            if self._pending is not None:
                self._counters.skipped += 1
                self._pending = None
            self._changed.notify_all()
        if self._worker is not None:
            self._worker.join(timeout_s)
            if self._worker.is_alive():
                LOG.warning("prior refresher: a computation was still running %.1f s after stop", timeout_s)
                return False
            self._worker = None
        return True

    def __enter__(self) -> PriorRefresher:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _serve(self) -> None:
        if self._config.worker_niceness:
            lower_thread_priority(self._config.worker_niceness)
        if self._config.worker_idle:
            run_thread_when_idle()
        while (request := self._take_request()) is not None:
            try:
                self._refresh(request)
            finally:
                with self._changed:
                    self._running_since = None
                    self._changed.notify_all()

    def _take_request(self) -> _Request | None:
        """Wait for the next request and mark it running; None when stopping, which ends the worker."""
        with self._changed:
            self._changed.wait_for(lambda: self._pending is not None or self._stopping)
            if self._stopping:
                self._worker_serving = False
                return None
            request, self._pending = self._pending, None
            self._running_since = time.monotonic()
            return request

    def _refresh(self, request: _Request) -> None:
        started = time.monotonic()
        try:
            result = self._compute(request.frame)
        except Exception as exc:  # any failure of the model must leave the image path running
            self._reject(request, f"{type(exc).__name__}: {exc}", timed_out=False)
            return
        latency = time.monotonic() - started
        if latency > self._config.timeout_s:
            self._reject(request, f"took {latency:.3f} s, over the {self._config.timeout_s:g} s timeout; "
                                  "result discarded", timed_out=True)
            return
        problem = self._problem_with(result)
        if problem:
            self._reject(request, problem, timed_out=False)
            return
        self._current = dataclasses.replace(
            result, version=self._current.version + 1, frame_index=request.frame_index,
            latency_s=latency, created_s=time.monotonic(),
        )
        self._last_error = None
        with self._lock:
            self._counters.refreshed += 1
            self._counters.last_latency_s = latency

    def _problem_with(self, result: object) -> str | None:
        if not isinstance(result, Prior):
            return f"compute returned {type(result).__name__}, expected a Prior"
        if result.gamma.shape != self._current.gamma.shape:
            return f"compute returned {result.num_atoms} FiLM values, expected {self._current.num_atoms}"
        return None

    def _reject(self, request: _Request, reason: str, timed_out: bool) -> None:
        message = f"prior refresh at frame {request.frame_index} failed: {reason}"
        LOG.warning("%s", message)
        self._last_error = message
        with self._lock:
            if timed_out:
                self._counters.timed_out += 1
            else:
                self._counters.failed += 1


def lower_thread_priority(niceness: int) -> None:
    """Raise the calling thread's niceness by ``niceness`` (Linux: per thread); elsewhere, or if refused, a
    logged no-op, since it only changes how the thread shares the CPU."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                       os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + niceness)
    except (AttributeError, OSError) as exc:
        LOG.info("prior refresher: thread priority unchanged (%s)", exc)


def run_thread_when_idle() -> None:
    """Move the calling thread to the idle scheduling class (Linux: per thread); elsewhere, or if refused, a
    logged no-op, since it only changes how the thread shares the CPU."""
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as exc:
        LOG.info("prior refresher: thread scheduling unchanged (%s)", exc)
