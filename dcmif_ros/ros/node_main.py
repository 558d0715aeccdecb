"""The ``dcmif_node`` console script: Ctrl-C while the node's modules still import exits 0, like Ctrl-C later.

Importing dcmif_ros.node (torch, onnxruntime, rclpy) takes seconds, and a Ctrl-C then (``ros2 launch``
interrupted right after start) would otherwise end in a KeyboardInterrupt traceback and exit status -2.
"""
from __future__ import annotations

import signal
import sys


def main() -> int:
    try:
        from dcmif_ros.node import main as run_node
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # ros2 launch forwards the terminal's Ctrl-C a second time
        return 0
    return run_node()


if __name__ == "__main__":
    sys.exit(main())
