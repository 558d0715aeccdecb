"""Processing resolution ``auto``: about 320x240 for larger frames (aspect ratio and pad multiple kept) on the CPU,
and on a GPU for a model that infers the infrared; the camera's size for a dual-modal model on a GPU or for small
frames; an explicit size always winning."""
from __future__ import annotations

import numpy as np
import pytest

from dcmif_ros.inference.engine import FusionEngine
from dcmif_ros.inference.processing_resolution import AUTO, AUTO_PIXELS, auto_size, describe, network_size


@pytest.mark.parametrize("camera,expected", [((640, 480), (320, 240)), ((1280, 720), (368, 208)),
                                             ((1920, 1080), (368, 208)), ((1280, 1024), (312, 248))])
def test_auto_on_the_cpu_keeps_about_320x240_pixels_and_the_aspect_ratio(camera, expected):
    size = auto_size(*camera, provider="cpu", multiple=8)
    assert size == expected
    assert all(side % 8 == 0 for side in size)
    assert abs(size[0] * size[1] / AUTO_PIXELS - 1) < 0.05
    assert abs(size[0] / size[1] - camera[0] / camera[1]) < 0.08


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_auto_on_a_gpu_runs_a_dual_model_at_the_camera_size_and_an_inferring_one_as_on_the_cpu(provider):
    assert network_size(AUTO, 1280, 720, provider, 8) == (1280, 720)
    assert (network_size(AUTO, 1280, 720, provider, 8, infers_infrared=True)
            == network_size(AUTO, 1280, 720, "cpu", 8) == (368, 208))


def test_auto_leaves_small_frames_alone_and_respects_the_minimum_side():
    assert network_size(AUTO, 320, 240, "cpu", 8) == (320, 240)
    assert network_size(AUTO, 160, 120, "cpu", 8) == (160, 120)
    narrow = auto_size(4000, 100, "cpu", 16, min_side=32)  # a line-scan-like frame: the short side stays usable
    assert narrow[1] >= 32 and narrow[1] % 16 == 0


def test_an_explicit_size_wins_and_none_is_native():
    assert network_size((200, 100), 640, 480, "cpu", 8) == (200, 100)
    assert network_size(None, 640, 480, "cpu", 8) == (640, 480)
    assert [describe(s) for s in (AUTO, None, (320, 240))] == ["auto", "native", "320x240"]
    with pytest.raises(ValueError, match="'fast'"):
        network_size("fast", 640, 480, "cpu", 8)


def test_engine_runs_auto_at_the_reduced_size_and_keeps_the_output_size(random_tiny_onnx):
    engine = FusionEngine(random_tiny_onnx, provider="cpu", processing_size=AUTO)
    assert engine.network_size is None  # nothing processed yet (warm-up does not count)
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    result = engine.run(frame)
    assert engine.network_size == (320, 240)
    assert result.fused.shape == frame.shape and result.pseudo_ir.shape == frame.shape[:2]
    engine.run(frame[:240, :320])
    assert engine.network_size == (320, 240)
    native = FusionEngine(random_tiny_onnx, provider="cpu")
    native.run(frame)
    assert native.network_size == (640, 480)


def test_the_engine_tells_auto_whether_its_model_infers_the_infrared(random_tiny_onnx):
    """On a GPU (its provider's name is all ``auto`` reads) the visible model runs scaled down, the shipped
    dual-modal one at the camera's size."""
    from dcmif_ros.inference.pipeline import default_model_path

    frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    visible = FusionEngine(random_tiny_onnx, provider="cpu", processing_size=AUTO)
    dual = FusionEngine(default_model_path("dcmif_dual_tiny.onnx"), provider="cpu", processing_size=AUTO)
    for engine in (visible, dual):
        engine.provider = "cuda"
    visible.run(frame)
    dual.run_dual(frame, frame[:, :, 0])
    assert visible.network_size == (320, 240) and dual.network_size == (640, 480)
