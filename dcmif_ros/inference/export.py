"""Export a DCMIF checkpoint to ONNX (dynamic H×W, no FFT/complex ops) plus its FiLM heads and a manifest.

Files written for ``<name>``: ``<name>.onnx`` (Y, γ, β → fused Y, pseudo-IR, gate), ``<name>.film.npz`` (Φγ, Φβ
as plain matrices, so the runtime needs no torch) and ``<name>.json`` (what the engine checks before use).

Beside each graph go ``<name>.int8.onnx`` (statically quantised for the CPU provider, ``dcmif_ros.inference.quantize``;
the manifest's ``int8`` entry holds its parity, speed and kernels) and ``<name>.fp16.onnx`` (fp16 weights and arithmetic, fp32 inputs and outputs, for the CUDA
provider) when it matches the fp32 graph within ``FP16_TOLERANCE`` on probe frames; the manifest's ``fp16`` entry
records the file, its hash and the error measured, or why there is no such file.

Dual-modal models (``export_dual``: LRCFuse, DCMIF with real infrared) take (Y, IR) → fused Y (and a gate when the
model has one); their manifest says ``"kind": "dual"`` and has no FiLM file. Visible-only graphs say
``"kind": "visible"`` (manifests written before ``kind`` existed are visible-only too).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from dcmif_ros.inference.checkpoint import DCMIFBundle
from dcmif_ros.models.dictionary import frozen_derived_weights
from dcmif_ros.models.jsrl import REN
from dcmif_ros.inference.graph_optimization import MANIFEST_KEY, ORT_LOG_ERRORS_ONLY, measure_cpu_levels
from dcmif_ros.inference.quantize import int8_entry

OPSET = 20  # the first with a Gelu operator: decomposed into eight elementwise operators, GELU cost a tenth of a frame
FORBIDDEN_OPS = {"DFT", "STFT"}
MANIFEST_FORMAT = "dcmif-onnx/1"
INPUT_NAMES = ["luminance", "gamma", "beta"]
OUTPUT_NAMES = ["fused", "pseudo_ir", "gate"]
KIND_VISIBLE = "visible"
KIND_DUAL = "dual"
KINDS = (KIND_VISIBLE, KIND_DUAL)
DUAL_INPUT_NAMES = ["luminance", "infrared"]
DUAL_OUTPUT_NAMES = ["fused", "gate"]  # the gate only for models that have one
FP16_TOLERANCE = 4.0 / 255  # max abs error of any output on [0, 1]: four grey levels of an 8-bit image
FILM_PROBE_SCALE = 0.1  # spread of the probe's γ around 1 (β: half of it)
FP16_PROBE_SIZES = ((480, 640), (96, 128))  # (height, width), multiples of every preset's pad_multiple


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_graph(net: torch.nn.Module, example: tuple, onnx_path: Path, input_names: list[str],
                 output_names: list[str], image_inputs: list[str]) -> None:
    """Trace ``net`` to ONNX with dynamic height/width on the image inputs and every output, then check it."""
    import onnx

    spatial = {2: "height", 3: "width"}
    dynamic = {name: spatial for name in image_inputs + output_names}
    with torch.no_grad(), frozen_derived_weights(net):
        torch.onnx.export(net, example, str(onnx_path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    graph = onnx.load(str(onnx_path))
    onnx.checker.check_model(graph)
    used = {node.op_type for node in graph.graph.node}
    if used & FORBIDDEN_OPS:
        raise RuntimeError(f"exported graph uses {sorted(used & FORBIDDEN_OPS)}, which GPU providers cannot run")


def probe_image(height: int, width: int, seed: int) -> np.ndarray:
    """A deterministic frame with what real ones have: smooth shading, texture, hard edges, dark and bright."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    shading = 0.5 + 0.4 * np.sin(2 * np.pi * (xx + 0.5 * yy))
    texture = 0.1 * np.sin(2 * np.pi * 40 * xx) * np.cos(2 * np.pi * 30 * yy)
    blocks = 0.3 * ((xx * 8).astype(int) % 2 == (yy * 6).astype(int) % 2)
    image = shading + texture + blocks + 0.02 * rng.standard_normal((height, width))
    return np.clip(image / image.max(), 0, 1).astype(np.float32)[None, None]


