"""The int8 graph: written by every export (calibrated generically), its parity in the manifest, the graph
rewrites that let int8 kernels run, and how ``precision`` selects it (or refuses, naming the file or provider)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from dcmif_ros.inference.engine import PROVIDER_CHAINS, EngineError, FusionEngine, int8_providers, select_graph
from dcmif_ros.inference.export import sha256
from dcmif_ros.inference.quantize import auto_eligible, export_int8, image_domain_convs, unfold_strided_transposes


@pytest.fixture(scope="module")
def manifest(random_tiny_onnx) -> dict:
    return json.loads(random_tiny_onnx.with_suffix(".json").read_text())


def test_export_writes_an_int8_graph_with_its_parity(random_tiny_onnx, manifest):
    entry = manifest["int8"]
    int8_path = random_tiny_onnx.with_name(entry["file"])
    assert int8_path.name == "dcmif_random.int8.onnx" and sha256(int8_path) == entry["sha256"]
    assert set(entry["max_error_grey"]) == set(entry["mean_error_grey"]) == {"fused", "pseudo_ir", "gate"}
    for name, worst in entry["max_error_grey"].items():
        assert 0 <= entry["mean_error_grey"][name] <= worst <= 255
    assert set(entry["validation_metrics"]) == {"fp32", "int8"}
    assert entry["validation_metrics"]["fp32"].keys() == entry["validation_metrics"]["int8"].keys() >= {"EN", "Qabf"}
    assert entry["speed"]["fp32_ms"] > 0 and entry["speed"]["int8_ms"] > 0
    assert entry["auto"] == auto_eligible(entry)[0]
    assert entry["calibration"]["split"] == "train" and entry["validation"]["split"] == "val"


def test_int8_kernels_run_and_the_image_domain_stays_float(manifest):
    entry = manifest["int8"]
    assert entry["kernels"]["int8"].get("QLinearConv", 0) > 0
    assert "ConvTranspose" not in entry["kernels"]["float"]  # unfolded into 1x1 Conv + DepthToSpace
    assert entry["graph_changes"]["conv_transpose_unfolded"]
    reasons = set(entry["graph_changes"]["kept_float"].values())
    assert {"writes a one-channel image", "runs on an image's pixel blocks"} <= reasons


def strided_transpose_model(kernel: int, bias: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(kernel)
    weight = numpy_helper.from_array(rng.standard_normal((3, 5, kernel, kernel)).astype(np.float32), "w")
    initializers, inputs = [weight], ["x", "w"]
    if bias:
        initializers.append(numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node("ConvTranspose", inputs, ["y"], name="up", strides=[kernel, kernel])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("kernel,bias", [(2, True), (4, False)])
def test_strided_conv_transpose_unfolds_to_the_same_sums(kernel, bias):
    import onnxruntime as ort

    model = strided_transpose_model(kernel, bias)
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 7)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    expected = run(model)
    assert unfold_strided_transposes(model) == ["up"]
    assert [n.op_type for n in model.graph.node] == ["Conv", "DepthToSpace"]
    assert {i.name for i in model.graph.initializer}.isdisjoint({"w", "b"})  # the replaced weights are dropped
    np.testing.assert_allclose(run(model), expected, atol=1e-5)


def test_image_domain_convs_are_found_by_shape():
    weights = [numpy_helper.from_array(np.zeros(shape, np.float32), name) for name, shape in
               (("synth", (1, 16, 5, 5)), ("analysis", (16, 2, 5, 5)), ("inner", (32, 16, 1, 1)))]
    nodes = [helper.make_node("Conv", ["s", "synth"], ["a"], name="synth"),
             helper.make_node("Conv", ["i", "analysis"], ["b"], name="analysis"),
             helper.make_node("Conv", ["b", "inner"], ["c"], name="inner")]
    graph = helper.make_graph(nodes, "g", [], [], weights)
    assert image_domain_convs(helper.make_model(graph)) == {"synth": "writes a one-channel image",
                                                            "analysis": "reads a one- or two-channel image"}


def test_precision_int8_runs_the_int8_graph_on_the_cpu(random_tiny_onnx):
    int8 = FusionEngine(random_tiny_onnx, provider="cpu", precision="int8")
    fp32 = FusionEngine(random_tiny_onnx, provider="cpu", precision="fp32")
    assert (int8.precision, int8.provider, int8.fallback_warning) == ("int8", "cpu", None)
    frame = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    quantised, full = int8.run(frame), fp32.run(frame)
    assert quantised.fused.shape == full.fused.shape
    assert not np.array_equal(quantised.pseudo_ir, full.pseudo_ir)  # a different graph did run
    assert np.corrcoef(quantised.fused.ravel(), full.fused.ravel())[0, 1] > 0.9


def test_auto_precision_picks_int8_on_the_cpu_only_when_the_export_allowed_it(random_tiny_onnx, manifest):
    for allowed, expected in ((True, "int8"), (False, "fp32")):
        changed = dict(manifest, int8=dict(manifest["int8"], auto=allowed))
        path, chosen = select_graph(random_tiny_onnx, changed, "auto", "CPUExecutionProvider")
        assert chosen == expected and path.name.endswith(".int8.onnx") == allowed
        assert select_graph(random_tiny_onnx, changed, "auto", "CUDAExecutionProvider")[1] == "fp16"


def test_auto_eligibility_needs_accuracy_and_speed():
    entry = {"max_error_grey": {"fused": 2.0}, "mean_error_grey": {"fused": 0.3}, "speed": {"speedup": 1.5}}
    assert auto_eligible(entry)[0]
    assert "grey levels" in auto_eligible(dict(entry, max_error_grey={"fused": 30.0}))[1]
    assert "fp32 speed" in auto_eligible(dict(entry, speed={"speedup": 0.9}))[1]


def test_int8_on_a_provider_without_int8_kernels_is_refused_or_falls_back():
    chain = PROVIDER_CHAINS["cuda"]
    with pytest.raises(EngineError, match="CUDAExecutionProvider.*no int8 kernels.*allow_cpu_fallback is false"):
        int8_providers("cuda", chain, allow_cpu_fallback=False)
    providers, warning = int8_providers("cuda", chain, allow_cpu_fallback=True)
    assert providers == PROVIDER_CHAINS["cpu"] and "CUDAExecutionProvider" in warning
    assert int8_providers("cpu", PROVIDER_CHAINS["cpu"], allow_cpu_fallback=False) == (PROVIDER_CHAINS["cpu"], None)


def test_missing_or_corrupt_int8_graph_is_named(model_copy):
    model = model_copy
    int8 = model.with_suffix(".int8.onnx")
    int8.write_bytes(int8.read_bytes()[:-10])
    with pytest.raises(EngineError, match="int8.onnx does not match the manifest"):
        FusionEngine(model, provider="cpu", precision="int8")
    int8.unlink()
    with pytest.raises(EngineError, match="int8 graph not found.*int8.onnx"):
        FusionEngine(model, provider="cpu", precision="int8")
    manifest = json.loads(model.with_suffix(".json").read_text())
    manifest["int8"] = {"file": None, "reason": "no calibration data"}
    model.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match=r"has no int8 graph \(no calibration data\)"):
        FusionEngine(model, provider="cpu", precision="int8")
    model.with_suffix(".json").unlink()
    with pytest.raises(EngineError, match="manifest not found"):
        FusionEngine(model, provider="cpu", precision="int8")


def test_without_calibration_data_the_export_says_why(random_tiny_onnx, tmp_path):
    entry = export_int8(random_tiny_onnx, [{}], 8, "extended", data_roots=[])
    assert entry["file"] is None and "no calibration data" in entry["reason"]


def test_dual_graphs_get_an_int8_graph_too(synthetic_dataset, tmp_path):
    """Calibration is generic: a graph with another input set (visible + real infrared) is quantised as well."""
    from dcmif_ros.inference.dual import DUAL_DCMIF, DualDCMIF
    from dcmif_ros.inference.export import export_dual
    from dcmif_ros.models import get_config

    torch.manual_seed(0)
    net = DualDCMIF(get_config("tiny"))
    with torch.no_grad():
        net.dictionary.normal_(0.0, 0.1)
    onnx_path = export_dual(net, tmp_path, "dual", DUAL_DCMIF, trained=False, int8_data=[synthetic_dataset])
    entry = json.loads(onnx_path.with_suffix(".json").read_text())["int8"]
    assert entry["file"] == "dual.int8.onnx" and entry["kernels"]["int8"].get("QLinearConv", 0) > 0
    engine = FusionEngine(onnx_path, provider="cpu", precision="int8")
    frame = np.full((64, 64, 3), 100, np.uint8)
    assert engine.run_dual(frame, frame[:, :, 0]).fused.shape == frame.shape


def test_export_command_calibrates_on_the_folders_it_is_given(synthetic_dataset, tmp_path):
    from dcmif_ros import cli

    assert cli.main(["export", "--untrained", "--out", str(tmp_path / "none"), "--int8-data"]) == 0
    assert "no calibration data" in json.loads((tmp_path / "none" / "dcmif_tiny.json").read_text())["int8"]["reason"]
    assert cli.main(["export", "--untrained", "--out", str(tmp_path / "some"), "--int8-data",
                     str(synthetic_dataset)]) == 0
    entry = json.loads((tmp_path / "some" / "dcmif_tiny.json").read_text())["int8"]
    assert entry["file"] == "dcmif_tiny.int8.onnx" and entry["calibration"]["folders"] == [synthetic_dataset.name]
