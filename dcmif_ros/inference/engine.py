"""FusionEngine: the DCMIF inference graph on onnxruntime, with the host pre/post-processing around it.

One call takes a BGR uint8 frame and returns the fused BGR frame, the pseudo-thermal image (unless not wanted:
then the frame runs the graph cut without it) and (optionally) the gate map. The engine checks the manifest and
hashes before loading, checks which execution providers the session really got (and refuses a silent CPU
fallback unless allowed), warms up, and binds outputs to the device with IO binding so GPU results are copied once.

Dual-modal graphs (manifest ``kind`` "dual": LRCFuse, DCMIF with real infrared) take the frame's luminance and a
registered infrared image instead: ``run_dual(frame, infrared)``, with the same pre/post-processing, manifest
checks and providers.
"""
from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from dcmif_ros.inference.export import KIND_DUAL, KIND_VISIBLE, KINDS, MANIFEST_FORMAT, sha256
from dcmif_ros.inference.graph_optimization import graph_optimization_level, graph_without
from dcmif_ros.image_codec import to_uint8
from dcmif_ros.inference.processing_resolution import ProcessingSize, network_size

PROVIDER_CHOICES = ("auto", "tensorrt", "cuda", "cpu")
PRECISION_CHOICES = ("auto", "fp32", "fp16", "int8")
"""auto: the fp16 graph on the CUDA provider (TensorRT builds its own), the int8 graph on the CPU provider where its
export found it faster and within ``quantize``'s error bounds (manifest ``int8.auto``), fp32 otherwise."""
INT8_PROVIDERS = ("CPUExecutionProvider",)
"""Providers whose int8 (QLinearConv) kernels the int8 graphs were measured with; CUDA has none."""
PROVIDER_CHAINS = {
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "cpu": ["CPUExecutionProvider"],
}
PROVIDER_SHORT_NAMES = {"TensorrtExecutionProvider": "tensorrt", "CUDAExecutionProvider": "cuda",
                        "CPUExecutionProvider": "cpu"}
NVIDIA_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl")
TENSORRT_CACHE_DIR = Path.home() / ".cache" / "dcmif_ros" / "tensorrt"
MANIFEST_KEYS = {
    KIND_DUAL: ("onnx_sha256", "pad_multiple", "min_side", "outputs"),
    KIND_VISIBLE: ("onnx_sha256", "pad_multiple", "min_side", "outputs", "atoms", "prior_encoder_id",
                   "prior_feature_dim", "film_file", "film_sha256"),
}
"""What the engine and the pipeline read from a manifest of each kind."""

SPIN_CONFIG_KEY = "session.intra_op.allow_spinning"
"""onnxruntime's intra-op threads spin between operators by default: fastest for a process alone on the CPU (a
320x240 frame 67 vs 90 ms on 2 cores), but in a ROS graph the spinning takes the cores from the camera, DDS and the
node's own threads; ``spin_wait=False`` (the node's choice) lets them sleep (benchmarks/results/node_latency_cpu.json:
in-node inference 92 -> 72 ms, 10.1 -> 13.2 fused frames/s with a best-effort camera)."""
WARMUP_RUNS = 2
WARMUP_SIZE = (64, 64)  # (height, width) of the warm-up frame, before padding
PSEUDO_IR_OUTPUT = "pseudo_ir"


class EngineError(RuntimeError):
    """The model files or the execution provider cannot be used; the message names which."""


@dataclass
class FusionResult:
    fused: np.ndarray  # BGR uint8, same size as the input
    pseudo_ir: np.ndarray | None  # uint8 H×W; None for dual-modal models (they read the real infrared) and
    # for frames run without ``want_pseudo_ir``
    gate: np.ndarray | None  # float32 H×W in [0, 1]: weight of the (pseudo-)IR, averaged over atoms
    timings_ms: dict[str, float] = field(default_factory=dict)


