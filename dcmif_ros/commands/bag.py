"""``dcmif bag``: replay a rosbag2 through the fusion pipeline and write the outputs into a new bag."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dcmif_ros.commands.fuse import add_model_arguments, pipeline_config

# dcmif_ros.bag.STORAGES, repeated so that `dcmif --help` does not import rosbags.
DEFAULT_INPUT_TOPIC = "/camera/image_raw"
STORAGE_CHOICES = ("mcap", "sqlite3")
EXIT_SOME_SKIPPED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bag`` parser; called by ``dcmif_ros.cli`` for every module in this package."""
    parser = subparsers.add_parser(
        "bag",
        help="replay a rosbag2 through the fusion pipeline into a new bag (no ROS install needed)",
        description=(
            "Read the images of TOPIC (sensor_msgs/Image or CompressedImage) from a rosbag2 (sqlite3 or "
            "mcap), fuse them as the node does, and write a bag holding TOPIC plus the node's outputs in "
            "TOPIC's namespace: for /camera/image_raw (or /camera/image_raw/compressed) these are "
            "/camera/fused/image (bgr8), /camera/pseudo_thermal/image (mono8) and /camera/status "
            "(dcmif_msgs/msg/FusionStatus, one per frame). Header stamps and receive timestamps are "
            "kept. The prior refreshes synchronously every N frames, so the output is deterministic. "
            "Undecodable messages are reported by index and skipped (exit code 1). The bag is written "
            "to a hidden temporary beside OUT and renamed only when complete."
        ),
    )
    parser.add_argument("input", type=Path, metavar="IN", help="input rosbag2 folder (or a .db3 / .mcap file)")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT", help="output rosbag2 folder")
    parser.add_argument("--topic", default=DEFAULT_INPUT_TOPIC,
                        help="input image topic (default: %(default)s)")
    parser.add_argument("--storage", choices=STORAGE_CHOICES,
                        help="storage of the output bag (default: the input's)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_model_arguments(parser, None,
                        "recompute the prior on every N-th frame (0, N, 2N, ...), used from the next frame "
                        "on, as the node does (default: the node's default, 30)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay the bag, print where the outputs went and what was skipped; 1 when anything was skipped."""
    from dcmif_ros.bag import replay_bag

    summary = replay_bag(args.input, args.out, args.topic, pipeline_config(args), storage=args.storage,
                         overwrite=args.overwrite)
    topics = summary.topics
    for partial in summary.removed_partials:
        print(f"dcmif bag: removed {partial}, left by an interrupted run", file=sys.stderr)
    print(f"wrote {summary.output}: {summary.frames_fused} of {summary.frames_read} frames of "
          f"{summary.input_topic} fused into {topics.fused}, {topics.pseudo_thermal}, {topics.status}")
    for skipped in summary.skipped:
        print(f"dcmif bag: skipped message {skipped.index} of {summary.input_topic}: {skipped.reason}",
              file=sys.stderr)
    return EXIT_SOME_SKIPPED if summary.skipped else 0
