#!/usr/bin/env bash
# Build a ROS 2 interface package without a ROS install -- dcmif_ros's own dcmif_msgs (sources in msg/) by
# default, or the one given (composition_interfaces from ../shared/ros2, which launch_ros imports) -- with the
# ament/rosidl CMake tooling that the ROS 2 PyPI wheels put into .venv, and install the result into .venv
# itself (the prefix the wheels install into):
#   .venv/lib/libdcmif_msgs__*.so                      C/C++ type support libraries
#   .venv/lib/python3.11/site-packages/dcmif_msgs/    the Python package (import dcmif_msgs.msg)
#   .venv/share/dcmif_msgs, .venv/share/ament_index   msg files, CMake config, ament index entry
# At run time the libraries are found exactly like the wheels' own std_msgs libraries: the wheels'
# ros_wheels_bootstrapper.pth re-executes the interpreter with LD_LIBRARY_PATH=<venv>/lib:... .
#
# Usage: bash scripts/build_interfaces.sh [PACKAGE_DIR]   (DCMIF_VENV=/path/to/venv to use another venv)
# Build directory: build/interfaces/<package>/ (log: build.log there). Idempotent: a second run with
# unchanged inputs only checks a stamp and the import (about a second).
# On failure it prints exactly one line, naming what is missing, on stderr and exits 1.
# With a ROS 2 install, use colcon instead (docs/interfaces.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${DCMIF_VENV:-$root/.venv}"
pkg="$(cd "${1:-$root/dcmif_msgs}" 2>/dev/null && pwd)" || { echo "interface build failed: no folder ${1}" >&2; exit 1; }
name="$(basename "$pkg")"
build="$root/build/interfaces/$name"
log="$build/build.log"
fix_include_dirs="$root/scripts/wheel_include_dirs_fix.cmake"
fail() { echo "$name build failed: $*" >&2; exit 1; }

# --- prerequisites, each checked with its own message -------------------------------------------
py="$venv/bin/python"
[ -x "$py" ] || fail "no Python in $venv (create it with scripts/setup_env.sh)"
command -v cmake >/dev/null || fail "cmake not found (install cmake >= 3.19, e.g. apt-get install cmake)"
cmake_ver="$(cmake --version | sed -n '1s/[^0-9]*\([0-9][0-9.]*\).*/\1/p')"
[ "$(printf '%s\n' 3.19 "$cmake_ver" | sort -V | head -1)" = "3.19" ] \
  || fail "cmake $cmake_ver is too old, 3.19 or newer is required (cmake_language(DEFER))"
command -v make >/dev/null || fail "make not found (apt-get install make)"
command -v cc >/dev/null || fail "no C compiler (cc) found (apt-get install gcc)"
command -v c++ >/dev/null || fail "no C++ compiler (c++) found (apt-get install g++)"
[ -f "$pkg/CMakeLists.txt" ] && [ -f "$pkg/package.xml" ] || fail "$name/CMakeLists.txt or $name/package.xml is missing"
if [ "$name" = dcmif_msgs ]; then
  [ -d "$pkg/msg" ] || fail "dcmif_msgs/msg is missing or not a symlink to ../msg (was the repository checked out with core.symlinks=false?)"
fi
kinds="$(for k in msg srv action; do compgen -G "$pkg/$k/*.$k" >/dev/null && echo "$k"; done; true)"
[ -n "$kinds" ] || fail "no .msg, .srv or .action file in $pkg"
interface_files() { for k in $kinds; do ls "$pkg/$k"/*."$k"; done; }
for p in ament_cmake rosidl_default_generators rosidl_generator_py rosidl_typesupport_fastrtps_c \
         rosidl_typesupport_introspection_c builtin_interfaces std_msgs; do
  [ -f "$venv/share/$p/cmake/${p}Config.cmake" ] \
    || fail "ROS 2 CMake package $p not found in $venv/share (install requirements.txt into the venv)"
done
# Every package the interface files refer to (pkg/Type) must be installed (the package's own types aside).
for dep in $(interface_files | xargs sed -e 's/#.*//' | awk 'NF {print $1}' | sed -n 's#^\([A-Za-z0-9_]*\)/.*#\1#p' | sort -u); do
  [ "$dep" = "$name" ] && continue
  [ -f "$venv/share/$dep/cmake/${dep}Config.cmake" ] \
    || fail "$name uses the package $dep, which is not installed in $venv (pip install ros-kilted-${dep//_/-}; it must also be in DEPENDENCIES of $name/CMakeLists.txt)"
done
# Python side of the generators; prints "fail <why>", or "ok" and the Python and numpy include dirs.
py_info="$(cd / && env -u PYTHONPATH "$py" - <<'EOF' 2>&1
import importlib, os, sysconfig
for mod in ("numpy", "em", "lark", "catkin_pkg", "rosidl_adapter", "rosidl_parser", "rosidl_generator_py", "rclpy"):
    try:
        importlib.import_module(mod)
    except Exception as exc:
        print("fail the Python module %s is not importable by this venv (%s: %s)" % (mod, type(exc).__name__, exc))
        raise SystemExit(0)
import numpy
inc = sysconfig.get_paths()["include"]
if not os.path.isfile(os.path.join(inc, "Python.h")):
    print("fail Python.h not found in %s (install the Python 3.11 development headers, e.g. python3.11-dev)" % inc)
    raise SystemExit(0)
