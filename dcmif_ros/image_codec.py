"""Turn ROS image messages and image files into the BGR uint8 arrays the fusion model takes, and back.

Pure numpy + OpenCV with no ``rclpy`` import, so the ROS node, the rosbag tool and the file tools share one
decoder that tests can run without ROS. We write our own because cv_bridge does not import under numpy 2
(vision_opencv#535) and rosbags-image ignores row padding; this decoder honours ``step`` and ``is_bigendian``.

Conventions:

* Decoded images are BGR uint8, shape (height, width, 3).
* 16-bit grey (``mono16`` messages, 16-bit grey PNG/TIFF files) is contrast-stretched per frame between its
  1st and 99th percentiles (see :func:`stretch_to_uint8`). 16-bit colour files are scaled by 255/65535.
* ``yuv422`` is UYVY and ``yuv422_yuy2`` is YUYV, both BT.601 limited range (OpenCV's and cv_bridge's rule).
* YCbCr is full-range BT.601 as in JFIF and PIL's ``convert("YCbCr")``, scaled to [0, 1] (see
  :func:`bgr_to_ycbcr`).
* ``max_pixels`` (the node's ``max_input_pixels``) refuses an image from its declared size, before any pixel
  is decoded: the fields of a raw image, the header of a compressed one (read by PIL, which stops there).
  A 114 KB PNG declaring 10000x10000 would otherwise cost seconds and gigabytes to decode.
"""
from __future__ import annotations

import array
import contextlib
import io
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Union

import cv2
import numpy as np

from dcmif_ros.bounded_text import quote

ImageBuffer = Union[bytes, bytearray, memoryview, array.array, np.ndarray]
"""Anything holding image bytes: rclpy gives ``array.array``, rosbags gives a uint8 ndarray."""

MONO16_STRETCH_PERCENTILES = (1.0, 99.0)
"""The grey levels mapped to 0 and 255; percentiles rather than min/max so hot or dead pixels don't matter."""

_UINT16_LEVELS = 1 << 16
_UINT16_TO_UINT8_SCALE = 255.0 / 65535.0
_UINT8_MAX = 255.0
_COMPRESSED_DEPTH_FORMAT = "compressedDepth"

# Read files and compressed messages keeping 16-bit depth and grey-vs-colour, dropping any alpha channel.
# Unlike IMREAD_UNCHANGED, these flags still apply a JPEG's EXIF orientation, as phone photos need.
_IMDECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


class ImageDecodeError(ValueError):
    """Raised for an image message, buffer or file that cannot become a BGR image; the message says why."""


@dataclass(frozen=True)
class ImageFields:
    """The pixel fields of a ``sensor_msgs/Image``; the header is the caller's, to copy from the input."""

    encoding: str
    height: int
    width: int
    step: int
    data: ImageBuffer
    is_bigendian: int = 0


class ImageMessage(Protocol):
    """Anything with the pixel fields of ``sensor_msgs/Image``: rclpy or rosbags messages, ImageFields."""

    encoding: str
    height: int
    width: int
    step: int
    data: ImageBuffer
    is_bigendian: int


# ---------------------------------------------------------------------------------------------------------
# 16-bit to 8-bit


def stretch_to_uint8(gray16: np.ndarray) -> np.ndarray:
    """Map a 16-bit grey image to uint8, stretching its 1st..99th percentile levels to 0..255.

    Not ``>> 8``: thermal cameras (raw counts such as 7000-9000) and 10/12-bit sensors stored in 16 bits
    use a sliver of the range, so a shift gives a flat, near-black frame. A percentile stretch is what
    thermal AGC and image_view's dynamic scaling show, and one hot pixel cannot squash it. It is per frame,
    so brightness may change from frame to frame; a frame without contrast comes out black.
    """
    levels = np.asarray(gray16, dtype=np.uint16)
    low, high = _percentile_levels(levels, MONO16_STRETCH_PERCENTILES)
    gain = _UINT8_MAX / max(high - low, 1)
    lookup = np.clip(np.rint((np.arange(_UINT16_LEVELS) - low) * gain), 0, _UINT8_MAX).astype(np.uint8)
    return np.take(lookup, levels)