def export_fp16(onnx_path: Path, extra_inputs: list[dict[str, np.ndarray]]) -> dict:
    """Write ``<name>.fp16.onnx`` if it matches the fp32 graph within ``FP16_TOLERANCE`` on the probe frames
    (image inputs: ``probe_image``; each of ``extra_inputs`` supplies the rest, e.g. identity and modulated
    FiLM, and is probed in turn); returns the manifest entry."""
    import onnx
    import onnxruntime as ort
    from onnxconverter_common import float16

    fp16_path = onnx_path.with_suffix(".fp16.onnx")
    with warnings.catch_warnings():  # weights below fp16's range round to its smallest value: measured below
        warnings.simplefilter("ignore", UserWarning)
        graph = float16.convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    onnx.save(graph, str(fp16_path))
    options = ort.SessionOptions()
    options.log_severity_level = ORT_LOG_ERRORS_ONLY  # constant folding warns about fp16 ops it cannot fold
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                for p in (onnx_path, fp16_path)]
    image_inputs = [i.name for i in sessions[0].get_inputs() if i.name not in extra_inputs[0]]
    error = 0.0
    for index, (height, width) in enumerate(FP16_PROBE_SIZES):
        images = {name: probe_image(height, width, seed=index * 10 + k) for k, name in enumerate(image_inputs)}
        for extra in extra_inputs:
            full, half = (session.run(None, images | extra) for session in sessions)
            error = max(error, *(float(np.abs(a - b).max()) for a, b in zip(full, half)))
    entry = {"tolerance": FP16_TOLERANCE, "max_abs_error": error, "probe_sizes": [list(s) for s in FP16_PROBE_SIZES]}
    if error > FP16_TOLERANCE:
        fp16_path.unlink()
        return entry | {"file": None, "reason": f"fp16 differs from fp32 by {error:.2e} > {FP16_TOLERANCE:.2e}"}
    return entry | {"file": fp16_path.name, "sha256": sha256(fp16_path)}


def film_probes(atoms: int) -> list[dict[str, np.ndarray]]:
    """FiLM inputs the fp16 check runs with: identity, and a seeded modulation of the size priors produce."""
    rng = np.random.default_rng(0)
    identity = {"gamma": np.ones((1, atoms), np.float32), "beta": np.zeros((1, atoms), np.float32)}
    modulated = {"gamma": (1 + FILM_PROBE_SCALE * rng.standard_normal((1, atoms))).astype(np.float32),
                 "beta": (FILM_PROBE_SCALE / 2 * rng.standard_normal((1, atoms))).astype(np.float32)}
    return [identity, modulated]


def fp16_entry(onnx_path: Path, extra_inputs: list[dict[str, np.ndarray]]) -> dict:
    """``export_fp16``'s manifest entry; a failure there costs the fp16 graph, never the fp32 export."""
    try:
        return export_fp16(onnx_path, extra_inputs)
    except Exception as exc:  # the converter and onnxruntime raise many types
        onnx_path.with_suffix(".fp16.onnx").unlink(missing_ok=True)
        return {"file": None, "reason": f"fp16 conversion failed ({exc.__class__.__name__}: {exc})"}


def common_manifest(kind: str, model: str, config, net: torch.nn.Module, inputs: list[str], outputs: list[str],
                    onnx_path: Path, source: str | Path | None, trained: bool, metadata: dict) -> dict:
    """The manifest fields every exported graph has (the engine checks format, kind, sizes and hashes)."""
    return {
        "format": MANIFEST_FORMAT,
        "kind": kind,
        "model": model,
        "size": config.name,
        "pad_multiple": config.pad_multiple,
        "min_side": config.min_side,
        "input_range": [0.0, 1.0],
        "inputs": inputs,
        "outputs": outputs,
        "opset": OPSET,
        "parameters": sum(p.numel() for p in net.parameters()),
        "trained": trained,
        "onnx_file": onnx_path.name,
        "onnx_sha256": sha256(onnx_path),
        "weights_file": Path(source).name if source else None,
        "weights_sha256": sha256(source) if source else None,
        "metadata": metadata,
    } | solve_truncations(net)


