"""The README's ROS 2 workspace path, run for real: colcon build, source the install space, ros2 launch.

The README's own lines run, from its ``colcon build`` line on: colcon (from PyPI) builds dcmif_msgs and
dcmif_ros from a copy of this checkout into a temporary workspace, ``source install/setup.bash`` and the
``export`` line run in bash, and its ``ros2 launch`` line starts the node through the shipped launch file
(with a namespace and topic of this test appended). This process plays the camera and the downstream
subscriber: a few camera frames in, fused images and a status message out; then Ctrl-C, as a user would.

Stand-ins, because this machine has no ROS install (rosdep, the pip step and ``source /opt/ros/...`` are not
run; the rosdep line is checked for its form only):
* .venv's ROS 2 wheels for /opt/ros/<distro>: PATH, AMENT_PREFIX_PATH and CMAKE_PREFIX_PATH point at it, as
  /opt/ros/<distro>/setup.bash would; .venv is also the README's venv (``python -m colcon``);
* the wheels' CMake targets need scripts/wheel_include_dirs_fix.cmake, appended to the colcon line;
* ``ros2`` is a small script making the same ros2launch API call as the ``ros2 launch`` verb (ros2cli is
  not on PyPI); launch, launch_ros and ros2launch come from ../shared/ros2 (make setup installs them).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import Image

from dcmif_ros.inference.engine import FusionEngine
from dcmif_ros.model_files import export_files
from node_harness import (LOCALHOST_ONLY, RELIABLE, OutputObserver, image, private_domain_id, unique_namespace,
                          wait_until)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_SECTION = "### With a ROS 2 install"
VENV = Path(sys.prefix)
DOMAIN_ID = private_domain_id(salt=89)
BUILD_TIMEOUT_S = 900
ACTIVATION_TIMEOUT_S = 180.0  # imports, the text encoder and the warm-up on a loaded 2-core machine
EXIT_TIMEOUT_S = 30.0
FRAME_SIZE = (160, 120)  # one UDP datagram: no Fast DDS profile needed on this process's side
FRAMES_WANTED = 3
NOT_CLEAN = re.compile(r"Traceback|transition|cannot activate|\[ERROR\]|Loading weights|it/s\]")

ROS2_LAUNCH_STAND_IN = '''#!{python}
"""Stand-in for ros2cli's `ros2 launch PACKAGE FILE ARGS...`: the ros2launch API call that verb makes."""
import sys
from ros2launch.api import get_share_file_path_from_package, launch_a_launch_file
verb, package, file_name, *arguments = sys.argv[1:]
if verb != "launch":
    sys.exit(f"this stand-in only knows 'ros2 launch', not {{verb!r}}")
