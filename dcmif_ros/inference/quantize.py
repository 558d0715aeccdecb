"""int8: a statically quantised copy of an exported graph for the CPU provider, with its parity measured.

``export_int8`` writes ``<name>.int8.onnx`` beside the fp32 graph for any exported graph (visible or dual-modal),
calibrated on training frames, and returns the manifest's ``int8`` entry: the error against the fp32 graph, the
validation metrics of both, the speed of both on this machine, which operators onnxruntime runs with int8 kernels
and which stay in float, and whether ``precision: auto`` may pick it.

How the graph is quantised (onnxruntime.quantization, QDQ format, MinMax calibration, uint8 activations, int8
weights per output channel with reduce_range, as onnxruntime advises for CPUs without VNNI):

* Weights that the exporter computes in the graph (a slice of a shared weight whose end is read from a tensor's
  shape) are materialised as constants first: quantize_static quantises only constant weights.
* ConvTranspose with stride equal to its kernel (the U-Nets' non-overlapping up-sampling) is rewritten as a 1×1
  Conv and DepthToSpace, the same sums: onnxruntime has no int8 ConvTranspose kernel, so these stayed in float.
* Convolutions on the image domain stay float (``image_domain_convs``): the ones that read a one- or two-channel
  image (REN's analysis), write one (D⋆S, the syntheses of the outputs' coefficients) or run on an image's pixel
  blocks (REN's 4×4-block solve, between SpaceToDepth-like reshapes and DepthToSpace). Quantising their 8-bit
  inputs or outputs costs grey levels directly: measured on DCMIF tiny at 320×240, the solve alone added 6 grey
  levels of mean error.

Only the frames (``image_inputs``) come from data; other inputs (FiLM γ, β) come from the caller's probes, so a new
branch or input needs no change here.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from dcmif_ros.inference.graph_optimization import ORT_LOG_ERRORS_ONLY, cpu_session_options, interleaved_median_ms
from dcmif_ros.resources import SOURCE_TREE

INT8_SUFFIX = ".int8.onnx"
IMAGE_INPUTS = ("luminance", "infrared")
CALIBRATION_FOLDERS = ("msrs_train_128", "msrs_fullres")
"""Training folders of ``../shared/data`` (or ``$DCMIF_DATA``) calibrated on: their ``train`` split."""
VALIDATION_FOLDER = "msrs_fullres"
"""Parity and metrics are measured on this folder's ``val`` split (never trained on)."""
CALIBRATION_PAIRS = 24
VALIDATION_PAIRS = 8
NETWORK_SIZE = (320, 240)
"""(width, height) frames are resized to (larger ones only): what ``auto`` runs a 640×480 camera at on the CPU."""
SPEED_ROUNDS = 8  # of graph_optimization.RUNS_IN_A_ROW runs per graph
AUTO_MAX_ERROR_GREY = 8.0
"""``auto`` takes int8 only if no output differs from fp32 by more than this many grey levels (of 255) on the
validation frames: twice the fp16 tolerance, still below the smallest warm-object contrast the pseudo-IR has to
show (0.021 × 255 ≈ 5 levels above its surroundings on MSRS is the model's own signal; errors far above it erase it)."""
AUTO_MEAN_ERROR_GREY = 1.0
"""... and the mean error of every output is at most one grey level (the output's own uint8 rounding)."""
AUTO_MIN_SPEEDUP = 1.1
"""... and it ran at least 10 % faster than fp32 on the exporting machine (less is within timing noise)."""
INT8_KERNEL_PREFIXES = ("QLinear", "DynamicQuantize")
INT8_KERNEL_OPS = {"ConvInteger", "MatMulInteger", "QGemm"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def default_data_roots() -> list[Path]:
    """``../shared/data`` beside the repository (or ``$DCMIF_DATA``): the folders calibration reads, if present."""
    base = Path(os.environ.get("DCMIF_DATA", SOURCE_TREE.parent / "shared" / "data"))
    return [base / name for name in CALIBRATION_FOLDERS if (base / name).is_dir()]


def frame_feeds(roots: list[Path], split: str, count: int, image_inputs: list[str]) -> list[dict[str, np.ndarray]]:
    """Up to ``count`` pairs of ``split`` as graph inputs: Y for ``luminance``, the infrared for ``infrared``,
    float32 (1, 1, H, W) on [0, 1], frames larger than ``NETWORK_SIZE`` resized to it."""
    import cv2

    from dcmif_ros.image_codec import read_gray
    from dcmif_ros.training.data import collect_pairs, load_luminance

    feeds = []
    for pair in collect_pairs(roots, split)[:count]:
        images = {"luminance": load_luminance(pair.visible_path), "infrared": read_gray(pair.infrared_path)}
        feed = {}
        for name in image_inputs:
            image = images[name].astype(np.float32) * (1.0 / 255.0)
            if image.shape[0] * image.shape[1] > NETWORK_SIZE[0] * NETWORK_SIZE[1]:
                image = cv2.resize(image, NETWORK_SIZE, interpolation=cv2.INTER_AREA)
            feed[name] = image[None, None]
        feeds.append(feed)
    return feeds


def pad_feed(feed: dict[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
    """Image inputs padded (edge) to a multiple of ``multiple``, as the engine pads frames."""
    padded = {}
    for name, value in feed.items():
        if name in IMAGE_INPUTS:
            height, width = value.shape[-2:]
            value = np.pad(value, ((0, 0), (0, 0), (0, -height % multiple), (0, -width % multiple)), mode="edge")
        padded[name] = value
    return padded


def materialise_weights(model, sample_feed: dict[str, np.ndarray]):
    """Conv/ConvTranspose weights computed inside the graph, replaced by their values as constants."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    constants = {i.name for i in model.graph.initializer}
    computed = sorted({node.input[1] for node in model.graph.node
                       if node.op_type in ("Conv", "ConvTranspose") and node.input[1] not in constants})
    if not computed:
        return model
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in computed)
    options = ort.SessionOptions()
    options.log_severity_level = ORT_LOG_ERRORS_ONLY
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = session.run(computed, sample_feed)
    model.graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in zip(computed, values))
    kept = [node for node in model.graph.node if not set(node.output) & set(computed)]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    drop_unused_initializers(model)
    return model


def drop_unused_initializers(model) -> None:
    """Constants no node reads any more (the weights a rewrite replaced)."""
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def unfold_strided_transposes(model) -> list[str]:
    """Every ConvTranspose whose stride equals its kernel (no padding, one group, constant weights) → a 1×1 Conv to C_out·k²
    channels and DepthToSpace (CRD order): out[co, y·k+dy, x·k+dx] = Σ_ci in[ci, y, x]·W[ci, co, dy, dx] + b[co].
    Returns the names of the rewritten nodes."""
    from onnx import helper, numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    rewritten, nodes = [], []
    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = weights.get(node.input[1]) if node.op_type == "ConvTranspose" else None
        kernel = list(weight.dims[2:]) if weight is not None else []
        bias_name = node.input[2] if len(node.input) > 2 else ""
        if (weight is None or (bias_name and bias_name not in weights)
                or list(attributes.get("strides", [1, 1])) != kernel or kernel[0] != kernel[1]
                or any(attributes.get("pads", [0])) or attributes.get("group", 1) != 1
                or any(attributes.get("output_padding", [0]))):
            nodes.append(node)
            continue
        k = kernel[0]
        w = numpy_helper.to_array(weight)  # (C_in, C_out, k, k)
        c_in, c_out = w.shape[:2]
        conv_weight = np.ascontiguousarray(w.transpose(1, 2, 3, 0).reshape(c_out * k * k, c_in, 1, 1))
        inputs = [node.input[0], f"{node.name}/unfolded_weight"]
        model.graph.initializer.append(numpy_helper.from_array(conv_weight, inputs[1]))
        if bias_name:
            bias = np.repeat(numpy_helper.to_array(weights[bias_name]), k * k).astype(np.float32)
            inputs.append(f"{node.name}/unfolded_bias")
            model.graph.initializer.append(numpy_helper.from_array(bias, inputs[2]))
        blocks = f"{node.name}/unfolded_blocks"
        nodes.append(helper.make_node("Conv", inputs, [blocks], name=f"{node.name}/unfolded_conv", kernel_shape=[1, 1]))
        nodes.append(helper.make_node("DepthToSpace", [blocks], list(node.output), name=f"{node.name}/unfolded_d2s",
                                      blocksize=k, mode="CRD"))
        rewritten.append(node.name)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    drop_unused_initializers(model)
    return rewritten


def image_domain_convs(model) -> dict[str, str]:
    """{Conv name: why it stays float} for the convolutions on the image domain (see the module docstring)."""
    from onnx import numpy_helper

    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    kept = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in weights:
            continue
        out_channels, in_channels = weights[node.input[1]].shape[:2]
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if out_channels == 1:
            kept[node.name] = "writes a one-channel image"
        elif in_channels * group <= 2:
            kept[node.name] = "reads a one- or two-channel image"
        elif any(c.op_type == "DepthToSpace" for c in consumers.get(node.output[0], [])) \
                and not node.name.endswith("/unfolded_conv"):
            kept[node.name] = "runs on an image's pixel blocks"
    return kept


class _Feeds:
    """onnxruntime's CalibrationDataReader over a list of feeds (duck-typed: it only calls get_next)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def kernel_census(graph_path: Path, cpu_level: str) -> dict:
    """Which operators onnxruntime's CPU provider runs after its own optimisations (the fused QLinear* kernels
    are int8; the rest float, plus the quantise/dequantise steps between them)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        optimised = Path(folder) / "optimised.onnx"
        options = cpu_session_options(cpu_level)
        options.optimized_model_filepath = str(optimised)
        ort.InferenceSession(str(graph_path), options, providers=["CPUExecutionProvider"])
        ops = Counter(node.op_type for node in onnx.load(str(optimised)).graph.node)
    int8 = {op: n for op, n in ops.items() if op.startswith(INT8_KERNEL_PREFIXES) or op in INT8_KERNEL_OPS}
    qdq = {op: n for op, n in ops.items() if op in QDQ_OPS}
    float_ops = {op: n for op, n in ops.items() if op not in int8 and op not in qdq}
    return {"int8": dict(sorted(int8.items())), "float": dict(sorted(float_ops.items())),
            "quantize_dequantize": dict(sorted(qdq.items()))}


def parity(fp32_path: Path, int8_path: Path, feeds: list[dict[str, np.ndarray]], infrared: list[np.ndarray],
           multiple: int, cpu_level: str) -> dict:
    """Grey-level error of every output (max, mean) and the fused images' validation metrics, both graphs."""
    import onnxruntime as ort

    from dcmif_ros.image_codec import to_uint8
    from dcmif_ros.evaluation.metrics import compute_metrics
    from dcmif_ros.training.fusion_validation import VALIDATION_METRICS

    sessions = [ort.InferenceSession(str(p), cpu_session_options(cpu_level), providers=["CPUExecutionProvider"])
                for p in (fp32_path, int8_path)]
    names = [o.name for o in sessions[0].get_outputs()]
    worst = {name: 0.0 for name in names}
    mean = {name: [] for name in names}
    rows = {"fp32": [], "int8": []}
    for feed, ir in zip(feeds, infrared):
        height, width = feed["luminance"].shape[-2:]
        padded = pad_feed(feed, multiple)
        outputs = [dict(zip(names, (o[0, 0, :height, :width] for o in s.run(None, padded)))) for s in sessions]
        for name in names:
            error = np.abs(outputs[0][name] - outputs[1][name]) * 255.0
            worst[name] = max(worst[name], float(error.max()))
            mean[name].append(float(error.mean()))
        visible = to_uint8(feed["luminance"][0, 0])
        for label, output in zip(rows, outputs):
            rows[label].append(compute_metrics(visible, ir, to_uint8(output["fused"]), mode="gray",
                                               names=VALIDATION_METRICS))
    metrics = {label: {k: round(float(np.mean([r[k] for r in values])), 4) for k in VALIDATION_METRICS}
               for label, values in rows.items()}
    return {"max_error_grey": {k: round(v, 3) for k, v in worst.items()},
            "mean_error_grey": {k: round(float(np.mean(v)), 4) for k, v in mean.items()},
            "validation_metrics": metrics}


def speed(fp32_path: Path, int8_path: Path, feed: dict[str, np.ndarray], cpu_level: str) -> dict:
    """Median milliseconds per run of both graphs on this machine's CPU, timed in alternating blocks
    (``graph_optimization.timed_in_blocks``) so load hits both."""
    import onnxruntime as ort

    from dcmif_ros.benchmark import cpu_name

    sessions = [ort.InferenceSession(str(p), cpu_session_options(cpu_level), providers=["CPUExecutionProvider"])
                for p in (fp32_path, int8_path)]
    fp32_ms, int8_ms = interleaved_median_ms(sessions, feed, SPEED_ROUNDS)
    height, width = next(v for k, v in feed.items() if k in IMAGE_INPUTS).shape[-2:]
    return {"size": f"{width}x{height}", "fp32_ms": round(fp32_ms, 2), "int8_ms": round(int8_ms, 2),
            "speedup": round(fp32_ms / int8_ms, 3), "cpu": cpu_name(), "logical_cpus": os.cpu_count(),
            "graph_optimization": cpu_level}


def auto_eligible(entry: dict) -> tuple[bool, str]:
    """Whether ``precision: auto`` may pick the int8 graph on the CPU, and why (not)."""
    worst, mean = max(entry["max_error_grey"].values()), max(entry["mean_error_grey"].values())
    if worst > AUTO_MAX_ERROR_GREY or mean > AUTO_MEAN_ERROR_GREY:
        return False, (f"error vs fp32 max {worst:.1f} / mean {mean:.2f} grey levels, over the "
                       f"{AUTO_MAX_ERROR_GREY:g} / {AUTO_MEAN_ERROR_GREY:g} that auto accepts")
    if entry["speed"]["speedup"] < AUTO_MIN_SPEEDUP:
        return False, f"only {entry['speed']['speedup']:.2f}x the fp32 speed on this CPU (auto needs {AUTO_MIN_SPEEDUP:g}x)"
    return True, "within the error bounds and faster than fp32"


def export_int8(onnx_path: Path, extra_inputs: list[dict[str, np.ndarray]], multiple: int, cpu_level: str,
                data_roots: list[Path] | None = None) -> dict:
    """Write ``<name>.int8.onnx`` beside ``onnx_path`` and return the manifest's ``int8`` entry (see module doc).
    ``extra_inputs``: the non-image inputs, each probed in turn (e.g. identity and modulated FiLM)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from dcmif_ros.inference.export import sha256
    from dcmif_ros.image_codec import to_uint8

    roots = default_data_roots() if data_roots is None else [Path(r) for r in data_roots]
    if not roots:
        return {"file": None, "reason": "no calibration data (../shared/data or $DCMIF_DATA with "
                                        f"{' / '.join(CALIBRATION_FOLDERS)})"}
    model = onnx.load(str(onnx_path))
    image_inputs = [i.name for i in model.graph.input if i.name in IMAGE_INPUTS]
    calibration = [pad_feed(feed, multiple) | extra
                   for feed in frame_feeds(roots, "train", CALIBRATION_PAIRS, image_inputs) for extra in extra_inputs]
    validation_roots = [r for r in roots if r.name == VALIDATION_FOLDER] or roots
    validation = frame_feeds(validation_roots, "val", VALIDATION_PAIRS, list(IMAGE_INPUTS))
    if not calibration or not validation:
        return {"file": None, "reason": f"no calibration or validation pairs in {', '.join(map(str, roots))}"}
    int8_path = onnx_path.with_suffix(INT8_SUFFIX)
    with tempfile.TemporaryDirectory() as folder:
        prepared, preprocessed = Path(folder) / "prepared.onnx", Path(folder) / "preprocessed.onnx"
        model = materialise_weights(model, calibration[0])
        unfolded = unfold_strided_transposes(model)
        onnx.save(model, str(prepared))
        quant_pre_process(str(prepared), str(preprocessed), skip_symbolic_shape=True)
        preprocessed_model = onnx.load(str(preprocessed))
        kept_float = image_domain_convs(preprocessed_model)
        quantize_static(str(preprocessed), str(int8_path), _Feeds(calibration), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["Conv"], per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=sorted(kept_float))
    infrared = [to_uint8(frames["infrared"][0, 0]) for frames in validation]
    feeds = [{name: frames[name] for name in image_inputs} | extra_inputs[-1] for frames in validation]
    entry = {
        "file": int8_path.name,
        "sha256": sha256(int8_path),
        "method": "onnxruntime quantize_static, QDQ, MinMax, uint8 activations, int8 per-channel weights "
                  "(reduce_range), Conv only",
        "calibration": {"folders": [r.name for r in roots], "split": "train",
                        "frames": len(calibration) // len(extra_inputs), "inputs_per_frame": len(extra_inputs),
                        "network_size": list(NETWORK_SIZE)},
        "validation": {"folder": validation_roots[0].name, "split": "val", "frames": len(feeds)},
        "graph_changes": {"conv_transpose_unfolded": unfolded,
                          "kept_float": dict(sorted(kept_float.items()))},
        **parity(onnx_path, int8_path, feeds, infrared, multiple, cpu_level),
        "speed": speed(onnx_path, int8_path, pad_feed(feeds[0], multiple), cpu_level),
        "kernels": kernel_census(int8_path, cpu_level),
    }
    eligible, why = auto_eligible(entry)
    return entry | {"auto": eligible, "auto_reason": why,
                    "auto_rule": {"max_error_grey": AUTO_MAX_ERROR_GREY, "mean_error_grey": AUTO_MEAN_ERROR_GREY,
                                  "min_speedup": AUTO_MIN_SPEEDUP}}


def int8_entry(onnx_path: Path, extra_inputs: list[dict[str, np.ndarray]], multiple: int, cpu_level: str,
               data_roots: list[Path] | None = None) -> dict:
    """``export_int8``'s manifest entry; a failure there costs the int8 graph, never the fp32 export.
    ``cpu_level``: the optimisation level the engine runs the fp32 graph at (``graph_optimization``)."""
    try:
        return export_int8(onnx_path, extra_inputs, multiple, cpu_level, data_roots)
    except Exception as exc:  # the quantiser and onnxruntime raise many types
        onnx_path.with_suffix(INT8_SUFFIX).unlink(missing_ok=True)
        return {"file": None, "reason": f"int8 quantisation failed ({exc.__class__.__name__}: {exc})"}
