"""dcmif_node as ros2 run and ros2 launch start it (its console script, in its own process).

One log line per lifecycle transition (configured; activated, with provider, precision and network
resolution), no progress bars, and Ctrl-C exits 0 without a traceback or a transition error at any
moment: while the modules import, during the seconds of activation (the default embedded prior loads its
text encoder then), and while the node spins.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from node_harness import LOCALHOST_ONLY, private_domain_id

DOMAIN_ID = private_domain_id(salt=53)
NODE_SCRIPT = Path(sys.executable).with_name("dcmif_node")
STARTUP_TIMEOUT_S = 120.0  # imports and activation on a loaded 2-core machine take 10-20 s
EXIT_TIMEOUT_S = 30.0
NOT_CLEAN = re.compile(r"Traceback|KeyboardInterrupt|transition|cannot activate|\[ERROR\]|Loading weights|it/s\]")
"""What a clean start and Ctrl-C must never print (transformers' progress bar ends in 'it/s]')."""


class NodeRun:
    """The console script with the given parameters; its output is collected line by line."""

    def __init__(self, *parameters: str):
        if not NODE_SCRIPT.is_file():
            pytest.fail(f"{NODE_SCRIPT} is missing: run make setup")
        env = {**os.environ, **LOCALHOST_ONLY, "ROS_DOMAIN_ID": str(DOMAIN_ID), "PYTHONUNBUFFERED": "1",
               "RCUTILS_COLORIZED_OUTPUT": "0"}
        command = [str(NODE_SCRIPT), "--ros-args", "-p", "provider:=cpu"]
        for parameter in parameters:
            command += ["-p", parameter]
        self.lines: list[str] = []
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and self.process.poll() is None:
            found = [line for line in list(self.lines) if text in line]
            if found:
                return found[0]
            time.sleep(0.02)
        pytest.fail(f"dcmif_node never logged {text!r} (exit status {self.process.poll()}):\n{self.output}")

    def ctrl_c(self, again_after_s: float | None = None) -> int:
        """SIGINT; ``again_after_s``: a second one then, as under ros2 launch, which forwards the terminal's
        Ctrl-C to a node that got it from the terminal already."""
        self.process.send_signal(signal.SIGINT)
        if again_after_s is not None:
            time.sleep(again_after_s)
            self.process.send_signal(signal.SIGINT)
        try:
            status = self.process.wait(EXIT_TIMEOUT_S)
        finally:
            self.process.kill()
        self._reader.join(EXIT_TIMEOUT_S)
        return status


@pytest.fixture
def run_node():
    runs: list[NodeRun] = []

    def start(*parameters: str) -> NodeRun:
        runs.append(NodeRun(*parameters))
        return runs[-1]

    yield start
    for run in runs:
        run.process.kill()
        run.process.wait()


def test_lifecycle_is_logged_once_per_transition_and_ctrl_c_twice_while_spinning_exits_0(run_node):
    node = run_node()
    activated = node.wait_for("activated:")
    assert "(fp32) on CPUExecutionProvider (provider 'cpu')" in activated, activated
    assert "network resolution auto" in activated, activated  # bare: the node's default, resolved per frame
    assert node.ctrl_c(again_after_s=0.03) == 0, node.output
    assert [line.count("configured:") for line in node.lines if "configured:" in line] == [1], node.output
    assert len([line for line in node.lines if "activated:" in line]) == 1, node.output
    assert not NOT_CLEAN.search(node.output), node.output


def test_the_activated_line_names_the_processing_resolution_and_ctrl_c_twice_exits_0(run_node):
    node = run_node("processing_width:=160", "processing_height:=120", "prior:=none")
    assert "network resolution 160x120, prior 'none'" in node.wait_for("activated:")
    assert node.ctrl_c(again_after_s=0.001) == 0, node.output  # the second one lands in the shutdown
    assert not NOT_CLEAN.search(node.output), node.output


def test_ctrl_c_during_activation_exits_0_without_a_transition_error(run_node):
    node = run_node()
    node.wait_for("configured:")
    assert node.ctrl_c() == 0, node.output
    assert "activated:" not in node.output, "Ctrl-C came after activation: this test did not test it"
    assert not NOT_CLEAN.search(node.output), node.output


def test_ctrl_c_while_the_modules_import_exits_0(run_node):
    node = run_node()
    time.sleep(0.5)  # importing torch, onnxruntime and rclpy alone takes seconds
    assert node.process.poll() is None and "configured:" not in node.output
    assert node.ctrl_c(again_after_s=0.01) == 0, node.output
    assert not NOT_CLEAN.search(node.output), node.output
