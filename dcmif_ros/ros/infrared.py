"""dcmif_node's optional real-infrared input: thermal frames paired with visible ones by stamp, and the
dual-modal engine that fuses a pair.

The image callback only buffers the message (decoding waits until a visible frame claims it, in the worker).
Pairing and the fall-back rule are :class:`dcmif_ros.pairing.StampPairer`'s, in header-stamp time.
"""
from __future__ import annotations

import time

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.time import Time as RosTime
from sensor_msgs.msg import Image

from dcmif_ros.inference.engine import EngineError, FusionEngine, FusionResult
from dcmif_ros.inference.export import KIND_DUAL
from dcmif_ros.pairing import DUAL, StampPairer
from dcmif_ros.ros.conversions import decode_infrared, describe_input
from dcmif_ros.ros.parameters import InfraredConfig, NodeConfig

PARTNER_POLL_S = 0.005
"""How often the worker looks again for an infrared frame that has not arrived yet."""

_NS_PER_S = 1e9


def stamp_seconds(stamp: Time) -> float:
    return RosTime.from_msg(stamp).nanoseconds / _NS_PER_S


class InfraredInput:
    def __init__(self, config: NodeConfig):
        ir: InfraredConfig = config.ir
        self.engine = FusionEngine(ir.dual_model_path, provider=config.provider, precision=config.precision,
                                   allow_cpu_fallback=config.allow_cpu_fallback,
                                   processing_size=config.processing_size, threads=config.threads,
                                   spin_wait=False)
        if self.engine.kind != KIND_DUAL:
            raise EngineError(f"dual_model_path {ir.dual_model_path} is a {self.engine.kind} model, not a dual-modal "
                              f"one (visible + infrared)")
        self.pairer = StampPairer(ir.pairing_tolerance_s, ir.timeout_s)

    def add(self, message: Image) -> None:
        """Image callback: buffer the frame for the visible frames to pair with."""
        self.pairer.add_ir(stamp_seconds(message.header.stamp), message)

    @property
    def live(self) -> bool:
        """Infrared frames keep arriving (newest no older than ir_timeout_s before the newest visible stamp)."""
        return self.pairer.mode == DUAL

    def partner(self, stamp: Time) -> Image | None:
        """The infrared message paired with a visible ``stamp``, or None; while the thermal camera is live, a
        partner still in transit is waited for up to the pairing tolerance (the cameras' stamps agree that well)."""
        seconds = stamp_seconds(stamp)
        deadline = time.monotonic() + self.pairer.tolerance_s
        while (found := self.pairer.match(seconds)) is None and self.live and time.monotonic() < deadline:
            time.sleep(PARTNER_POLL_S)
        return found

    def fuse(self, frame: np.ndarray, partner: Image, want_gate: bool) -> tuple[FusionResult, np.ndarray]:
        """(result, the infrared registered to ``frame``); ValueError names an infrared frame that cannot be used."""
        try:
            infrared = decode_infrared(partner, frame.shape[:2])
        except ValueError as exc:
            raise ValueError(f"its infrared partner ({describe_input(partner)}) is unusable: {exc}") from None
        return self.engine.run_dual(frame, infrared, want_gate=want_gate), infrared
