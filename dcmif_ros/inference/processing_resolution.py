"""The resolution the network runs at for a frame: the camera's own, an explicit one, or ``auto``.

``auto`` runs a frame larger than ``AUTO_PIXELS`` (320×240) at about that many pixels, keeping the frame's aspect
ratio and rounding each side to the model's pad multiple (so no padding is added): on the CPU provider for every
model, which is what keeps a 2-core CPU at a 15 Hz camera's rate, and on a GPU too for a model that infers the
infrared from the visible image. That model sees objects at the scale of its training crops there, and what it
adds, warmth, is smooth: at 320×240 night people stand out in its fused image in 53 % of cases and it beats the
visible image on all six pooled metrics, at the camera's 640×480 31 % and MI −0.35 % (benchmarks/results/
warm_objects*.md). Dual-modal models run at the camera's size on a GPU: a real infrared image has detail of its
own. Outputs always keep the camera's size: the engine upsamples the network's change to the luminance and adds it
to the full-resolution visible luminance.

Measured for the tiny model (``benchmarks/results/bench_cpu*.json``, 2 cores): 640×480 at native size 6.1
frames/s, at 320×240 23.3 frames/s (the edge-map model of the first rounds).
"""
from __future__ import annotations

import math

AUTO = "auto"
AUTO_PIXELS = 320 * 240
"""Network pixels per frame that ``auto`` keeps to where it scales a frame down (320×240)."""

ProcessingSize = tuple[int, int] | str | None
"""(width, height); ``AUTO``; or None for the camera's own size."""


def auto_size(width: int, height: int, provider: str, multiple: int, min_side: int = 0,
              infers_infrared: bool = False) -> tuple[int, int] | None:
    """``auto``'s network (width, height) for a ``width``×``height`` frame on ``provider`` (short name: cpu,
    cuda, tensorrt) for a model that infers the infrared (``infers_infrared``) or fuses a real one; None where
    the network runs at the frame's own size."""
    if (provider != "cpu" and not infers_infrared) or width * height <= AUTO_PIXELS:
        return None
    scale = math.sqrt(AUTO_PIXELS / (width * height))
    floor = max(multiple, -(-min_side // multiple) * multiple)

    def side(length: int) -> int:
        return max(floor, round(length * scale / multiple) * multiple)

    return side(width), side(height)


def network_size(processing_size: ProcessingSize, width: int, height: int, provider: str, multiple: int,
                 min_side: int = 0, infers_infrared: bool = False) -> tuple[int, int]:
    """The (width, height) the network runs at for a ``width``×``height`` frame; an explicit size wins."""
    if processing_size == AUTO:
        return auto_size(width, height, provider, multiple, min_side, infers_infrared) or (width, height)
    if processing_size is None:
        return width, height
    if isinstance(processing_size, str):
        raise ValueError(f"processing size {processing_size!r}: expected {AUTO!r}, (width, height) or None")
    return int(processing_size[0]), int(processing_size[1])


def describe(processing_size: ProcessingSize) -> str:
    """How a processing size was asked for, as status and logs show it."""
    if processing_size is None:
        return "native"
    if processing_size == AUTO:
        return AUTO
    return f"{processing_size[0]}x{processing_size[1]}"
