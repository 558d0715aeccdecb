"""launch/dcmif.launch.py, config/dcmif.yaml and config/fastdds_shm.xml.

The launch file runs through the launch API as ``ros2 launch`` runs it, up to the process it would start:
every DeclareLaunchArgument executes (choices checked), and the OpaqueFunction builds the launch_ros Node
with its real keyword arguments. launch and launch_ros have no PyPI wheels: make setup installs them from
../shared/ros2, and these tests skip when it is absent. test_ros_workspace.py starts the node through the
same file from a colcon install. The YAML and the docs' parameter table are checked against the node's own
parameter declarations, so the three cannot drift apart.
"""
from __future__ import annotations

import importlib.util
import re
import xml.etree.ElementTree as ElementTree
from glob import glob
from pathlib import Path

import pytest
import yaml

from dcmif_ros.inference.engine import PRECISION_CHOICES, PROVIDER_CHOICES
from dcmif_ros.prior import parse_prior_spec
from dcmif_ros.ros.parameters import parameter_specs

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "dcmif.launch.py"
PARAMS_FILE = ROOT / "config" / "dcmif.yaml"
PROFILE_FILE = ROOT / "config" / "fastdds_shm.xml"
NODE_DOC = ROOT / "docs" / "node.md"
EXPECTED_ARGUMENTS = {"namespace", "input_image_topic", "ir_image_topic", "params_file", "model_path", "provider",
                      "prior", "use_sim_time", "autostart", "log_level"}
FASTDDS_NAMESPACE = "{http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles}"
SHM_SEGMENT_BYTES = 32 * 1024 * 1024
GIVEN = {"params_file": str(PARAMS_FILE)}
"""Its default is found through the ament index, which only a ROS install or a colcon workspace has."""

needs_launch = pytest.mark.skipif(
    importlib.util.find_spec("launch_ros") is None,
    reason="launch_ros is not installed: make setup installs it from ../shared/ros2, which is absent")


def evaluate(launch_file: Path, arguments: dict[str, str]) -> tuple[list, list]:
    """(declared arguments, Node actions) of ``launch_file`` run with ``arguments``; starts no process."""
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument
    from launch.launch_description_sources import get_launch_description_from_python_launch_file
    from launch_ros.actions import Node

    context = LaunchContext()
    context.launch_configurations.update(arguments)
    pending = list(get_launch_description_from_python_launch_file(str(launch_file)).entities)
    declared, nodes = [], []
    while pending:
        entity = pending.pop(0)
        if isinstance(entity, Node):
            nodes.append(entity)
            continue
        if isinstance(entity, DeclareLaunchArgument):
            declared.append(entity)
        pending[:0] = entity.visit(context) or []
    return declared, nodes


def mutated_launch_file(tmp_path: Path, old: str, new: str) -> Path:
    source = LAUNCH_FILE.read_text()
    assert old in source, f"the launch file no longer contains {old!r}: update this test"
    path = tmp_path / LAUNCH_FILE.name
    path.write_text(source.replace(old, new, 1))
    return path


def specs_by_name():
    return {spec.name: spec for spec in parameter_specs()}


@needs_launch
def test_launch_file_declares_the_documented_arguments():
    declared, _ = evaluate(LAUNCH_FILE, GIVEN)
    assert {argument.name for argument in declared} == EXPECTED_ARGUMENTS
    for argument in declared:
        assert argument.description.strip(), f"launch argument {argument.name} has no description"
    by_name = {argument.name: argument for argument in declared}
    assert by_name["use_sim_time"].default_value[0].text == "false"
    assert set(by_name["provider"].choices) == {"", *PROVIDER_CHOICES}