def validate_frame(frame: np.ndarray) -> np.ndarray:
    """A BGR uint8 H×W×3 frame, or a clear reason why not (grey H×W is accepted and expanded)."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"expected a numpy image, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {frame.dtype}")
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected a BGR image with 3 channels, got shape {frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"zero-size image {frame.shape[1]}x{frame.shape[0]}")
    return frame


def validate_infrared(infrared: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 grey H×W infrared image registered to the frame (same size); 3 channels are converted to grey."""
    if not isinstance(infrared, np.ndarray) or infrared.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy infrared image, got {getattr(infrared, 'dtype', type(infrared))}")
    if infrared.ndim == 3 and infrared.shape[2] == 3:
        infrared = cv2.cvtColor(infrared, cv2.COLOR_BGR2GRAY)
    if infrared.shape != size:
        raise ValueError(f"infrared image {infrared.shape} must be registered to the frame, size {size}")
    return infrared


def pad_to_multiple(image: np.ndarray, multiple: int, min_side: int = 0) -> np.ndarray:
    """Pad right and bottom to a multiple of ``multiple`` and at least ``min_side`` (mirror, or edge copies
    where the image is too small to mirror)."""
    height, width = image.shape
    target_h = max(-(-height // multiple) * multiple, min_side)
    target_w = max(-(-width // multiple) * multiple, min_side)
    pad_h, pad_w = target_h - height, target_w - width
    if pad_h == 0 and pad_w == 0:
        return image
    border = cv2.BORDER_REFLECT_101 if pad_h < height and pad_w < width else cv2.BORDER_REPLICATE
    return cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, border)


def load_manifest(model_path: Path) -> dict:
    manifest_path = model_path.with_suffix(".json")
    if not model_path.is_file():
        raise EngineError(f"ONNX model not found: {model_path}")
    if not manifest_path.is_file():
        raise EngineError(f"manifest not found beside the model: {manifest_path}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise EngineError(f"manifest {manifest_path} is not valid JSON: {exc}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise EngineError(f"manifest {manifest_path}: format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    kind = manifest.get("kind", KIND_VISIBLE)
    if kind not in KINDS:
        raise EngineError(f"manifest {manifest_path}: kind {manifest['kind']!r}, expected one of {', '.join(KINDS)}")
    missing = [key for key in MANIFEST_KEYS[kind] if key not in manifest]
    if missing:
        raise EngineError(f"manifest {manifest_path} lacks {', '.join(missing)}: it is incomplete or from another "
                          "tool; export the model again")
    if sha256(model_path) != manifest["onnx_sha256"]:
        raise EngineError(f"{model_path} does not match its manifest {manifest_path.name} (sha256 differs): "
                          "the file is corrupt or from another export")
    return manifest


def verified_beside(model_path: Path, file_name: str, expected_sha256: str, what: str) -> Path:
    """A file the manifest lists beside the model, checked to exist and to be the one the export wrote."""
    path = model_path.with_name(file_name)
    if not path.is_file():
        raise EngineError(f"{what} not found: {path}")
    if sha256(path) != expected_sha256:
        raise EngineError(f"{path} does not match the manifest (sha256 differs)")
    return path


def graph_precision(manifest: dict, precision: str, first_provider: str) -> str:
    """fp32, fp16 or int8 for ``precision`` (auto: see ``PRECISION_CHOICES``)."""
    if precision not in PRECISION_CHOICES:
        raise EngineError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISION_CHOICES)}")
    if precision != "auto":
        return precision
    if first_provider == "CUDAExecutionProvider" and (manifest.get("fp16") or {}).get("file"):
        return "fp16"
    int8 = manifest.get("int8") or {}
    if first_provider == "CPUExecutionProvider" and int8.get("file") and int8.get("auto"):
        return "int8"
    return "fp32"


def select_graph(model_path: Path, manifest: dict, precision: str, first_provider: str) -> tuple[Path, str]:
    """The graph file to load and its precision: the fp32 export, or the fp16 or int8 one beside it."""
    precision = graph_precision(manifest, precision, first_provider)
    if precision == "fp32":
        return model_path, precision
    entry = manifest.get(precision) or {}
    if not entry.get("file"):
        why = entry.get("reason", f"exported before {precision} graphs existed")
        raise EngineError(f"{model_path.with_suffix('.json')} has no {precision} graph ({why}); use precision fp32 "
                          f"or re-export the model (dcmif export)")
    return verified_beside(model_path, entry["file"], entry["sha256"], f"{precision} graph"), precision


def int8_providers(provider: str, requested: list[str], allow_cpu_fallback: bool) -> tuple[list[str], str | None]:
    """The provider chain for an explicit int8 graph, and the fallback to report if it had to change: a chain
    that starts on a provider without int8 kernels is replaced by the CPU when allowed, else refused."""
    if requested[0] in INT8_PROVIDERS:
        return requested, None
    message = (f"precision int8: {requested[0]} (provider {provider!r}) has no int8 kernels for this graph; "
               f"the int8 graph runs on CPUExecutionProvider")
    if not allow_cpu_fallback:
        raise EngineError(f"precision int8 needs provider cpu: {requested[0]} (provider {provider!r}) has no int8 "
                          "kernels and allow_cpu_fallback is false; use precision auto, fp16 or fp32 on the GPU")
    return PROVIDER_CHAINS["cpu"], message


def provider_options(providers: list[str], cache_name: str) -> list[tuple[str, dict]]:
    """TensorRT builds an engine per input shape: cache them, or every start pays minutes again. Its cache keys
    name the graph's file and tensors, not its weights, so each graph caches in a folder of its own
    (``cache_name``: the graph's hash and which cut), or a retrained model of the same name would reuse the old
    engines."""
    options = []
    for name in providers:
        if name == "TensorrtExecutionProvider":
            cache = TENSORRT_CACHE_DIR / cache_name
            cache.mkdir(parents=True, exist_ok=True)
            options.append((name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                                   "trt_fp16_enable": True}))
        else:
            options.append((name, {}))
    return options


def nvidia_gpu_present() -> bool:
    """onnxruntime-gpu lists its GPU providers even on machines without a GPU; the driver's files tell."""
    return any(Path(p).exists() for p in NVIDIA_DRIVER_FILES)


def resolve_providers(provider: str, available: list[str]) -> list[str]:
    if provider not in PROVIDER_CHOICES:
        raise EngineError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDER_CHOICES)}")
    if provider == "auto":
        chain = PROVIDER_CHAINS["tensorrt"] if nvidia_gpu_present() else PROVIDER_CHAINS["cpu"]
        return [p for p in chain if p in available]
    wanted = PROVIDER_CHAINS[provider][0]
    if wanted not in available:
        raise EngineError(f"execution provider {provider!r} ({wanted}) is not available in this onnxruntime "
                          f"build; available: {', '.join(available)}")
    return PROVIDER_CHAINS[provider]