def solve_truncations(net: torch.nn.Module) -> dict:
    """{"solve_truncation": {REN name: energy its solve-kernel crop drops}} for graphs with a REN, else {}."""
    truncations = {name: module.solve_truncation() for name, module in net.named_modules() if isinstance(module, REN)}
    return {"solve_truncation": truncations} if truncations else {}


def export_bundle(bundle: DCMIFBundle, out_dir: str | Path, name: str, source: str | Path | None = None,
                  trained: bool = True, int8_data: list[Path] | None = None) -> Path:
    """Write the ONNX graph, FiLM matrices and manifest; returns the ONNX path. ``int8_data``: folders to
    calibrate the int8 graph on (default: ``quantize.default_data_roots()``; [] writes none)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net, config = bundle.net.eval(), bundle.net.config
    onnx_path, film_path, manifest_path = (out_dir / f"{name}{suffix}" for suffix in (".onnx", ".film.npz", ".json"))
    multiple = config.pad_multiple
    example = (torch.rand(1, 1, 6 * multiple, 8 * multiple), *net.identity_film())
    export_graph(net, example, onnx_path, INPUT_NAMES, OUTPUT_NAMES, image_inputs=["luminance"])
    film = bundle.film
    np.savez(film_path, gamma_weight=film.gamma.weight.detach().numpy(), gamma_bias=film.gamma.bias.detach().numpy(),
             beta_weight=film.beta.weight.detach().numpy(), beta_bias=film.beta.bias.detach().numpy())
    manifest = common_manifest(KIND_VISIBLE, f"dcmif-{config.name}", config, net, INPUT_NAMES, OUTPUT_NAMES,
                               onnx_path, source, trained, bundle.metadata)
    levels = measure_cpu_levels(onnx_path, multiple)
    manifest |= {
        MANIFEST_KEY: levels,
        "fp16": fp16_entry(onnx_path, film_probes(config.atoms)),
        "int8": int8_entry(onnx_path, film_probes(config.atoms), multiple, levels["level"], int8_data),
        "atoms": config.atoms,
        "kernel_size": config.kernel_size,
        "prior_encoder_id": bundle.prior_encoder_id,
        "prior_feature_dim": bundle.prior_feature_dim,
        "film_file": film_path.name,
        "film_sha256": sha256(film_path),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return onnx_path


def export_dual(net: torch.nn.Module, out_dir: str | Path, name: str, architecture: str,
                source: str | Path | None = None, trained: bool = True, metadata: dict | None = None,
                int8_data: list[Path] | None = None) -> Path:
    """Write ``<name>.onnx`` and ``<name>.json`` for a dual-modal model ``(Y, IR) → fused[, gate]`` (``int8_data``
    as for ``export_bundle``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net, config = net.eval(), net.config
    onnx_path, manifest_path = out_dir / f"{name}.onnx", out_dir / f"{name}.json"
    multiple = config.pad_multiple
    example = (torch.rand(1, 1, 6 * multiple, 8 * multiple), torch.rand(1, 1, 6 * multiple, 8 * multiple))
    with torch.no_grad():
        produced = net(*example)
    outputs = DUAL_OUTPUT_NAMES[: len(produced)] if isinstance(produced, tuple) else DUAL_OUTPUT_NAMES[:1]
    export_graph(net, example, onnx_path, DUAL_INPUT_NAMES, outputs, image_inputs=DUAL_INPUT_NAMES)
    manifest = common_manifest(KIND_DUAL, f"{architecture}-{config.name}", config, net, DUAL_INPUT_NAMES, outputs,
                               onnx_path, source, trained, metadata or {})
    manifest[MANIFEST_KEY] = measure_cpu_levels(onnx_path, multiple)
    manifest["fp16"] = fp16_entry(onnx_path, [{}])
    manifest["int8"] = int8_entry(onnx_path, [{}], multiple, manifest[MANIFEST_KEY]["level"], int8_data)
    manifest_path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return onnx_path