print("ok")
print(inc)
print(numpy.get_include())
EOF
)" || true
case "$py_info" in
  ok$'\n'*) py_inc="$(sed -n 2p <<<"$py_info")"; np_inc="$(sed -n 3p <<<"$py_info")" ;;
  fail\ *) fail "${py_info#fail }" ;;
  *) fail "$py does not run: $(printf '%s' "$py_info" | tail -1)" ;;
esac

# --- fast path: nothing changed since the last successful build ------------------------------------
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)" \
  || fail "$py cannot report its site-packages directory"
inputs_hash="$( { echo "$venv $pkg $py_inc $np_inc $cmake_ver"; cat "$0" "$fix_include_dirs" "$pkg/CMakeLists.txt" "$pkg/package.xml";
  for f in $(interface_files); do echo "$f"; cat "$f"; done;
  cat "$venv"/share/{rosidl_generator_py,rosidl_default_generators,std_msgs}/package.xml 2>/dev/null; } \
  | sha256sum | cut -c1-16)"
stamp="$build/.built-$inputs_hash"
check_import() {  # every generated module imports from the venv, and its first type can be built
  (cd / && env -u PYTHONPATH "$py" -c "
import importlib, sys
site, name = sys.argv[1], sys.argv[2]
for kind in sys.argv[3:]:
    module = importlib.import_module(name + '.' + kind)
    assert module.__file__.startswith(site), module.__file__
    first = getattr(module, sorted(n for n in dir(module) if n[:1].isupper() and '_' not in n)[0])
    getattr(first, 'Request', getattr(first, 'Goal', first))()  # a service's or action's request part
" "$site" "$name" $kinds ) >>"$log" 2>&1
}
mkdir -p "$build"
if [ -f "$stamp" ] && [ -f "$venv/lib/lib${name}__rosidl_typesupport_fastrtps_c.so" ] && check_import; then
  echo "$name: up to date"
  exit 0
fi
rm -f "$build"/.built-*

# --- configure, build, install ---------------------------------------------------------------------
: > "$log"
# Only the venv: a sourced ROS install or a PYTHONPATH must not mix other rosidl versions in.
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
unset PYTHONPATH
# A build tree configured for another source dir or venv is wiped (CMake refuses to reuse it).
cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt" 2>/dev/null | head -1; }
if [ -f "$build/CMakeCache.txt" ] \
   && { [ "$(cache_value CMAKE_HOME_DIRECTORY)" != "$pkg" ] || [ "$(cache_value Python3_EXECUTABLE)" != "$py" ]; }; then
  find "$build" -mindepth 1 -maxdepth 1 ! -name build.log -exec rm -rf {} +
fi

# The wheels' exported CMake targets carry include directories of the machine that built them;
# scripts/wheel_include_dirs_fix.cmake (injected with CMAKE_PROJECT_INCLUDE) rewrites them at configure time.
# test/test_ros_workspace.py passes the same file to colcon.

first_error() {  # the most telling error line of the log, squeezed onto one line
  local line
  # rosidl's own message, e.g. "Error processing 'float77 x' of 'dcmif_msgs/Foo': ...", up to the blank line
  line="$(awk '/Error processing/{f=1} f && /^[[:space:]]*$/{exit} f{printf "%s ", $0}' "$log")"
  # else the last Python exception of a generator, e.g. "KeyError: 'foo_msgs'"
  [ -n "$line" ] || line="$(grep -E '^[[:space:]]*[A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Invalid[A-Za-z]*): ' "$log" | tail -1)"
  # else the compiler's first error, else CMake's
  [ -n "$line" ] || line="$(grep -m1 -E 'error:' "$log")"
  [ -n "$line" ] || line="$(grep -m1 -A3 'CMake Error' "$log")"
  [ -n "$line" ] || line="$(tail -1 "$log")"
  printf '%s' "$line" | tr -s ' \n\t' ' ' | sed 's/^ //; s/ $//' | cut -c1-300
}

cmake -S "$pkg" -B "$build" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$venv" \
  -DCMAKE_PREFIX_PATH="$venv" \
  -DPython3_EXECUTABLE="$py" \
  -DPython3_FIND_VIRTUALENV=ONLY \
  -DBUILD_TESTING=OFF \
  -DCMAKE_PROJECT_INCLUDE="$fix_include_dirs" \
  -DDCMIF_PYTHON_INCLUDE_DIR="$py_inc" \
  -DDCMIF_NUMPY_INCLUDE_DIR="$np_inc" >>"$log" 2>&1 \
  || fail "cmake configure failed: $(first_error) (see ${log#"$root"/})"
jobs="$(nproc 2>/dev/null || echo 2)"
cmake --build "$build" --parallel "$jobs" >>"$log" 2>&1 \
  || fail "compiling the interfaces failed: $(first_error) (see ${log#"$root"/})"

# Remove what the previous install put into the venv (a renamed .msg leaves no stale module behind),
# then install. Only paths inside the venv are ever removed.
if [ -f "$build/install_manifest.txt" ]; then
  while IFS= read -r f; do
    case "$f" in "$venv"/*) rm -f -- "$f" ;; esac
  done < "$build/install_manifest.txt"
fi
cmake --install "$build" >>"$log" 2>&1 \
  || fail "installing the interfaces into $venv failed: $(first_error) (see ${log#"$root"/})"
check_import || fail "$name was installed but does not import: $(tail -1 "$log") (see ${log#"$root"/})"
touch "$stamp"
n="$(interface_files | wc -l)"
echo "$name: built and installed into ${venv#"$root"/} ($n interface type(s))"
