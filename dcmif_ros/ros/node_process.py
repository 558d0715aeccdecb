"""dcmif_node in a child process: what the demo, the benchmark and the cross-process tests run.

The child gets the Fast DDS profile, its parameters as a YAML file beside its log, and dies with its
parent (PR_SET_PDEATHSIG), so no run can leak a node. ``check_alive`` turns a dead node into an error that
quotes the end of its log, rather than a wait that times out.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from dcmif_ros.ros.fastdds import fastdds_environment

STOP_TIMEOUT_S = 15.0
"""How long SIGINT gets (the node stops its threads and frees the model) before SIGKILL."""
LOG_TAIL_LINES = 15
_PR_SET_PDEATHSIG = 1


class NodeDiedError(RuntimeError):
    """The node process exited (or never became ready) while it was needed; the message quotes its log."""


class NodeProcess:
    def __init__(self, log_dir: Path, parameters: Mapping[str, object], namespace: str = "",
                 env: Mapping[str, str] | None = None):
        self.log_path = Path(log_dir) / "dcmif_node.log"
        self.params_path = Path(log_dir) / "dcmif_node.params.yaml"
        self._parameters = dict(parameters)
        self._namespace = namespace
        self._env = fastdds_environment(os.environ if env is None else env)
        self._process: subprocess.Popen | None = None

    def start(self) -> NodeProcess:
        """Start ``dcmif_node`` (the console script beside this Python, as a user runs it); with parameters, from a
        parameters file beside the log, without any, bare: the node's own defaults."""
        self.params_path.parent.mkdir(parents=True, exist_ok=True)
        script = Path(sys.executable).with_name("dcmif_node")
        command = [str(script)] if script.is_file() else [sys.executable, "-m", "dcmif_ros.node"]
        command.append("--ros-args")
        if self._parameters:
            self.params_path.write_text(yaml.safe_dump({"/**": {"ros__parameters": self._parameters}}))
            command += ["--params-file", str(self.params_path)]
        else:
            self.params_path.unlink(missing_ok=True)
        if self._namespace:
            command += ["-r", f"__ns:=/{self._namespace.strip('/')}"]
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(command, env=dict(self._env, PYTHONUNBUFFERED="1"),
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             preexec_fn=_die_with_parent)
        return self

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def check_alive(self) -> None:
        if self._process is None or self._process.poll() is None:
            return
        raise NodeDiedError(f"dcmif_node exited with status {self._process.returncode}; "
                            f"the end of {self.log_path}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def stop(self) -> int | None:
        """Ctrl-C the node and wait; SIGKILL after STOP_TIMEOUT_S. Returns its exit status."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGTERM when the parent dies (Linux; a no-op elsewhere)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
