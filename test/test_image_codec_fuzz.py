"""The image codec under hostile input: property-based fuzzing (hypothesis) and the pixel limit.

Whatever a publisher puts in an Image or CompressedImage, decoding either returns a BGR uint8 image of the
declared size or raises ImageDecodeError; nothing else escapes, nothing reads out of bounds, and an image over
``max_pixels`` is refused from its header before any pixel is decoded.
"""
from __future__ import annotations

import os
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcmif_ros import image_codec
from dcmif_ros.image_codec import SUPPORTED_ENCODINGS, ImageDecodeError, decode_compressed, decode_image

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_SIDE = st.integers(min_value=-4, max_value=40)
BOMB_SIDE = 10_000
BOMB_DECODE_BOUND_S = 0.5  # refusing the bomb reads its header; decoding it took 11.3 s and 4.3 GB


def png_declaring(width: int, height: int, rows: int | None = None) -> bytes:
    """A grey 8-bit PNG whose header declares width x height; ``rows`` zero rows actually compressed in it."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    body = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows))
    body += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def png_bomb() -> bytes:
    """10000 x 10000 zero pixels in about 100 KB, like the one that took the node 11.3 s and 4.3 GB."""
    return png_declaring(BOMB_SIDE, BOMB_SIDE)


def assert_decodes_or_refuses(decode, expected_shape=None) -> None:
    try:
        image = decode()
    except ImageDecodeError:
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    if expected_shape is not None:
        assert image.shape[:2] == expected_shape


@FUZZ
@given(encoding=st.one_of(st.sampled_from(SUPPORTED_ENCODINGS), st.text(max_size=20)),
       width=SMALL_SIDE, height=SMALL_SIDE, step_change=st.integers(-8, 16), big_endian=st.integers(0, 255),
       length_change=st.integers(-64, 64))
def test_any_image_fields_decode_or_raise_image_decode_error(encoding, width, height, step_change, big_endian,
                                                             length_change):
    step = max(width, 0) * 4 + step_change
    length = max(step * max(height, 0) + length_change, 0)
    data = np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8).tobytes()
    assert_decodes_or_refuses(lambda: decode_image(encoding, height, width, step, data, big_endian),
                              (height, width))


@FUZZ
@given(encoding=st.sampled_from(SUPPORTED_ENCODINGS), width=st.integers(1, 2**31), height=st.integers(1, 2**31),
       max_pixels=st.integers(1, 10**6))
def test_the_pixel_limit_is_checked_from_the_fields_whatever_the_data(encoding, width, height, max_pixels):
    if width * height <= max_pixels:
        return
    with pytest.raises(ImageDecodeError, match="max_input_pixels"):
        decode_image(encoding, height, width, width * 8, b"", max_pixels=max_pixels)


@FUZZ
@given(format=st.text(max_size=30), data=st.binary(max_size=256))
def test_any_compressed_bytes_decode_or_raise_image_decode_error(format, data):
    assert_decodes_or_refuses(lambda: decode_compressed(format, data, max_pixels=10_000))


@FUZZ
@given(width=st.integers(1, 64), height=st.integers(1, 64), cut=st.integers(0, 400), flip=st.integers(0, 399),
       kind=st.sampled_from([".png", ".jpg"]))
def test_truncated_or_corrupted_png_and_jpeg_decode_or_raise(width, height, cut, flip, kind):
    encoded = bytearray(cv2.imencode(kind, np.full((height, width, 3), 90, np.uint8))[1].tobytes())
    if flip < len(encoded):
        encoded[flip] ^= 0xFF
    encoded = bytes(encoded[: max(len(encoded) - cut, 0)])
    assert_decodes_or_refuses(lambda: decode_compressed(kind[1:], encoded, max_pixels=64 * 64))


def test_a_png_bomb_is_refused_from_its_header(png_bomb):
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match=r"10000x10000 = 100000000 pixels is over the limit of 33177600"):
        decode_compressed("png", png_bomb, max_pixels=7680 * 4320)
    assert time.perf_counter() - started < BOMB_DECODE_BOUND_S, "the header alone must decide"
    assert len(png_bomb) < 200_000


def test_an_image_at_the_limit_decodes():
    encoded = cv2.imencode(".jpg", np.full((48, 64, 3), 200, np.uint8))[1]
    assert decode_compressed("jpeg", encoded, max_pixels=64 * 48).shape == (48, 64, 3)
    with pytest.raises(ImageDecodeError, match="64x48 = 3072 pixels is over the limit of 3071"):
        decode_compressed("jpeg", encoded, max_pixels=64 * 48 - 1)


def test_an_unreadable_header_is_refused_undecoded_under_a_limit():
    with pytest.raises(ImageDecodeError, match="cannot read the image size from its header"):
        decode_compressed("jpeg", b"not an image at all", max_pixels=100)


def test_a_corrupt_compressed_frame_is_reported_once_by_us_not_by_opencv(capfd):
    truncated = png_declaring(64, 48, rows=10)  # "libpng error: ...", said libpng each time
    for _ in range(3):
        with pytest.raises(ImageDecodeError, match="not a decodable image"):
            decode_compressed("png", truncated)
    assert capfd.readouterr().err == ""


def test_an_echoed_encoding_is_cut_short():
    with pytest.raises(ImageDecodeError) as raised:
        decode_image("e" * 1_000_000, 4, 4, 12, bytes(48))
    assert len(str(raised.value)) < 500 and "(1000000 characters)" in str(raised.value)


def test_only_the_decoders_noise_is_dropped_from_stderr(capfd):
    """Other threads may write to stderr while a frame decodes: their lines must come through."""
    with image_codec._decoder_noise_dropped():
        os.write(2, b"libpng error: IDAT: CRC error\n[ WARN:0@0.5] global grfmt_png.cpp PNG input buffer\n")
        os.write(2, b"Corrupt JPEG data: bad Huffman code\n[INFO] [1.0] [dcmif_node]: still here\n")
    assert capfd.readouterr().err == "[INFO] [1.0] [dcmif_node]: still here\n"
