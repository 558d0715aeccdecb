"""The resolution the network runs at for a frame: the camera's own, an explicit one, or ``auto``.

``auto`` is what keeps a 2-core CPU at a 15 Hz camera's rate: on the CPU provider a frame larger than
``CPU_AUTO_PIXELS`` (320×240) runs the network at about that many pixels, keeping the frame's aspect ratio and
rounding each side to the model's pad multiple (so no padding is added); on a GPU provider the network runs at
the camera's size. Outputs always keep the camera's size: the engine upsamples the network's change to the
luminance and adds it to the full-resolution visible luminance.

Measured for the tiny model (``benchmarks/results/bench_cpu*.json``, 2 cores): 640×480 at native size 6.1
frames/s, at 320×240 23.3 frames/s.
"""
from __future__ import annotations

import math

AUTO = "auto"
CPU_AUTO_PIXELS = 320 * 240
"""Network pixels per frame that ``auto`` keeps to on the CPU provider (320×240)."""

ProcessingSize = tuple[int, int] | str | None
"""(width, height); ``AUTO``; or None for the camera's own size."""


def auto_size(width: int, height: int, provider: str, multiple: int, min_side: int = 0) -> tuple[int, int] | None:
    """``auto``'s network (width, height) for a ``width``×``height`` frame on ``provider`` (short name: cpu,
    cuda, tensorrt); None where the network runs at the frame's own size."""
    if provider != "cpu" or width * height <= CPU_AUTO_PIXELS:
        return None
    scale = math.sqrt(CPU_AUTO_PIXELS / (width * height))
    floor = max(multiple, -(-min_side // multiple) * multiple)

    def side(length: int) -> int:
        return max(floor, round(length * scale / multiple) * multiple)

    return side(width), side(height)


def network_size(processing_size: ProcessingSize, width: int, height: int, provider: str, multiple: int,
                 min_side: int = 0) -> tuple[int, int]:
    """The (width, height) the network runs at for a ``width``×``height`` frame; an explicit size wins."""
    if processing_size == AUTO:
        return auto_size(width, height, provider, multiple, min_side) or (width, height)
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