@needs_launch
def test_launch_file_builds_the_node_entry_point_for_any_valid_arguments():
    from launch_ros.actions import Node

    for arguments in ({}, {"provider": "cpu", "prior": "none", "model_path": "/tmp/m.onnx", "use_sim_time": "true",
                           "autostart": "false", "log_level": "debug", "namespace": "cam2"}):
        _, nodes = evaluate(LAUNCH_FILE, {**GIVEN, **arguments})
        assert [type(node) for node in nodes] == [Node]
        assert (nodes[0].node_package, nodes[0].node_executable) == ("dcmif_ros", "dcmif_node")
    assert "dcmif_node = dcmif_ros.ros.node_main:main" in (ROOT / "setup.py").read_text()
    constants = {}
    exec(compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec"), constants)
    assert set(constants["OPTIONAL_OVERRIDES"]) <= set(specs_by_name()), "launch overrides unknown parameters"


@needs_launch
def test_launch_file_refuses_a_value_outside_the_choices():
    with pytest.raises(Exception, match="provider"):
        evaluate(LAUNCH_FILE, {**GIVEN, "provider": "gpu"})


@needs_launch
@pytest.mark.parametrize("old, new, error", [
    ("from launch_ros.actions import Node", "from launch_ros.action import Node", ModuleNotFoundError),
    ("emulate_tty=True", "emulate_ty=True", TypeError),  # a keyword argument Node does not take
    ('choices=["debug", "info", "warn", "error", "fatal"]', 'choices=["debug", "warn", "error", "fatal"]',
     RuntimeError),  # the default "info" outside its choices
])
def test_a_broken_launch_file_fails_here(tmp_path, old, new, error):
    with pytest.raises(error):
        evaluate(mutated_launch_file(tmp_path, old, new), GIVEN)


def test_params_file_holds_valid_values_of_declared_parameters():
    document = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(document) == ["/**"], "parameters must apply under any node name and namespace"
    parameters = document["/**"]["ros__parameters"]
    specs = specs_by_name()
    for name, value in parameters.items():
        assert name in specs, f"{name} is not a dcmif_node parameter"
        assert type(value) is type(specs[name].default), f"{name}: {value!r} has the wrong type"
    assert parameters["provider"] in PROVIDER_CHOICES
    assert parameters["precision"] in PRECISION_CHOICES
    parse_prior_spec(parameters["prior"])


def test_params_file_and_demo_run_the_node_defaults():
    """The real-time configuration is the node's own: the YAML, launch (which loads it) and ``make run``'s demo
    change nothing, so a bare ``dcmif_node`` runs as the documented set-up does."""
    from dcmif_ros.cli import build_parser
    from dcmif_ros.commands.demo import node_parameters

    specs = specs_by_name()
    parameters = yaml.safe_load(PARAMS_FILE.read_text())["/**"]["ros__parameters"]
    assert {name: value for name, value in parameters.items() if value != specs[name].default} == {}
    demo = node_parameters(build_parser().parse_args(["demo"]), ROOT / "models" / "dcmif_tiny.onnx")
    assert {name: value for name, value in demo.items() if name != "model_path" and value != specs[name].default} == {}
    assert "--processing-size" not in re.search(r"^run:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1)


def test_fastdds_profile_gives_shared_memory_a_32_mb_segment():
    root = ElementTree.parse(PROFILE_FILE).getroot()
    shm = [d for d in root.iter(f"{FASTDDS_NAMESPACE}transport_descriptor")
           if d.findtext(f"{FASTDDS_NAMESPACE}type") == "SHM"]
    assert [int(d.findtext(f"{FASTDDS_NAMESPACE}segment_size")) for d in shm] == [SHM_SEGMENT_BYTES]
    participant = root.find(f"{FASTDDS_NAMESPACE}participant")
    assert participant.get("is_default_profile") == "true", "rmw_fastrtps only applies the default profile"
    used = {t.text for t in participant.iter(f"{FASTDDS_NAMESPACE}transport_id")}
    assert {d.findtext(f"{FASTDDS_NAMESPACE}transport_id") for d in shm} <= used


def test_installed_files_include_launch_and_config():
    setup = (ROOT / "setup.py").read_text()
    for pattern in ("launch/*.launch.py", "config/*.yaml", "config/*.xml"):
        assert f'"{pattern}"' in setup and glob(str(ROOT / pattern)), f"{pattern} is not installed"


def test_docs_list_every_parameter():
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", NODE_DOC.read_text(), flags=re.MULTILINE))
    assert set(specs_by_name()) <= documented, f"undocumented: {set(specs_by_name()) - documented}"
