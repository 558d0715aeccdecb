"""ONNX export parity and the FusionEngine: providers, manifest checks, bad frames."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from dcmif_ros.inference.engine import EngineError, FusionEngine, pad_to_multiple
from dcmif_ros.inference.export import FORBIDDEN_OPS, OPSET
from dcmif_ros.inference.pipeline import FusionPipeline, PipelineConfig, default_model_path

PARITY_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def engine(random_tiny_onnx) -> FusionEngine:
    return FusionEngine(random_tiny_onnx, provider="cpu")


def test_graph_is_dynamic_and_free_of_fft(random_tiny_onnx):
    graph = onnx.load(str(random_tiny_onnx))
    assert graph.opset_import[0].version >= OPSET
    assert not {n.op_type for n in graph.graph.node} & FORBIDDEN_OPS
    assert not any("complex" in n.op_type.lower() for n in graph.graph.node)
    dims = [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims[2:] == ["height", "width"]


def test_graph_carries_the_solve_kernel_as_a_constant(random_tiny_onnx):
    """REN derives its solve kernel from its weights (convolutions of an impulse, a gather); the export freezes
    it, so no convolution or gather of the graph runs on constants alone (it would be recomputed on every
    frame where onnxruntime cannot fold it, as in fp16 graphs)."""
    graph = onnx.load(str(random_tiny_onnx)).graph
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    derived = [node.name for node in graph.node if node.op_type in {"Conv", "Gather", "ScatterND"}
               and all(name in constants or not name for name in node.input)]
    assert not derived
    manifest = json.loads(random_tiny_onnx.with_suffix(".json").read_text())
    assert 0.0 <= manifest["solve_truncation"]["ren"] < 1e-3


@pytest.mark.parametrize("height,width", [(64, 64), (240, 320), (481, 641), (37, 53), (5, 3)])
def test_onnxruntime_matches_pytorch(engine, random_tiny_bundle, height, width):
    rng = np.random.default_rng(height * width)
    luminance = rng.random((height, width), dtype=np.float32)
    gamma = 1 + 0.1 * rng.standard_normal(engine.atoms).astype(np.float32)
    beta = 0.05 * rng.standard_normal(engine.atoms).astype(np.float32)
    onnx_out = engine.infer_luminance(luminance, gamma, beta)
    padded = torch.from_numpy(pad_to_multiple(luminance, engine.pad_multiple, engine.min_side))[None, None]
    with torch.no_grad():
        torch_out = random_tiny_bundle.net(padded, torch.from_numpy(gamma)[None], torch.from_numpy(beta)[None])
    for ours, reference in zip(onnx_out, torch_out):
        assert ours.shape == (height, width)
        assert np.abs(ours - reference[0, 0, :height, :width].numpy()).max() <= PARITY_TOLERANCE


def test_run_returns_aligned_outputs(engine):
    frame = np.random.default_rng(0).integers(0, 256, (91, 117, 3), dtype=np.uint8)
    result = engine.run(frame, want_gate=True)
    assert result.fused.shape == frame.shape and result.fused.dtype == np.uint8
    assert result.pseudo_ir.shape == frame.shape[:2] and result.pseudo_ir.dtype == np.uint8
    assert result.gate.shape == frame.shape[:2] and 0 <= result.gate.min() <= result.gate.max() <= 1
    assert engine.run(frame).gate is None
    assert set(result.timings_ms) == {"pre", "infer", "post", "total"}


def test_a_frame_whose_pseudo_ir_nobody_reads_runs_a_graph_without_it(engine):
    """onnxruntime runs every node of a graph whatever a run asks for: the engine cuts the pseudo-IR's nodes."""
    frame = np.random.default_rng(2).integers(0, 256, (91, 117, 3), dtype=np.uint8)
    whole, lean = engine.run(frame, want_gate=True), engine.run(frame, want_gate=True, want_pseudo_ir=False)
    assert lean.pseudo_ir is None and whole.pseudo_ir is not None
    assert np.array_equal(lean.fused, whole.fused) and np.array_equal(lean.gate, whole.gate)
    assert [output.name for output in engine.lean_session.get_outputs()] == ["fused", "gate"]