class FusionEngine:
    """Runs the exported DCMIF graph. ``processing_size`` (width, height), or ``"auto"`` (see
    ``dcmif_ros.inference.processing_resolution``), runs the network at that resolution and transfers the thermal change
    back to the full-resolution luminance; ``network_size`` is the one the last frame ran at."""

    def __init__(self, model_path: str | Path, provider: str = "auto", allow_cpu_fallback: bool = True,
                 processing_size: ProcessingSize = None, threads: int | None = None,
                 precision: str = "auto", spin_wait: bool = True, lean: bool = True):
        import onnxruntime as ort

        self.model_path = Path(model_path)
        self.lean = lean  # also open the graph without its pseudo-IR (a caller that always reads it need not)
        self.manifest = load_manifest(self.model_path)
        self.kind = self.manifest.get("kind", KIND_VISIBLE)
        self.atoms = int(self.manifest.get("atoms", 0))  # dual-modal graphs have no FiLM inputs
        self.pad_multiple = int(self.manifest["pad_multiple"])
        self.min_side = int(self.manifest["min_side"])
        self.processing_size = processing_size
        self.spin_wait = spin_wait
        self.network_size: tuple[int, int] | None = None  # (width, height) of the last frame's network input
        self.film_matrices = self._load_film() if self.kind == KIND_VISIBLE else {}
        requested = resolve_providers(provider, ort.get_available_providers())
        precision_fallback = None
        if precision == "int8":
            requested, precision_fallback = int8_providers(provider, requested, allow_cpu_fallback)
        self.session, self.lean_session, self.precision = self._open_sessions(requested, requested[0], precision,
                                                                              threads)
        settled = self.session.get_providers()[0]
        if settled != requested[0] and (self._choices(settled, precision) != self._choices(requested[0], precision)):
            # onnxruntime settled on a later provider (CUDA where TensorRT's libraries are missing, or the
            # CPU): open the graph and optimisation level that suit the provider that actually runs
            self.session, self.lean_session, self.precision = self._open_sessions(requested, settled, precision,
                                                                                  threads)
        self.providers = self.session.get_providers()
        self.provider = PROVIDER_SHORT_NAMES.get(self.providers[0], self.providers[0])
        if provider != "cpu" and self.provider == "cpu" and requested[0] != "CPUExecutionProvider":
            message = f"asked for {provider!r} ({requested[0]}) but the session runs on CPUExecutionProvider"
            if not allow_cpu_fallback:
                raise EngineError(message + " and allow_cpu_fallback is false")
            self.fallback_warning = message
        else:
            self.fallback_warning = precision_fallback
        self.device = "cuda" if self.provider in ("cuda", "tensorrt") else "cpu"
        self.identity_gamma = np.ones((1, self.atoms), np.float32)
        self.identity_beta = np.zeros((1, self.atoms), np.float32)
        self.warm_up()
        self.network_size = None

    def _choices(self, first_provider: str, precision: str) -> tuple:
        return graph_precision(self.manifest, precision, first_provider), graph_optimization_level(first_provider, self.manifest)

    def _open_sessions(self, requested: list[str], first_provider: str, precision: str, threads: int | None):
        """onnxruntime sessions over ``requested``, with the graph and optimisation level for ``first_provider``
        (the provider expected to run it): the whole graph, and the graph without its pseudo-IR output for
        frames whose pseudo-IR nobody reads (None where the graph has none); returns (session, lean session,
        precision)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = graph_optimization_level(first_provider, self.manifest)
        if not self.spin_wait:
            options.add_session_config_entry(SPIN_CONFIG_KEY, "0")
        if threads:
            options.intra_op_num_threads = threads
        graph_path, chosen = select_graph(self.model_path, self.manifest, precision, first_provider)
        # the hash the manifest records for that graph, which loading it has just verified
        digest = (self.manifest["onnx_sha256"] if chosen == "fp32" else self.manifest[chosen]["sha256"])[:16]
        try:
            session = ort.InferenceSession(str(graph_path), options,
                                           providers=provider_options(requested, f"{digest}-whole"))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(f"onnxruntime cannot load {graph_path}: {exc}") from None
        lean = None
        try:  # a speed-up only: where it fails, every frame runs the whole graph
            cut = graph_without(graph_path, PSEUDO_IR_OUTPUT) if self.lean else None
            if cut is not None:
                lean = ort.InferenceSession(cut, options, providers=provider_options(requested, f"{digest}-lean"))
                if lean.get_providers()[0] != session.get_providers()[0]:
                    raise EngineError(f"it runs on {lean.get_providers()[0]}, the whole graph on "
                                      f"{session.get_providers()[0]}")
        except Exception as exc:
            lean = None
            warnings.warn(f"{graph_path.name} without its pseudo-IR is unavailable ({exc}): every frame runs the "
                          "whole graph", RuntimeWarning, stacklevel=2)
        return session, lean, chosen

    def _load_film(self) -> dict[str, np.ndarray]:
        path = verified_beside(self.model_path, self.manifest["film_file"], self.manifest["film_sha256"],
                               "FiLM heads")
        with np.load(path) as data:
            return {k: data[k].astype(np.float32) for k in data.files}

    def film_from_features(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(γ, β) = (Φγ, Φβ)(F_text): the checkpoint's FiLM heads applied to prior text features."""
        features = np.asarray(features, np.float32).reshape(-1)
        expected = self.film_matrices["gamma_weight"].shape[1]
        if features.shape[0] != expected:
            raise ValueError(f"prior features have {features.shape[0]} values, the model's FiLM heads expect {expected} "
                             f"(trained with {self.manifest['prior_encoder_id']})")
        m = self.film_matrices
        return 1.0 + m["gamma_weight"] @ features + m["gamma_bias"], m["beta_weight"] @ features + m["beta_bias"]

    def warm_up(self) -> None:
        frame = np.full((*WARMUP_SIZE, 3), 128, np.uint8)
        for _ in range(WARMUP_RUNS):
            if self.kind == KIND_DUAL:
                self.run_dual(frame, frame[:, :, 0], want_gate=True)
            else:
                self.run(frame, want_gate=True)
                if self.lean_session is not None:
                    self.run(frame, want_pseudo_ir=False)

    def film_inputs(self, gamma: np.ndarray | None, beta: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The graph's γ, β inputs; None means identity (no prior: the first-pass pseudo-IR)."""
        if gamma is None and beta is None:
            return self.identity_gamma, self.identity_beta
        gamma, beta = (np.asarray(v, np.float32).reshape(1, -1) for v in (gamma, beta))
        if gamma.shape[1] != self.atoms or beta.shape[1] != self.atoms:
            raise ValueError(f"gamma/beta must have {self.atoms} values (one per atom), got "
                             f"{gamma.shape[1]} and {beta.shape[1]}")
        return gamma, beta

    def infer_luminance(self, luminance: np.ndarray, gamma: np.ndarray | None = None, beta: np.ndarray | None = None,
                        want_pseudo_ir: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Y float32 H×W in [0,1] (any size) → (fused Y, pseudo-IR, gate) float32 H×W, via the ONNX graph; the
        pseudo-IR is None, and costs nothing, unless ``want_pseudo_ir``."""
        height, width = luminance.shape
        padded = pad_to_multiple(luminance, self.pad_multiple, self.min_side)[None, None]
        session = self.session if want_pseudo_ir or self.lean_session is None else self.lean_session
        binding = session.io_binding()
        binding.bind_cpu_input("luminance", np.ascontiguousarray(padded, np.float32))
        gamma, beta = self.film_inputs(gamma, beta)
        binding.bind_cpu_input("gamma", gamma)
        binding.bind_cpu_input("beta", beta)
        names = [output.name for output in session.get_outputs()]
        for name in names:
            binding.bind_output(name, self.device)
        session.run_with_iobinding(binding)
        outputs = dict(zip(names, (o[0, 0, :height, :width] for o in binding.copy_outputs_to_cpu())))
        return outputs["fused"], outputs.get(PSEUDO_IR_OUTPUT), outputs["gate"]

    def infer_dual(self, luminance: np.ndarray, infrared: np.ndarray) -> tuple[np.ndarray, None, np.ndarray | None]:
        """Y and IR float32 H×W in [0,1] → (fused Y, None, gate or None) float32 H×W, via a dual-modal graph."""
        height, width = luminance.shape
        binding = self.session.io_binding()
        for name, image in (("luminance", luminance), ("infrared", infrared)):
            padded = pad_to_multiple(image, self.pad_multiple, self.min_side)[None, None]
            binding.bind_cpu_input(name, np.ascontiguousarray(padded, np.float32))
        for name in self.manifest["outputs"]:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        fused, *gate = (o[0, 0, :height, :width] for o in binding.copy_outputs_to_cpu())
        return fused, None, gate[0] if gate else None

    def run(self, frame: np.ndarray, gamma: np.ndarray | None = None, beta: np.ndarray | None = None,
            want_gate: bool = False, want_pseudo_ir: bool = True) -> FusionResult:
        """Fuse one BGR uint8 frame; ``gamma``/``beta`` are the prior's FiLM values (None: identity). Without
        ``want_pseudo_ir`` the result's ``pseudo_ir`` is None and the graph skips it (11–20 % of a frame)."""
        self._require_kind(KIND_VISIBLE, "run_dual(frame, infrared)")
        return self._fuse(validate_frame(frame), None,
                          lambda y, _: self.infer_luminance(y, gamma, beta, want_pseudo_ir), want_gate)

    def run_dual(self, frame: np.ndarray, infrared: np.ndarray, want_gate: bool = False) -> FusionResult:
        """Fuse one BGR uint8 frame with its registered infrared image (uint8 H×W, same size) by a dual-modal
        model; ``pseudo_ir`` of the result is None, ``gate`` is None unless the model has one."""
        self._require_kind(KIND_DUAL, "run(frame)")
        frame = validate_frame(frame)
        infrared = validate_infrared(infrared, frame.shape[:2])
        return self._fuse(frame, infrared, self.infer_dual, want_gate)

    def _require_kind(self, kind: str, instead: str) -> None:
        if self.kind != kind:
            raise EngineError(f"{self.model_path.name} is a {self.kind} model: call {instead} instead")

    def _fuse(self, frame: np.ndarray, infrared: np.ndarray | None, infer: Callable, want_gate: bool) -> FusionResult:
        """The pre/post-processing every model shares: Y (and IR) on [0,1], optional processing size, Y back into
        the frame. ``infer(Y, IR or None)`` returns (fused Y, pseudo-IR or None, gate or None)."""
        t0 = time.perf_counter()
        ycrcb = cv2.cvtColor(frame, cv2.COLOR_BGR2YCrCb)
        luminance = ycrcb[:, :, 0].astype(np.float32) * (1.0 / 255.0)
        network_input = luminance
        network_ir = None if infrared is None else infrared.astype(np.float32) * (1.0 / 255.0)
        size = network_size(self.processing_size, frame.shape[1], frame.shape[0], self.provider, self.pad_multiple,
                            self.min_side, infers_infrared=infrared is None)
        if size != (frame.shape[1], frame.shape[0]):
            network_input = cv2.resize(luminance, size, interpolation=cv2.INTER_AREA)
            if network_ir is not None:
                network_ir = cv2.resize(network_ir, size, interpolation=cv2.INTER_AREA)
        self.network_size = size
        t1 = time.perf_counter()
        fused, pseudo_ir, gate = infer(network_input, network_ir)
        gate = gate if want_gate else None
        t2 = time.perf_counter()
        if network_input is not luminance:
            size = (frame.shape[1], frame.shape[0])
            change = cv2.resize(fused - network_input, size, interpolation=cv2.INTER_LINEAR)
            fused = luminance + change
            pseudo_ir, gate = (None if m is None else cv2.resize(m, size, interpolation=cv2.INTER_LINEAR)
                               for m in (pseudo_ir, gate))
        ycrcb[:, :, 0] = to_uint8(fused)
        result = FusionResult(
            fused=cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR),
            pseudo_ir=None if pseudo_ir is None else to_uint8(pseudo_ir),
            gate=None if gate is None else np.clip(gate, 0.0, 1.0),
        )
        t3 = time.perf_counter()
        result.timings_ms = {"pre": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3,
                             "total": (t3 - t0) * 1e3}
        return result