def _percentile_levels(levels: np.ndarray, percentiles: tuple[float, float]) -> tuple[int, int]:
    """The lowest level reached by each percentile of pixels, from a histogram: exact, and fast."""
    cumulative_counts = np.cumsum(np.bincount(levels.ravel(), minlength=_UINT16_LEVELS))
    targets = np.asarray(percentiles) / 100.0 * levels.size
    low, high = np.searchsorted(cumulative_counts, targets)
    return int(low), int(high)


# ---------------------------------------------------------------------------------------------------------
# sensor_msgs/Image


@dataclass(frozen=True)
class _PixelLayout:
    """How one ROS encoding stores a pixel in ``data``, and how its pixel array becomes BGR uint8."""

    channels: int
    bytes_per_channel: int
    to_bgr: Callable[[np.ndarray], np.ndarray]
    width_multiple: int = 1

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.bytes_per_channel


def _already_bgr(pixels: np.ndarray) -> np.ndarray:
    """bgr8 needs no conversion: hand back the zero-copy view."""
    return pixels


def _opencv_conversion(code: int) -> Callable[[np.ndarray], np.ndarray]:
    """A converter running one ``cv2.cvtColor``, which reads padded rows in place and returns a new array."""
    return lambda pixels: cv2.cvtColor(pixels, code)