@pytest.mark.parametrize("graph", ["dcmif_tiny.onnx", "dcmif_tiny.fp16.onnx", "dcmif_tiny.int8.onnx"])
def test_every_shipped_precision_cuts_to_a_valid_graph_without_the_pseudo_ir(graph):
    from dcmif_ros.inference.graph_optimization import graph_without

    path = default_model_path().with_name(graph)
    whole, cut = onnx.load(str(path)), onnx.load_from_string(graph_without(path, "pseudo_ir"))
    onnx.checker.check_model(cut)
    assert [o.name for o in cut.graph.output] == ["fused", "gate"] and len(cut.graph.node) < len(whole.graph.node)
    assert (cut.ir_version, cut.opset_import) == (whole.ir_version, whole.opset_import)
    assert graph_without(default_model_path().with_name("lrcfuse.onnx"), "pseudo_ir") is None  # nothing to cut


def test_the_priors_first_pass_opens_no_cut_graph(random_tiny_onnx):
    assert FusionEngine(random_tiny_onnx, provider="cpu", lean=False).lean_session is None


def test_prior_changes_the_output(engine):
    frame = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    gamma = np.full(engine.atoms, 1.5, np.float32)
    beta = np.full(engine.atoms, 0.1, np.float32)
    plain, modulated = engine.run(frame), engine.run(frame, gamma, beta)
    assert np.abs(plain.pseudo_ir.astype(int) - modulated.pseudo_ir.astype(int)).max() > 0


def test_processing_resolution_keeps_the_input_size(random_tiny_onnx):
    engine = FusionEngine(random_tiny_onnx, provider="cpu", processing_size=(160, 120))
    frame = np.random.default_rng(2).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    result = engine.run(frame, want_gate=True)
    assert result.fused.shape == frame.shape and result.pseudo_ir.shape == (480, 640)


def test_film_heads_map_features_to_gamma_beta(engine, random_tiny_bundle):
    features = np.random.default_rng(3).standard_normal(random_tiny_bundle.prior_feature_dim).astype(np.float32)
    gamma, beta = engine.film_from_features(features)
    with torch.no_grad():
        ref_gamma, ref_beta = random_tiny_bundle.film(torch.from_numpy(features)[None])
    assert np.allclose(gamma, ref_gamma[0].numpy(), atol=1e-5) and np.allclose(beta, ref_beta[0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="expect 384"):
        engine.film_from_features(np.zeros(10, np.float32))


@pytest.mark.parametrize(
    "frame,reason",
    [
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((10, 10, 4), np.uint8), "3 channels"),
        (np.zeros((0, 10, 3), np.uint8), "zero-size"),
        ([[1, 2]], "numpy"),
    ],
)
def test_bad_frames_are_rejected_with_the_reason(engine, frame, reason):
    with pytest.raises(ValueError, match=reason):
        engine.run(frame)


def test_grey_frames_are_accepted(engine):
    assert engine.run(np.full((32, 48), 90, np.uint8)).fused.shape == (32, 48, 3)


def copy_model(source, folder):
    for suffix in (".onnx", ".film.npz", ".json"):
        shutil.copy(source.with_name(source.stem + suffix), folder)
    return folder / source.name


def test_missing_model_is_named(tmp_path):
    with pytest.raises(EngineError, match="not found.*nothing.onnx"):
        FusionEngine(tmp_path / "nothing.onnx")


def test_corrupt_model_is_refused(random_tiny_onnx, tmp_path):
    model = copy_model(random_tiny_onnx, tmp_path)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(EngineError, match="does not match its manifest"):
        FusionEngine(model)


def test_manifest_mismatch_is_refused(random_tiny_onnx, tmp_path):
    model = copy_model(random_tiny_onnx, tmp_path)
    manifest = json.loads(model.with_suffix(".json").read_text())
    manifest["format"] = "something-else"
    model.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="format"):
        FusionEngine(model)
    model.with_suffix(".json").unlink()
    with pytest.raises(EngineError, match="manifest not found"):
        FusionEngine(model)


def test_the_export_measures_both_cpu_optimisation_levels(engine):
    from dcmif_ros.inference.graph_optimization import ALL_MIN_SPEEDUP, MANIFEST_KEY

    measured = engine.manifest[MANIFEST_KEY]
    assert set(measured["ms"]) == {"extended", "all"} and measured["size"] == "320x240"
    faster = measured["ms"]["extended"] >= ALL_MIN_SPEEDUP * measured["ms"]["all"]
    assert measured["level"] == ("all" if faster else "extended")


