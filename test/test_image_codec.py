"""Tests for dcmif_ros.image_codec: every encoding with padded rows, errors, YCbCr and image files."""
from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

from dcmif_ros.image_codec import (
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    ImageFields,
    bgr_to_ycbcr,
    decode_compressed,
    decode_image,
    decode_image_fields,
    encode_bgr8,
    encode_mono8,
    read_gray,
    read_image,
    stretch_to_uint8,
    ycbcr_to_bgr,
)

HEIGHT, WIDTH = 6, 10
ROW_PADDING = 13
PADDING_BYTE = 0xAB  # garbage in the padding, which a decoder honouring step never reads
YUV_TOLERANCE = 3  # 8-bit YUV quantisation plus OpenCV's fixed-point conversion
BAYER_CHANNEL = {"b": 0, "g": 1, "r": 2}
PURE_COLOURS = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}


def reference_bgr(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def padded_rows(pixels: np.ndarray, padding: int = ROW_PADDING) -> tuple[int, bytes]:
    """Lay out ``pixels`` row by row with ``padding`` garbage bytes after each row, as a camera may."""
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(pixels.shape[0], -1)
    step = rows.shape[1] + padding
    buffer = np.full((rows.shape[0], step), PADDING_BYTE, dtype=np.uint8)
    buffer[:, : rows.shape[1]] = rows
    return step, buffer.tobytes()


def decode_padded(encoding: str, pixels: np.ndarray, is_bigendian: int = 0) -> np.ndarray:
    step, data = padded_rows(pixels)
    return decode_image(encoding, pixels.shape[0], pixels.shape[1], step, data, is_bigendian)


def limited_range_yuv(bgr: np.ndarray) -> np.ndarray:
    """BT.601 limited-range Y, U, V planes, computed by hand (independent of OpenCV)."""
    b, g, r = (bgr[..., channel].astype(np.float64) for channel in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return np.clip(np.rint(np.stack([y, u, v], axis=-1)), 0, 255).astype(np.uint8)


def pack_yuv422(bgr: np.ndarray, order: str) -> np.ndarray:
    """Pack pixel pairs (which must share a colour) as UYVY or YUYV, 2 bytes per pixel."""
    yuv = limited_range_yuv(bgr)
    left, right = yuv[:, 0::2], yuv[:, 1::2]
    samples = {"Y0": left[..., 0], "Y1": right[..., 0], "U": left[..., 1], "V": left[..., 2]}
    return np.stack([samples[name] for name in order.split()], axis=-1).reshape(bgr.shape[0], -1, 2)


def pair_uniform_bgr() -> np.ndarray:
    """A reference image whose horizontal pixel pairs share a colour, so 4:2:2 chroma loses nothing."""
    return np.repeat(reference_bgr(width=WIDTH // 2), 2, axis=1)


def bayer_mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """Sample each pixel's one colour as a sensor with the ROS ``pattern`` (top-left 2x2 block) would."""
    rows, cols = np.indices(bgr.shape[:2])
    channel_at = np.array([BAYER_CHANNEL[colour] for colour in pattern]).reshape(2, 2)
    return bgr[rows, cols, channel_at[rows % 2, cols % 2]]


# ---------------------------------------------------------------------------------------------------------
# sensor_msgs/Image round trips


def alpha_plane() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (HEIGHT, WIDTH, 1), dtype=np.uint8)


EXACT_ENCODINGS = {
    "bgr8": lambda bgr: bgr,
    "rgb8": lambda bgr: bgr[..., ::-1],
    "bgra8": lambda bgr: np.concatenate([bgr, alpha_plane()], axis=-1),
    "rgba8": lambda bgr: np.concatenate([bgr[..., ::-1], alpha_plane()], axis=-1),
}


@pytest.mark.parametrize("encoding", sorted(EXACT_ENCODINGS))
def test_colour_encodings_round_trip_with_padded_step(encoding):
    reference = reference_bgr()
    decoded = decode_padded(encoding, EXACT_ENCODINGS[encoding](reference))
    assert decoded.dtype == np.uint8 and decoded.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(decoded, reference)


def test_mono8_decodes_to_equal_bgr_channels():
    gray = cv2.cvtColor(reference_bgr(), cv2.COLOR_BGR2GRAY)
    decoded = decode_padded("mono8", gray)
    np.testing.assert_array_equal(decoded, np.repeat(gray[..., None], 3, axis=-1))


@pytest.mark.parametrize(("encoding", "order"), [("yuv422", "U Y0 V Y1"), ("yuv422_yuy2", "Y0 U Y1 V")])
def test_yuv422_packings_round_trip_with_padded_step(encoding, order):
    reference = pair_uniform_bgr()
    decoded = decode_padded(encoding, pack_yuv422(reference, order))
    assert decoded.shape == (HEIGHT, WIDTH, 3)
    assert np.abs(decoded.astype(int) - reference).max() <= YUV_TOLERANCE


@pytest.mark.parametrize(
    ("encoding", "pixel_pair"), [("yuv422", [90, 81, 240, 81]), ("yuv422_yuy2", [81, 90, 81, 240])]
)
def test_yuv422_hand_computed_red(encoding, pixel_pair):
    # BT.601 limited range: Y=81, U=90, V=240 is pure red; a swapped packing or U/V would not be.
    decoded = decode_image(encoding, 1, 2, 4, bytes(pixel_pair))
    assert np.abs(decoded.astype(int) - [0, 0, 255]).max() <= 2


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("colour", sorted(PURE_COLOURS))
def test_bayer_patterns_give_back_pure_colours(pattern, colour):
    reference = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    reference[:] = PURE_COLOURS[colour]
    decoded = decode_padded(f"bayer_{pattern}8", bayer_mosaic(reference, pattern))
    np.testing.assert_array_equal(decoded, reference)


def test_bgr8_is_a_zero_copy_view():
    step, data = padded_rows(reference_bgr())
    decoded = decode_image("bgr8", HEIGHT, WIDTH, step, data)
    assert np.shares_memory(decoded, np.frombuffer(data, dtype=np.uint8))


@pytest.mark.parametrize(
    "wrap",
    [
        bytes, bytearray, memoryview,
        lambda data: np.frombuffer(data, np.uint8),
        lambda data: array.array("B", data),
    ],
    ids=["bytes", "bytearray", "memoryview", "ndarray", "array.array"],
)
def test_accepts_every_buffer_type(wrap):
    reference = reference_bgr()
    step, data = padded_rows(reference[..., ::-1])
    np.testing.assert_array_equal(decode_image("rgb8", HEIGHT, WIDTH, step, wrap(data)), reference)


def test_decode_image_fields_accepts_image_fields():
    step, data = padded_rows(reference_bgr())
    fields = ImageFields("bgr8", HEIGHT, WIDTH, step, data)
    np.testing.assert_array_equal(decode_image_fields(fields), reference_bgr())


# ---------------------------------------------------------------------------------------------------------
# mono16


def test_stretch_maps_percentile_levels_to_full_range_hand_computed():
    gray16 = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    # 4 pixels: the 1st/99th percentile levels are the min and max; (v - 1000) * 255 / 4000, rounded.
    np.testing.assert_array_equal(stretch_to_uint8(gray16), [[0, 64], [128, 255]])


def twelve_bit_ramp(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    return np.linspace(0, 4095, height * width).astype(np.uint16).reshape(height, width)


def test_mono16_big_and_little_endian_decode_alike_and_fill_8_bits():
    ramp = twelve_bit_ramp()
    little = decode_padded("mono16", ramp.astype("<u2"), is_bigendian=0)
    big = decode_padded("mono16", ramp.astype(">u2"), is_bigendian=1)
    np.testing.assert_array_equal(little, big)
    gray = little[..., 0]
    assert gray.min() == 0 and gray.max() == 255
    assert np.all(np.diff(gray.ravel().astype(int)) >= 0)
    np.testing.assert_array_equal(little, np.repeat(gray[..., None], 3, axis=-1))


def test_mono16_byte_order_flag_is_honoured():
    ramp = twelve_bit_ramp()
    assert not np.array_equal(decode_padded("mono16", ramp.astype(">u2"), is_bigendian=0),
                              decode_padded("mono16", ramp.astype(">u2"), is_bigendian=1))


def test_mono16_stretch_ignores_a_hot_pixel():
    thermal = np.linspace(7000, 9000, 100 * 100).astype(np.uint16).reshape(100, 100)
    thermal[0, 0] = 65535
    stretched = stretch_to_uint8(thermal)
    assert stretched[50, 50] in range(120, 136)
    assert stretched[99, 98] == 255 and stretched[0, 1] == 0


def test_mono16_flat_frame_is_black():
    assert not stretch_to_uint8(np.full((4, 4), 3000, dtype=np.uint16)).any()


# ---------------------------------------------------------------------------------------------------------
# Errors


def test_unsupported_encoding_is_named_with_the_supported_list():
    with pytest.raises(ImageDecodeError, match="'16UC1'") as error:
        decode_image("16UC1", 2, 2, 4, bytes(8))
    assert all(encoding in str(error.value) for encoding in SUPPORTED_ENCODINGS)


@pytest.mark.parametrize(("height", "width"), [(0, 4), (4, 0)])
def test_zero_size_is_rejected(height, width):
    with pytest.raises(ImageDecodeError, match=f"no pixels: width {width}, height {height}"):
        decode_image("mono8", height, width, 4, bytes(16))


def test_step_smaller_than_a_row_is_rejected():
    with pytest.raises(ImageDecodeError, match=r"step 29 is smaller than .* = 10 \* 3 = 30"):
        decode_image("bgr8", HEIGHT, WIDTH, 29, bytes(29 * HEIGHT))


def test_short_data_reports_expected_and_actual_bytes():
    step = WIDTH * 3 + ROW_PADDING
    with pytest.raises(ImageDecodeError, match=f"expected {step * HEIGHT} bytes .* got {step * HEIGHT - 1}"):
        decode_image("bgr8", HEIGHT, WIDTH, step, bytes(step * HEIGHT - 1))


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2"])
def test_odd_width_yuv422_is_rejected(encoding):
    with pytest.raises(ImageDecodeError, match="width must be even; got 5"):
        decode_image(encoding, 2, 5, 10, bytes(20))


def test_non_buffer_data_is_rejected():
    with pytest.raises(ImageDecodeError, match="bytes-like buffer, got list"):
        decode_image("mono8", 1, 2, 2, [1, 2])


def test_decode_errors_are_value_errors():
    assert issubclass(ImageDecodeError, ValueError)


# ---------------------------------------------------------------------------------------------------------
# CompressedImage


def encoded(extension: str, image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(extension, image)
    assert ok
    return buffer.tobytes()


def test_compressed_png_decodes_exactly():
    reference = reference_bgr()
    np.testing.assert_array_equal(decode_compressed("png", encoded(".png", reference)), reference)


def test_compressed_jpeg_with_transport_format_string():
    reference = np.full((16, 16, 3), (30, 120, 220), dtype=np.uint8)
    jpeg = np.frombuffer(encoded(".jpg", reference), np.uint8)  # rosbags hands data over as an ndarray
    decoded = decode_compressed("rgb8; jpeg compressed bgr8", jpeg)
    assert np.abs(decoded.astype(int) - reference).max() <= 3


def test_compressed_16_bit_grey_png_is_stretched_like_mono16():
    ramp = twelve_bit_ramp()
    decoded = decode_compressed("png", encoded(".png", ramp))
    np.testing.assert_array_equal(decoded, cv2.cvtColor(stretch_to_uint8(ramp), cv2.COLOR_GRAY2BGR))


def test_compressed_garbage_is_rejected_with_its_format():
    with pytest.raises(ImageDecodeError, match=r"format 'jpeg'.*not a decodable image"):
        decode_compressed("jpeg", b"definitely not a jpeg")


def test_compressed_empty_is_rejected():
    with pytest.raises(ImageDecodeError, match="no image data"):
        decode_compressed("jpeg", b"")


def test_compressed_depth_is_rejected():
    with pytest.raises(ImageDecodeError, match="compressedDepth images are not supported"):
        decode_compressed("16UC1; compressedDepth png", encoded(".png", twelve_bit_ramp()))


# ---------------------------------------------------------------------------------------------------------
# Encoding


def test_encode_bgr8_round_trips_with_unpadded_rows():
    reference = reference_bgr()
    fields = encode_bgr8(reference[:, ::-1])  # a non-contiguous view is packed too
    assert (fields.encoding, fields.height, fields.width, fields.step) == ("bgr8", HEIGHT, WIDTH, WIDTH * 3)
    assert isinstance(fields.data, bytes) and len(fields.data) == HEIGHT * WIDTH * 3
    np.testing.assert_array_equal(decode_image_fields(fields), reference[:, ::-1])


def test_encode_mono8_round_trips():
    gray = reference_bgr()[..., 0]
    fields = encode_mono8(gray)
    assert (fields.encoding, fields.step, fields.is_bigendian) == ("mono8", WIDTH, 0)
    np.testing.assert_array_equal(decode_image_fields(fields)[..., 2], gray)


@pytest.mark.parametrize(
    ("encode", "image", "expected"),
    [
        (encode_bgr8, np.zeros((4, 4), np.uint8), r"\(height, width, 3\), got uint8 \(4, 4\)"),
        (encode_bgr8, np.zeros((4, 4, 3), np.float32), r"got float32 \(4, 4, 3\)"),
        (encode_mono8, np.zeros((4, 4, 3), np.uint8), r"\(height, width\), got uint8 \(4, 4, 3\)"),
        (encode_mono8, np.zeros((0, 4), np.uint8), "non-empty"),
    ],
)
def test_encode_rejects_wrong_arrays(encode, image, expected):
    with pytest.raises(ValueError, match=expected):
        encode(image)


# ---------------------------------------------------------------------------------------------------------
# YCbCr


def colour_cube_corners() -> np.ndarray:
    """The 8 saturated colours, where YCbCr clipping and BGR clamping bite hardest, as a 1x8 image."""
    levels = (0, 255)
    return np.array([[[b, g, r] for b in levels for g in levels for r in levels]], dtype=np.uint8)


def test_ycbcr_round_trip_within_one_level():
    bgr = np.concatenate([colour_cube_corners(), reference_bgr(64, 8)], axis=0)
    y, cb, cr = bgr_to_ycbcr(bgr)
    for plane in (y, cb, cr):
        assert plane.dtype == np.float32 and plane.shape == bgr.shape[:2]
        assert plane.min() >= 0 and plane.max() <= 1
    assert np.abs(ycbcr_to_bgr(y, cb, cr).astype(int) - bgr).max() <= 1


def test_ycbcr_known_values():
    white_black_red = np.array([[[255, 255, 255], [0, 0, 0], [0, 0, 255]]], dtype=np.uint8)
    y, cb, cr = bgr_to_ycbcr(white_black_red)
    centre = 128 / 255
    np.testing.assert_allclose(y[0], [1.0, 0.0, 0.299], atol=1e-6)
    np.testing.assert_allclose(cb[0], [centre, centre, centre - 0.168736], atol=1e-6)
    np.testing.assert_allclose(cr[0], [centre, centre, 1.0], atol=1e-6)  # 255.5/255, clipped like PIL


def test_ycbcr_matches_pil_within_its_rounding():
    image_module = pytest.importorskip("PIL.Image")
    bgr = reference_bgr(32, 32)
    pil = np.asarray(image_module.fromarray(bgr[..., ::-1].copy()).convert("YCbCr"), dtype=np.float64) / 255
    ours = np.stack(bgr_to_ycbcr(bgr), axis=-1)
    assert np.abs(ours - pil).max() <= 1 / 255


def test_ycbcr_to_bgr_clamps():
    planes = np.array([[1.5, -0.5]], dtype=np.float32), np.full((1, 2), 0.5), np.full((1, 2), 0.5)
    np.testing.assert_array_equal(ycbcr_to_bgr(*planes)[0], [[255, 255, 255], [0, 0, 0]])


def test_ycbcr_to_bgr_rejects_mismatched_planes():
    with pytest.raises(ValueError, match="three 2-D planes of one shape"):
        ycbcr_to_bgr(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 3)))


# ---------------------------------------------------------------------------------------------------------
# Files


def write(path, image) -> str:
    assert cv2.imwrite(str(path), image)
    return str(path)


def test_read_image_grey_png(tmp_path):
    gray = reference_bgr()[..., 1]
    np.testing.assert_array_equal(read_image(write(tmp_path / "g.png", gray)), cv2.merge([gray] * 3))


def test_read_image_drops_alpha(tmp_path):
    bgra = np.concatenate([reference_bgr(), alpha_plane()], axis=-1)
    np.testing.assert_array_equal(read_image(write(tmp_path / "rgba.png", bgra)), bgra[..., :3])


@pytest.mark.parametrize("extension", [".png", ".tiff"])
def test_read_image_16_bit_grey_is_stretched(tmp_path, extension):
    ramp = twelve_bit_ramp()
    decoded = read_image(write(tmp_path / f"ir16{extension}", ramp))
    np.testing.assert_array_equal(decoded, cv2.cvtColor(stretch_to_uint8(ramp), cv2.COLOR_GRAY2BGR))


def test_read_image_16_bit_colour_is_scaled_to_full_range(tmp_path):
    colour16 = reference_bgr().astype(np.uint16) * 257
    np.testing.assert_array_equal(read_image(write(tmp_path / "c16.tiff", colour16)), reference_bgr())


def test_read_image_rejects_float_tiff(tmp_path):
    path = write(tmp_path / "f.tiff", np.zeros((4, 4), np.float32))
    with pytest.raises(ImageDecodeError, match="unsupported pixel type float32"):
        read_image(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [("corrupt.png", b"\x89PNG garbage" * 20), ("notes.txt", b"hello"), ("empty.jpg", b"")],
)
def test_read_image_names_unreadable_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=name):
        read_image(path)


def test_read_image_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_read_gray_variants(tmp_path):
    gray, colour, ramp = reference_bgr()[..., 0], reference_bgr(), twelve_bit_ramp()
    np.testing.assert_array_equal(read_gray(write(tmp_path / "g.png", gray)), gray)
    colour_as_gray = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(read_gray(write(tmp_path / "c.png", colour)), colour_as_gray)
    np.testing.assert_array_equal(read_gray(write(tmp_path / "r.png", ramp)), stretch_to_uint8(ramp))


# ---------------------------------------------------------------------------------------------------------
# rosbags messages


def rosbags_image(encoding: str, height: int, width: int, step: int, data: bytes):
    """An Image message as rosbags gives it after a CDR round trip (data is a uint8 ndarray)."""
    typesys = pytest.importorskip("rosbags.typesys")
    store = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
    types = store.types
    stamp = types["builtin_interfaces/msg/Time"](sec=1, nanosec=2)
    header = types["std_msgs/msg/Header"](stamp=stamp, frame_id="camera_optical")
    message = types["sensor_msgs/msg/Image"](
        header=header, height=height, width=width, encoding=encoding,
        is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8),
    )
    raw = store.serialize_cdr(message, "sensor_msgs/msg/Image")
    return store.deserialize_cdr(raw, "sensor_msgs/msg/Image")


@pytest.mark.parametrize(
    ("encoding", "pixels"),
    [("rgb8", reference_bgr()[..., ::-1]), ("yuv422_yuy2", pack_yuv422(pair_uniform_bgr(), "Y0 U Y1 V"))],
)
def test_agrees_with_rosbags_image_on_unpadded_messages(encoding, pixels):
    message_to_cvimage = pytest.importorskip("rosbags.image").message_to_cvimage
    step, data = padded_rows(pixels, padding=0)
    message = rosbags_image(encoding, pixels.shape[0], pixels.shape[1], step, data)
    np.testing.assert_array_equal(decode_image_fields(message), message_to_cvimage(message, "bgr8"))


def test_decodes_padded_rosbags_message():
    reference = reference_bgr()
    step, data = padded_rows(reference[..., ::-1])
    message = rosbags_image("rgb8", HEIGHT, WIDTH, step, data)
    np.testing.assert_array_equal(decode_image_fields(message), reference)


# ---------------------------------------------------------------------------------------------------------
# rclpy messages (where ROS 2 Python messages are installed)


def test_rclpy_image_round_trip_through_encode_and_decode():
    image_type = pytest.importorskip("sensor_msgs.msg").Image
    reference = reference_bgr()
    fields = encode_bgr8(reference)
    message = image_type(encoding=fields.encoding, height=fields.height, width=fields.width,
                         step=fields.step, is_bigendian=fields.is_bigendian, data=fields.data)
    assert isinstance(message.data, array.array)
    np.testing.assert_array_equal(decode_image_fields(message), reference)