path = get_share_file_path_from_package(package_name=package, file_name=file_name)
print(f"launch file: {{path}}", flush=True)
sys.exit(launch_a_launch_file(launch_file_path=path, launch_file_arguments=arguments, noninteractive=True))
'''


def readme_commands() -> list[str]:
    """The lines of the bash block in the README's ROS 2 section, comments stripped."""
    section = README.read_text().split(README_SECTION, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, f"no bash block under {README_SECTION!r} in README.md"
    return [line.split(" #", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def readme_command(starting: str) -> str:
    found = [line for line in readme_commands() if line.startswith(starting)]
    assert len(found) == 1, f"README's ROS 2 section needs exactly one line starting {starting!r}: {found}"
    return found[0]


def underlay_environment() -> dict[str, str]:
    """What `source /opt/ros/<distro>/setup.bash` and the README's venv give, with .venv as both."""
    return {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "AMENT_PREFIX_PATH": str(VENV), "CMAKE_PREFIX_PATH": str(VENV)}


def wheel_cmake_arguments() -> list[str]:
    import sysconfig

    import numpy
    return ["--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF",
            f"-DCMAKE_PROJECT_INCLUDE={ROOT / 'scripts' / 'wheel_include_dirs_fix.cmake'}",
            f"-DDCMIF_PYTHON_INCLUDE_DIR={sysconfig.get_paths()['include']}",
            f"-DDCMIF_NUMPY_INCLUDE_DIR={numpy.get_include()}"]


def copy_checkout(destination: Path) -> None:
    """The files a clone has (tracked and new, not ignored), symlinks kept (dcmif_msgs/msg -> ../msg)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if not os.path.lexists(source):
            continue  # deleted in the working tree, not yet committed
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """~/ws of the README after its colcon build line: src/dcmif_ros and the install space."""
    ws = tmp_path_factory.mktemp("ws")
    copy_checkout(ws / "src" / "dcmif_ros")
    command = shlex.split(readme_command("python -m colcon build")) + wheel_cmake_arguments()
    command[0] = sys.executable
    result = subprocess.run(command, cwd=ws, env=underlay_environment(), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, f"colcon build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return ws


def test_readme_rosdep_line_skips_source_packages_and_sees_both():
    rosdep = shlex.split(readme_command("rosdep install"))
    colcon = shlex.split(readme_command("python -m colcon build"))
    assert "--ignore-src" in rosdep, "without it rosdep looks for a rosdep key named dcmif_msgs"
    paths = rosdep[rosdep.index("--from-paths") + 1:]
    paths = paths[:next((i for i, word in enumerate(paths) if word.startswith("-")), len(paths))]
    bases = colcon[colcon.index("--base-paths") + 1:]
    assert paths == bases == ["src", "src/dcmif_ros/dcmif_msgs"]
    assert readme_commands().index("source install/setup.bash") < readme_commands().index(
        readme_command("ros2 launch")), "the install space must be sourced before ros2 launch"


def test_install_space_holds_the_package_and_every_file_the_engine_opens(workspace):
    install = workspace / "install" / "dcmif_ros"
    [site] = install.glob("lib/python3*/site-packages")
    source_modules = {p.relative_to(ROOT) for p in (ROOT / "dcmif_ros").rglob("*.py")}
    assert {p.relative_to(site) for p in (site / "dcmif_ros").rglob("*.py")} == source_modules
    models = install / "share" / "dcmif_ros" / "models"
    manifests = sorted(models.glob("*.json"))
    assert [m.name for m in manifests] == sorted(p.name for p in (ROOT / "models").glob("*.json"))
    for manifest in manifests:
        export_files(manifest)  # every file the manifest names is installed beside it
        for precision in ("fp32", "fp16"):
            engine = FusionEngine(manifest.with_suffix(".onnx"), provider="cpu", precision=precision)
            assert engine.precision == precision, manifest.name
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert FusionEngine(models / "dcmif_tiny.onnx", provider="cpu").run(frame).fused.shape == frame.shape


class LaunchRun:
    """The README's lines from `source install/setup.bash` to `ros2 launch`, in bash, output collected."""

    def __init__(self, ws: Path, bin_dir: Path, extra_arguments: list[str]):
        lines = readme_commands()
        script = lines[lines.index("source install/setup.bash"):]
        script[-1] = f"exec {script[-1]} {shlex.join(extra_arguments)}"
        assert script[-1].startswith("exec ros2 launch "), script
        env = {**underlay_environment(), **LOCALHOST_ONLY, "ROS_DOMAIN_ID": str(DOMAIN_ID),
               "PYTHONUNBUFFERED": "1", "RCUTILS_COLORIZED_OUTPUT": "0"}
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
        self.process = subprocess.Popen(["bash", "-c", "\n".join(script)], cwd=ws, env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def alive(self) -> bool:
        return self.process.poll() is None

    def ctrl_c(self) -> int:
        """Ctrl-C in the terminal: SIGINT to the whole process group, so the node gets it from the terminal
        and again from launch. Whatever is left after EXIT_TIMEOUT_S is killed, the node too."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(EXIT_TIMEOUT_S)
        finally:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reader.join(EXIT_TIMEOUT_S)


def test_ros2_launch_from_the_install_space_fuses_camera_frames(workspace, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ros2").write_text(ROS2_LAUNCH_STAND_IN.format(python=sys.executable))
    (bin_dir / "ros2").chmod(0o755)
    namespace = unique_namespace()
    viewer = OutputObserver(namespace, DOMAIN_ID, prefix="dcmif/", name="camera_and_viewer")
    camera = viewer.node.create_publisher(Image, "camera/image_raw", RELIABLE)
    launch = LaunchRun(workspace, bin_dir, [f"namespace:={namespace}/dcmif",
                                            f"input_image_topic:={namespace}/camera/image_raw"])
    try:
        assert wait_until(lambda: camera.get_subscription_count() > 0 or not launch.alive(),
                          ACTIVATION_TIMEOUT_S), f"the node never subscribed to the camera:\n{launch.output}"
        assert launch.alive(), f"ros2 launch exited:\n{launch.output}"
        width, height = FRAME_SIZE
        sent = []
        for n in range(40):
            if len({(m.header.stamp.sec, m.header.stamp.nanosec) for m in viewer.fused} & set(sent)) >= FRAMES_WANTED:
                break
            frame = image("bgr8", width, height, sec=1_700_000_000 + n, frame_id="ws_camera")
            camera.publish(frame)
            sent.append((frame.header.stamp.sec, frame.header.stamp.nanosec))
            time.sleep(0.25)
        fused = [m for m in viewer.fused if (m.header.stamp.sec, m.header.stamp.nanosec) in sent]
        assert len(fused) >= FRAMES_WANTED, f"{len(fused)} fused images for {len(sent)} frames:\n{launch.output}"
        assert all((m.width, m.height, m.encoding, m.header.frame_id) == (width, height, "bgr8", "ws_camera")
                   for m in fused)
        assert wait_until(lambda: any(s.frames_processed > 0 for s in viewer.statuses)), "no status message"
        status = viewer.statuses[-1]
        assert status.model_name and status.execution_provider, status
    finally:
        status_code = launch.ctrl_c()
        viewer.close()
    output = launch.output
    assert status_code == 0, output
    installed_model = workspace / "install" / "dcmif_ros" / "share" / "dcmif_ros" / "models" / "dcmif_tiny.onnx"
    assert f"launch file: {workspace / 'install'}" in output, output
    assert f"configured: model {installed_model}" in output, output
    assert len(re.findall(r"\]: activated: ", output)) == 1, output
    assert "process has finished cleanly" in output, output
    assert not NOT_CLEAN.search(output), output