@pytest.mark.parametrize("recorded", ["extended", "all", None])
def test_cpu_sessions_open_at_the_level_the_manifest_records(model_copy, recorded):
    """None: a manifest written before the measurement, which keeps the old level (no NCHWc layout transform)."""
    import onnxruntime as ort

    from dcmif_ros.inference.graph_optimization import MANIFEST_KEY, graph_optimization_level

    manifest_path = model_copy.with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    manifest[MANIFEST_KEY] = None if recorded is None else {"level": recorded}
    manifest_path.write_text(json.dumps(manifest))
    engine = FusionEngine(model_copy, provider="cpu")
    expected = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if recorded == "all" else (
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    assert engine.session.get_session_options().graph_optimization_level == expected
    assert graph_optimization_level("CUDAExecutionProvider", manifest) == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_unknown_provider_is_named(random_tiny_onnx):
    with pytest.raises(EngineError, match="unknown provider 'gpu'"):
        FusionEngine(random_tiny_onnx, provider="gpu")


def test_silent_cpu_fallback_is_reported_or_refused(random_tiny_onnx):
    """Where CUDA is listed but no GPU exists, the session falls back to CPU: we notice."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(EngineError, match="not available"):
            FusionEngine(random_tiny_onnx, provider="cuda")
        return
    try:
        engine = FusionEngine(random_tiny_onnx, provider="cuda", allow_cpu_fallback=True)
    except EngineError as exc:  # a CUDA provider that cannot even start is also a clear error
        assert "cuda" in str(exc).lower()
        return
    if engine.provider == "cuda":
        pytest.skip("a GPU is present: no fallback to observe")
    assert "CPUExecutionProvider" in engine.fallback_warning
    from dcmif_ros.inference.graph_optimization import graph_optimization_level

    level = engine.session.get_session_options().graph_optimization_level
    assert engine.precision == "fp32"
    assert level == graph_optimization_level("CPUExecutionProvider", engine.manifest)  # the CPU's, not CUDA's
    with pytest.raises(EngineError, match="allow_cpu_fallback is false"):
        FusionEngine(random_tiny_onnx, provider="cuda", allow_cpu_fallback=False)


def test_export_writes_an_fp16_graph_within_tolerance(random_tiny_onnx):
    from dcmif_ros.inference.export import FP16_TOLERANCE, sha256

    entry = json.loads(random_tiny_onnx.with_suffix(".json").read_text())["fp16"]
    fp16_path = random_tiny_onnx.with_name(entry["file"])
    assert fp16_path.name == "dcmif_random.fp16.onnx" and sha256(fp16_path) == entry["sha256"]
    assert 0 < entry["max_abs_error"] <= FP16_TOLERANCE == entry["tolerance"]
    graph = onnx.load(str(fp16_path))
    assert {i.type.tensor_type.elem_type for i in graph.graph.input} == {onnx.TensorProto.FLOAT}  # fp32 I/O
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)


def test_fp16_graph_runs_on_request_and_matches_fp32(random_tiny_onnx, engine):
    from dcmif_ros.inference.export import FP16_TOLERANCE

    half = FusionEngine(random_tiny_onnx, provider="cpu", precision="fp16")
    assert (engine.precision, half.precision) == ("fp32", "fp16")  # auto on the CPU provider: fp32
    luminance = np.random.default_rng(3).random((120, 160), dtype=np.float32)
    for full, reduced in zip(engine.infer_luminance(luminance), half.infer_luminance(luminance)):
        assert 0 < np.abs(full - reduced).max() <= FP16_TOLERANCE


def test_auto_precision_picks_fp16_for_cuda_only(random_tiny_onnx):
    from dcmif_ros.inference.engine import select_graph

    manifest = json.loads(random_tiny_onnx.with_suffix(".json").read_text())
    for provider, precision in (("CUDAExecutionProvider", "fp16"), ("TensorrtExecutionProvider", "fp32"),
                                ("CPUExecutionProvider", "fp32")):
        path, chosen = select_graph(random_tiny_onnx, manifest, "auto", provider)
        assert chosen == precision and path.name.endswith(".fp16.onnx") == (precision == "fp16")


def test_missing_or_corrupt_fp16_graph_is_named(model_copy):
    model = model_copy
    with pytest.raises(EngineError, match="unknown precision 'fp8'"):
        FusionEngine(model, provider="cpu", precision="fp8")
    fp16 = model.with_suffix(".fp16.onnx")
    fp16.write_bytes(fp16.read_bytes()[:-10])
    with pytest.raises(EngineError, match="fp16.onnx does not match the manifest"):
        FusionEngine(model, provider="cpu", precision="fp16")
    manifest = json.loads(model.with_suffix(".json").read_text())
    manifest["fp16"] = {"file": None, "reason": "fp16 differs from fp32 by 1.00e-01 > 1.57e-02"}
    model.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match=r"has no fp16 graph \(fp16 differs"):
        FusionEngine(model, provider="cpu", precision="fp16")
    assert FusionEngine(model, provider="cpu").precision == "fp32"  # auto still works without one


@pytest.mark.parametrize("key", ["onnx_sha256", "prior_encoder_id", "film_file"])
def test_a_manifest_missing_a_key_is_named(random_tiny_onnx, tmp_path, key):
    model = copy_model(random_tiny_onnx, tmp_path)
    manifest = json.loads(model.with_suffix(".json").read_text())
    del manifest[key]
    model.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match=f"lacks {key}: .*export the model again"):
        FusionEngine(model)


@pytest.mark.parametrize("prior", ["embedded", "none"])
@pytest.mark.parametrize("name", ["dcmif_dual_tiny.onnx", "lrcfuse.onnx"])
def test_the_visible_pipeline_refuses_a_dual_modal_model_by_name(name, prior):
    """It used to fail with KeyError: 'prior_encoder_id', or 'gamma must be a non-empty vector'."""
    model = default_model_path(name)
    with pytest.raises(EngineError, match=rf"{name} is a dual-modal model .*needs a visible model"):
        FusionPipeline(PipelineConfig(model_path=model, provider="cpu", prior=prior))


def test_the_node_lets_onnxruntime_threads_sleep_between_operators(random_tiny_onnx):
    """Spinning suits a process alone on the CPU; in a ROS graph it takes the cores from the camera and DDS."""
    from pathlib import Path

    from dcmif_ros.inference.engine import SPIN_CONFIG_KEY
    from dcmif_ros.ros.parameters import NodeConfig

    sleeping = FusionEngine(random_tiny_onnx, provider="cpu", spin_wait=False)
    assert sleeping.session.get_session_options().get_session_config_entry(SPIN_CONFIG_KEY) == "0"
    spinning = FusionEngine(random_tiny_onnx, provider="cpu")  # offline tools keep onnxruntime's default
    with pytest.raises(RuntimeError):  # onnxruntime: no such entry set
        spinning.session.get_session_options().get_session_config_entry(SPIN_CONFIG_KEY)
    node = NodeConfig(Path(random_tiny_onnx), "cpu", "auto", True, 0, "auto", "none", 30.0, False, 1.0)
    assert node.pipeline_config(30).spin_wait is False


def test_the_node_shares_the_cpu_cores_among_two_workers_and_obeys_explicit_counts(random_tiny_onnx, monkeypatch):
    """auto on the CPU provider: two workers, the process's cores shared between them; explicit values win."""
    from pathlib import Path

    from dcmif_ros.ros import parameters
    from dcmif_ros.ros.parameters import CPU_INFERENCE_WORKERS, NodeConfig

    monkeypatch.setattr(parameters, "usable_cores", lambda: 8)
    auto = NodeConfig(Path(random_tiny_onnx), "cpu", "auto", True, 0, "auto", "none", 30.0, False, 1.0)
    # each run computes on its worker's thread and on the shared pool (threads - 1): together, every core
    assert (auto.workers, auto.threads) == (CPU_INFERENCE_WORKERS, 8 - CPU_INFERENCE_WORKERS + 1)
    assert auto.pipeline_config(30).threads == auto.threads
    monkeypatch.setattr(parameters, "usable_cores", lambda: 2)
    assert auto.threads == 8 - CPU_INFERENCE_WORKERS + 1  # decided once: the session was sized by it
    assert dataclasses.replace(auto).threads == 1  # two cores: two workers on one thread each, no pool
    monkeypatch.setattr(parameters, "usable_cores", lambda: 1)
    assert dataclasses.replace(auto).threads == 1  # never zero threads
    explicit = dataclasses.replace(auto, inference_workers=3, inference_threads=5)
    assert (explicit.workers, explicit.threads) == (3, 5)
