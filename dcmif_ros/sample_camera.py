"""A stand-in camera: photographs bundled with scikit-image (or image files given), replayed as 640x480 video on
``image_raw``.

For demos and tests without hardware. Each photo is shown for a few seconds under a slow zoom and pan, so
consecutive frames differ as video frames do. Frames are bgr8 stamped with the node clock (sim time under
``use_sim_time``). QoS: ``reliable`` as usb_cam publishes, or ``best_effort`` as RealSense does.

Alone: ``python -m dcmif_ros.sample_camera --rate 15 --duration 10 --reliability best_effort``
(load config/fastdds_shm.xml in every process, see docs/node.md). It prints ``{"published": N}`` on exit.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from dcmif_ros.image_codec import encode_bgr8, read_image
from dcmif_ros.ros.conversions import image_message

SAMPLE_PHOTOS = ("astronaut", "camera", "coffee", "rocket")
"""Photographs that ship inside scikit-image (no download); the first two show people, whom a thermal camera
would show warm ("camera", the cameraman, is grey)."""

DEFAULT_SIZE = (640, 480)
DEFAULT_RATE_HZ = 15.0
DEFAULT_TOPIC = "image_raw"
DEFAULT_FRAME_ID = "sample_camera_optical_frame"
SECONDS_PER_PHOTO = 4.0
MAX_ZOOM = 1.25  # each photo's shot ends this much closer than it started
PAN_FRACTION = 0.8  # of the horizontal margin the zoomed crop leaves, swept left to right
TILT_FRACTION = 0.4  # of the vertical margin, swept bottom to top
RELIABLE_DEPTH = 10

CAMERA_QOS = {
    "reliable": QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=RELIABLE_DEPTH,
                           reliability=ReliabilityPolicy.RELIABLE),
    "best_effort": qos_profile_sensor_data,
}


def load_sample_photos(paths: Sequence[Path] = ()) -> list[np.ndarray]:
    """The image files in ``paths`` (BGR), or scikit-image's ``SAMPLE_PHOTOS`` when there are none."""
    if paths:
        return [read_image(path) for path in paths]
    import skimage.data

    photos = [getattr(skimage.data, name)() for name in SAMPLE_PHOTOS]
    return [cv2.cvtColor(p, cv2.COLOR_GRAY2BGR if p.ndim == 2 else cv2.COLOR_RGB2BGR) for p in photos]


class SampleFrames:
    """Frame ``i`` of an endless slow zoom-and-pan over the sample photos, BGR uint8 (height, width, 3)."""

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE, rate_hz: float = DEFAULT_RATE_HZ,
                 photos: Sequence[Path] = ()):
        self.width, self.height = size
        self.rate_hz = rate_hz
        self._photos = load_sample_photos(photos)

    def frame(self, index: int) -> np.ndarray:
        seconds = index / self.rate_hz
        photo = self._photos[int(seconds // SECONDS_PER_PHOTO) % len(self._photos)]
        progress = (seconds % SECONDS_PER_PHOTO) / SECONDS_PER_PHOTO
        return cv2.warpAffine(photo, self._view(photo.shape, progress), (self.width, self.height),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    def _view(self, photo_shape: tuple[int, ...], progress: float) -> np.ndarray:
        """Affine map photo → frame: cover the frame, zoom in with ``progress``, pan across the margin."""
        photo_height, photo_width = photo_shape[:2]
        scale = max(self.width / photo_width, self.height / photo_height) * (1.0 + (MAX_ZOOM - 1.0) * progress)
        margin_x = (photo_width - self.width / scale) / 2
        margin_y = (photo_height - self.height / scale) / 2
        centre_x = photo_width / 2 + margin_x * PAN_FRACTION * (2 * progress - 1)
        centre_y = photo_height / 2 + margin_y * TILT_FRACTION * (1 - 2 * progress)
        return np.array([[scale, 0.0, self.width / 2 - scale * centre_x],
                         [0.0, scale, self.height / 2 - scale * centre_y]])


FrameCallback = Callable[[int, Time, np.ndarray], None]
"""Called with (index, stamp, BGR frame) after each publish, e.g. to keep inputs for a contact sheet."""


class SampleCamera:
    """Publishes SampleFrames on ``node`` at ``rate_hz`` from a timer, once ``start`` is called."""

    def __init__(self, node: Node, frames: SampleFrames, reliability: str = "reliable", topic: str = DEFAULT_TOPIC,
                 frame_id: str = DEFAULT_FRAME_ID, on_frame: FrameCallback | None = None):
        self._node = node
        self._frames = frames
        self._frame_id = frame_id
        self._on_frame = on_frame
        self.publisher = node.create_publisher(Image, topic, CAMERA_QOS[reliability])
        self._timer = node.create_timer(1.0 / frames.rate_hz, self._publish_next, autostart=False)
        self.published = 0

    def start(self) -> None:
        self._timer.reset()

    def stop(self) -> None:
        self._timer.cancel()

    def _publish_next(self) -> None:
        frame = self._frames.frame(self.published)
        header = Header(stamp=self._node.get_clock().now().to_msg(), frame_id=self._frame_id)
        message = image_message(encode_bgr8(frame), header)
        self.publisher.publish(message)
        if self._on_frame is not None:
            self._on_frame(self.published, message.header.stamp, frame)
        self.published += 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dcmif_ros.sample_camera", description=__doc__.split("\n")[0])
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help="topic to publish on (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE_HZ, help="frames per second (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 = until Ctrl-C")
    parser.add_argument("--reliability", choices=sorted(CAMERA_QOS), default="reliable",
                        help="reliable (as usb_cam) or best_effort (as RealSense) (default: %(default)s)")
    parser.add_argument("--wait-for-subscriber", type=float, default=0.0, metavar="SECONDS",
                        help="hold the first frame until a subscriber matches, at most this long")
    parser.add_argument("--width", type=int, default=DEFAULT_SIZE[0])
    parser.add_argument("--height", type=int, default=DEFAULT_SIZE[1])
    parser.add_argument("--frame-id", default=DEFAULT_FRAME_ID)
    parser.add_argument("--photos", nargs="+", type=Path, default=[], metavar="FILE",
                        help="image files to replay instead of the photos bundled with scikit-image")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    args = build_parser().parse_args(remove_ros_args(argv)[1:])
    frames = SampleFrames((args.width, args.height), args.rate, args.photos)  # a bad photo fails before ROS starts
    rclpy.init(args=argv)
    node = Node("sample_camera")
    camera = SampleCamera(node, frames, args.reliability, args.topic, args.frame_id)
    try:
        wait_until = time.monotonic() + args.wait_for_subscriber
        while camera.publisher.get_subscription_count() == 0 and time.monotonic() < wait_until:
            rclpy.spin_once(node, timeout_sec=0.05)
        camera.start()
        stop_at = time.monotonic() + args.duration if args.duration > 0 else math.inf
        while time.monotonic() < stop_at:
            rclpy.spin_once(node, timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        print(json.dumps({"published": camera.published}), flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
