"""sensor_msgs images in and out of dcmif_node: the codec's arrays and fields, wrapped in messages.

Outputs reuse the input's header object unchanged (stamp and frame_id verbatim): the fused image is
pixel-aligned with its input, and downstream synchronisers and ``ros2 topic delay`` rely on the stamp.
"""
from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from dcmif_ros.bounded_text import quote
from dcmif_ros.image_codec import ImageFields, decode_compressed, decode_image_fields, encode_bgr8

GATE_COLORMAP = cv2.COLORMAP_TURBO
"""Blue where the visible image is kept, red where the pseudo-infrared takes over."""

_GATE_LEVELS = 255.0


def decode_input(message: Image | CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """A BGR uint8 frame from either input type; ImageDecodeError says why a message cannot be used.

    ``max_pixels`` refuses larger images from their declared size, before decoding (the node's
    ``max_input_pixels``).
    """
    if isinstance(message, CompressedImage):
        return decode_compressed(message.format, message.data, max_pixels)
    return decode_image_fields(message, max_pixels)


def decode_infrared(message: Image, size: tuple[int, int]) -> np.ndarray:
    """A grey uint8 infrared image resized to ``size`` (height, width) of its visible frame.

    Thermal cameras send mono8/mono16 (colour is made grey); the resize assumes the two cameras are registered
    (same field of view, rectified), so only the resolutions differ.
    """
    grey = cv2.cvtColor(decode_image_fields(message), cv2.COLOR_BGR2GRAY)
    if grey.shape != size:
        grey = cv2.resize(grey, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return grey


def describe_input(message: Image | CompressedImage) -> str:
    """What arrived, for error messages: "'bgr8' 640x480" or "compressed 'jpeg'" (a long encoding is cut)."""
    if isinstance(message, CompressedImage):
        return f"compressed {quote(message.format)}"
    return f"{quote(message.encoding) if message.encoding else '(no encoding)'} {message.width}x{message.height}"


def image_message(fields: ImageFields, header: Header) -> Image:
    return Image(header=header, height=fields.height, width=fields.width, encoding=fields.encoding,
                 is_bigendian=fields.is_bigendian, step=fields.step, data=fields.data)


def gate_colormap(gate: np.ndarray) -> ImageFields:
    """The gate (float32 in [0, 1], weight of the pseudo-infrared) as a bgr8 colour map."""
    levels = cv2.convertScaleAbs(gate, alpha=_GATE_LEVELS)
    return encode_bgr8(cv2.applyColorMap(levels, GATE_COLORMAP))