def _mono16_to_bgr(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(stretch_to_uint8(pixels), cv2.COLOR_GRAY2BGR)


# OpenCV names a Bayer pattern by the 2nd and 3rd pixels of its 2nd row, ROS by the top-left 2x2 block, so
# ROS rggb (R G / G B) is OpenCV "BG". test_image_codec checks every pattern on pure colours.
_LAYOUTS: dict[str, _PixelLayout] = {
    "bgr8": _PixelLayout(3, 1, _already_bgr),
    "rgb8": _PixelLayout(3, 1, _opencv_conversion(cv2.COLOR_RGB2BGR)),
    "bgra8": _PixelLayout(4, 1, _opencv_conversion(cv2.COLOR_BGRA2BGR)),
    "rgba8": _PixelLayout(4, 1, _opencv_conversion(cv2.COLOR_RGBA2BGR)),
    "mono8": _PixelLayout(1, 1, _opencv_conversion(cv2.COLOR_GRAY2BGR)),
    "mono16": _PixelLayout(1, 2, _mono16_to_bgr),
    "yuv422": _PixelLayout(2, 1, _opencv_conversion(cv2.COLOR_YUV2BGR_UYVY), width_multiple=2),
    "yuv422_yuy2": _PixelLayout(2, 1, _opencv_conversion(cv2.COLOR_YUV2BGR_YUY2), width_multiple=2),
    "bayer_rggb8": _PixelLayout(1, 1, _opencv_conversion(cv2.COLOR_BayerBG2BGR)),
    "bayer_bggr8": _PixelLayout(1, 1, _opencv_conversion(cv2.COLOR_BayerRG2BGR)),
    "bayer_gbrg8": _PixelLayout(1, 1, _opencv_conversion(cv2.COLOR_BayerGR2BGR)),
    "bayer_grbg8": _PixelLayout(1, 1, _opencv_conversion(cv2.COLOR_BayerGB2BGR)),
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(sorted(_LAYOUTS))


def decode_image(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: ImageBuffer,
    is_bigendian: int = 0,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode the pixel fields of a ``sensor_msgs/Image`` into BGR uint8, honouring row padding.

    bgr8 comes back as a zero-copy view of ``data`` (read-only when ``data`` is immutable, with row
    stride ``step``); every other encoding is converted into a new contiguous array.
    """
    layout = _layout_for(encoding)
    _check_pixel_count(f"{encoding} image", width, height, max_pixels)
    buffer = _byte_array(data)
    _check_geometry(encoding, layout, height, width, step, buffer.size)
    return layout.to_bgr(_pixel_view(buffer, layout, height, width, step, is_bigendian))


def decode_image_fields(image: ImageMessage, max_pixels: int | None = None) -> np.ndarray:
    """Decode an rclpy or rosbags ``Image`` message, or an :class:`ImageFields`, into BGR uint8."""
    return decode_image(image.encoding, image.height, image.width, image.step, image.data, image.is_bigendian,
                        max_pixels)


def _layout_for(encoding: str) -> _PixelLayout:
    try:
        return _LAYOUTS[encoding]
    except KeyError:
        raise ImageDecodeError(
            f"unsupported image encoding {quote(encoding)}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        ) from None


def _check_pixel_count(source: str, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(f"{source} of {width}x{height} = {width * height} pixels is over the limit of "
                               f"{max_pixels} pixels (max_input_pixels)")


def _byte_array(data: ImageBuffer) -> np.ndarray:
    """A flat uint8 array over ``data``, without copying any contiguous buffer."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        raise ImageDecodeError(f"image data must be a bytes-like buffer, got {type(data).__name__}") from None


def _check_geometry(
    encoding: str, layout: _PixelLayout, height: int, width: int, step: int, available_bytes: int
) -> None:
    """Reject sizes the buffer cannot hold, before viewing it, so a bad message never reads out of bounds."""
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"{encoding} image has no pixels: width {width}, height {height}")
    if width % layout.width_multiple:
        raise ImageDecodeError(
            f"{encoding} packs pixels in pairs that share chroma, so its width must be even; got {width}"
        )
    row_bytes = width * layout.bytes_per_pixel
    if step < row_bytes:
        raise ImageDecodeError(
            f"{encoding} step {step} is smaller than width * bytes per pixel "
            f"= {width} * {layout.bytes_per_pixel} = {row_bytes}"
        )
    expected_bytes = step * height
    if available_bytes < expected_bytes:
        raise ImageDecodeError(
            f"{encoding} image data too short: expected {expected_bytes} bytes "
            f"(step {step} * height {height}), got {available_bytes}"
        )


def _pixel_view(
    buffer: np.ndarray, layout: _PixelLayout, height: int, width: int, step: int, is_bigendian: int
) -> np.ndarray:
    """View the first ``width`` pixels of each padded row as a (height, width[, channels]) array, no copy."""
    byte_order = ">" if is_bigendian else "<"
    sample = np.dtype(f"{byte_order}u{layout.bytes_per_channel}")
    if layout.channels == 1:
        shape, strides = (height, width), (step, sample.itemsize)
    else:
        shape = (height, width, layout.channels)
        strides = (step, layout.bytes_per_pixel, sample.itemsize)
    return np.ndarray(shape, dtype=sample, buffer=buffer, strides=strides)


# ---------------------------------------------------------------------------------------------------------
# sensor_msgs/CompressedImage and image files


def decode_compressed(format: str, data: ImageBuffer, max_pixels: int | None = None) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) into BGR uint8.

    The codec is detected from the bytes; ``format`` only serves to refuse compressedDepth, whose data
    starts with a depth-quantisation header rather than an image. With ``max_pixels``, an image whose
    header cannot be read (a format PIL does not know, or a corrupt header) is refused undecoded.
    """
    source = f"compressed image (format {quote(format)})"
    if _COMPRESSED_DEPTH_FORMAT in format:
        raise ImageDecodeError(f"{source}: compressedDepth images are not supported")
    encoded = _byte_array(data)
    if max_pixels is not None and encoded.size:
        width, height = compressed_size(encoded, source)
        _check_pixel_count(source, width, height, max_pixels)
    return _to_bgr8(_decode_file_bytes(encoded, source), source)


def compressed_size(encoded: np.ndarray, source: str) -> tuple[int, int]:
    """(width, height) from a compressed image's header, without decoding a pixel (PIL opens lazily)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(encoded.tobytes())) as image:
                return image.size
        except Image.DecompressionBombError:
            raise ImageDecodeError(f"{source}: declares more than {2 * Image.MAX_IMAGE_PIXELS} pixels "
                                   "(a decompression bomb)") from None
        except Exception as exc:  # PIL's parsers raise many types on hostile bytes; none of them is ours
            raise ImageDecodeError(f"{source}: cannot read the image size from its header "
                                   f"({type(exc).__name__}), so it is not decoded") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file (grey, colour, RGBA, 8- or 16-bit) as BGR uint8; alpha is dropped."""
    return _to_bgr8(_read_file(path), str(path))


def read_gray(path: str | Path) -> np.ndarray:
    """Read an infrared image file as uint8 (height, width); colour files are converted to grey."""
    image8 = _to_uint8(_read_file(path), str(path))
    return image8 if image8.ndim == 2 else cv2.cvtColor(image8, cv2.COLOR_BGR2GRAY)


def _read_file(path: str | Path) -> np.ndarray:
    """Decode a file; unlike ``cv2.imread``, ``np.fromfile`` raises an error naming a missing file."""
    return _decode_file_bytes(np.fromfile(path, dtype=np.uint8), str(path))


def _decode_file_bytes(encoded: np.ndarray, source: str) -> np.ndarray:
    if encoded.size == 0:
        raise ImageDecodeError(f"{source}: no image data (0 bytes)")
    with _decoder_noise_dropped():
        image = cv2.imdecode(encoded, _IMDECODE_FLAGS)
    if image is None:
        raise ImageDecodeError(
            f"{source}: not a decodable image (unknown format or corrupt data, {encoded.size} bytes)"
        )
    return image


# What libpng, libjpeg and OpenCV print on a bad image ("libpng error: IDAT: CRC error", "Corrupt JPEG data: ...",
# "[ WARN:0@0.5] global grfmt_png.cpp ... PNG input buffer is incomplete"): ImageDecodeError says it once, in words.
_DECODER_NOISE = re.compile(rb"libpng|JPEG|JFIF|Huffman|marker|^\[ *(WARN|ERROR|INFO|DEBUG):")
_NATIVE_STDERR = 2
_native_stderr_lock = threading.Lock()


@contextlib.contextmanager
def _decoder_noise_dropped() -> Iterator[None]:
    """Run the block with the C-level stderr captured, and pass on only what the image decoders did not print.

    libpng and libjpeg write to file descriptor 2 themselves (OpenCV's log level does not reach them), a line per
    bad frame: 30 lines a second from a broken camera. Lines other threads write meanwhile are passed on.
    """
    with _native_stderr_lock, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(_NATIVE_STDERR)
        os.dup2(capture.fileno(), _NATIVE_STDERR)
        try:
            yield
        finally:
            os.dup2(saved, _NATIVE_STDERR)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if not _DECODER_NOISE.search(line)]
            if kept:
                os.write(_NATIVE_STDERR, b"".join(kept))


def _to_uint8(image: np.ndarray, source: str) -> np.ndarray:
    """Bring a decoded file to 8 bits: 16-bit grey is stretched like mono16, 16-bit colour is scaled."""
    if image.dtype == np.uint8:
        return image
    if image.dtype != np.uint16:
        raise ImageDecodeError(
            f"{source}: unsupported pixel type {image.dtype}; expected 8- or 16-bit unsigned"
        )
    if image.ndim == 2:
        return stretch_to_uint8(image)
    return cv2.convertScaleAbs(image, alpha=_UINT16_TO_UINT8_SCALE)


def _to_bgr8(image: np.ndarray, source: str) -> np.ndarray:
    image8 = _to_uint8(image, source)
    return image8 if image8.ndim == 3 else cv2.cvtColor(image8, cv2.COLOR_GRAY2BGR)


# ---------------------------------------------------------------------------------------------------------
# Encoding for publishing


def encode_bgr8(image: np.ndarray) -> ImageFields:
    """Pack a BGR uint8 (height, width, 3) array as ``sensor_msgs/Image`` fields with unpadded rows."""
    return _encode_uint8(image, "bgr8", pixel_shape=(3,))


def encode_mono8(image: np.ndarray) -> ImageFields:
    """Pack a grey uint8 (height, width) array as ``sensor_msgs/Image`` fields with unpadded rows."""
    return _encode_uint8(image, "mono8", pixel_shape=())


def _encode_uint8(image: np.ndarray, encoding: str, pixel_shape: tuple[int, ...]) -> ImageFields:
    """``data`` is ``bytes`` so rclpy fills ``array('B')`` from the buffer, never element by element."""
    pixels = _require_uint8_pixels(image, pixel_shape, encoding)
    height, width = pixels.shape[:2]
    step = width * int(np.prod(pixel_shape, dtype=int))
    return ImageFields(encoding, height, width, step, pixels.tobytes())


def _require_uint8_pixels(image: np.ndarray, pixel_shape: tuple[int, ...], purpose: str) -> np.ndarray:
    """Reject anything but a non-empty uint8 array of shape (height, width, *pixel_shape)."""
    pixels = np.asarray(image)
    has_pixel_shape = pixels.ndim == 2 + len(pixel_shape) and pixels.shape[2:] == pixel_shape
    if pixels.dtype == np.uint8 and has_pixel_shape and pixels.size > 0:
        return pixels
    expected = ", ".join(["height", "width", *map(str, pixel_shape)])
    raise ValueError(
        f"{purpose} needs a non-empty uint8 array of shape ({expected}), got {pixels.dtype} {pixels.shape}"
    )


# ---------------------------------------------------------------------------------------------------------
# YCbCr for the model pipeline


def _affine_inverse(affine: np.ndarray) -> np.ndarray:
    """Invert a 3x4 ``cv2.transform`` matrix [A | b] into [A^-1 | -A^-1 b]."""
    inverse = np.linalg.inv(affine[:, :3])
    return np.hstack([inverse, -inverse @ affine[:, 3:]])


# Full-range BT.601 (JFIF), as PIL's convert("YCbCr"): rows give Y, Cb, Cr from R, G, B in 0..255,
# with chroma centred on 128. Scaled to [0, 1], the chroma centre is 128/255, not 0.5.
_RGB_TO_YCBCR = np.array([
    [0.299, 0.587, 0.114],
    [-0.168736, -0.331264, 0.5],
    [0.5, -0.418688, -0.081312],
])
_CHROMA_CENTRE = 128.0 / 255.0
_BGR8_TO_YCBCR = np.hstack([_RGB_TO_YCBCR[:, ::-1] / _UINT8_MAX, [[0.0], [_CHROMA_CENTRE], [_CHROMA_CENTRE]]])
_YCBCR_TO_BGR8 = _affine_inverse(_BGR8_TO_YCBCR)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A [0, 1] float image as uint8 grey levels, clipped and rounded: the one rounding every output uses."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def luminance(bgr: np.ndarray) -> np.ndarray:
    """The uint8 Y the models see: full-range BT.601 (JFIF), what the engine and the training data use."""
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)[:, :, 0]


def bgr_to_ycbcr(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split BGR uint8 into float32 Y, Cb, Cr planes in [0, 1], the model's input convention.

    Same coefficients and chroma offset as PIL's YCbCr divided by 255, without PIL's rounding to 8 bits;
    saturated reds and blues, whose chroma would reach 255.5/255, are clipped to 1 as PIL clips them.
    """
    pixels = _require_uint8_pixels(bgr, (3,), "bgr_to_ycbcr").astype(np.float32)
    # One transform per plane: 3x faster than transforming to 3 channels and splitting (fewer big temporaries).
    y, cb, cr = (cv2.transform(pixels, row[np.newaxis]) for row in _BGR8_TO_YCBCR)
    for plane in (y, cb, cr):
        np.clip(plane, 0.0, 1.0, out=plane)
    return y, cb, cr


def ycbcr_to_bgr(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Merge Y, Cb, Cr planes in [0, 1] (the convention of :func:`bgr_to_ycbcr`) into BGR uint8, clamped."""
    planes = [np.asarray(plane, dtype=np.float32) for plane in (y, cb, cr)]
    if planes[0].ndim != 2 or any(plane.shape != planes[0].shape for plane in planes):
        raise ValueError(f"ycbcr_to_bgr needs three 2-D planes of one shape, got {[p.shape for p in planes]}")
    bgr = cv2.transform(cv2.merge(planes), _YCBCR_TO_BGR8)
    np.maximum(bgr, 0.0, out=bgr)  # convertScaleAbs rounds and saturates at 255, but would mirror negatives
    return cv2.convertScaleAbs(bgr)
