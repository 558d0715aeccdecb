"""launch/dcmif.launch.py, config/dcmif.yaml and config/fastdds_shm.xml, checked without launch_ros.

launch_ros has no PyPI wheel, so the launch file cannot run here: it is compiled and read with ``ast``.
The YAML and the docs' parameter table are checked against the node's own parameter declarations, so the
three cannot drift apart.
"""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ElementTree
from glob import glob
from pathlib import Path

import pytest
import yaml

from dcmif_ros.engine import PROVIDER_CHOICES
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


@pytest.fixture(scope="module")
def launch_tree() -> ast.Module:
    source = LAUNCH_FILE.read_text()
    compile(source, str(LAUNCH_FILE), "exec")
    return ast.parse(source)


def calls_to(tree: ast.Module, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == name]


def module_constants(tree: ast.Module) -> dict:
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}


def keyword(call: ast.Call, name: str, constants: dict | None = None):
    """The literal value of ``call``'s keyword ``name``, resolving a module-level constant by name."""
    value = next(k.value for k in call.keywords if k.arg == name)
    return constants[value.id] if isinstance(value, ast.Name) else ast.literal_eval(value)


def specs_by_name():
    return {spec.name: spec for spec in parameter_specs()}


def test_launch_file_declares_the_documented_arguments(launch_tree):
    declared = {ast.literal_eval(call.args[0]) for call in calls_to(launch_tree, "DeclareLaunchArgument")}
    assert declared == EXPECTED_ARGUMENTS
    for call in calls_to(launch_tree, "DeclareLaunchArgument"):
        name = ast.literal_eval(call.args[0])
        assert any(k.arg == "description" for k in call.keywords), f"launch argument {name} has no description"
    use_sim_time = next(c for c in calls_to(launch_tree, "DeclareLaunchArgument")
                        if ast.literal_eval(c.args[0]) == "use_sim_time")
    assert keyword(use_sim_time, "default_value") == "false"


def test_launch_file_starts_the_node_entry_point_with_remapped_inputs(launch_tree):
    [node] = calls_to(launch_tree, "Node")
    constants = module_constants(launch_tree)
    assert (keyword(node, "package", constants), keyword(node, "executable")) == ("dcmif_ros", "dcmif_node")
    assert "dcmif_node = dcmif_ros.node:main" in (ROOT / "setup.py").read_text()
    strings = {n.value for n in ast.walk(launch_tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert {"image_raw", "image_raw/compressed", "ir_image"} <= strings
    assert set(constants["OPTIONAL_OVERRIDES"]) <= set(specs_by_name()), "launch overrides unknown parameters"


def test_params_file_holds_valid_values_of_declared_parameters():
    document = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(document) == ["/**"], "parameters must apply under any node name and namespace"
    parameters = document["/**"]["ros__parameters"]
    specs = specs_by_name()
    for name, value in parameters.items():
        assert name in specs, f"{name} is not a dcmif_node parameter"
        assert type(value) is type(specs[name].default), f"{name}: {value!r} has the wrong type"
    assert parameters["provider"] in PROVIDER_CHOICES
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
