"""dcmif_node's parameters: one table with descriptors and ranges, typed views, and the runtime-change rules.

Two kinds, as depthai's ``i_``/``r_`` split: *initial* parameters are ``read_only`` (set them in the YAML, a
launch argument or ``--ros-args -p``; they are read on configure), *runtime* ones can be changed with
``ros2 param set`` while the node runs. rclpy enforces types, ranges and read-only from the descriptors;
:func:`runtime_change_problem` adds the rules a descriptor cannot express.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from dcmif_ros.inference.engine import PRECISION_CHOICES, PROVIDER_CHOICES, resolve_providers
from dcmif_ros.inference.pipeline import DEFAULT_DUAL_MODEL_NAME, PipelineConfig, default_model_path
from dcmif_ros.prior import PRIOR_SPEC_HELP, parse_prior_spec
from dcmif_ros.inference.processing_resolution import AUTO, ProcessingSize
from dcmif_ros.prior.factory import DEFAULT_PRIOR_SPEC, NONE_SPEC

MAX_PROCESSING_SIDE = 8192
MAX_INFERENCE_THREADS = 64
MAX_INFERENCE_WORKERS = 8
CPU_INFERENCE_WORKERS = 2
"""Workers on the CPU provider by default. Measured on 2 cores (docs/node.md, "Workers"): one worker with two
onnxruntime threads fused 14.4-14.7 of 15 frames/s, two workers with one thread each 14.9-15.0: the graph's ~400
operators each wake the second thread, which costs more than it parallelises (at some latency: one thread per
frame is slower)."""
MAX_REFRESH_PERIOD_FRAMES = 100_000
MAX_IR_PAIRING_TOLERANCE_S = 1.0
IR_TIMEOUT_RANGE_S = (0.01, 60.0)
DEFAULT_MAX_INPUT_PIXELS = 7680 * 4320
"""8K UHD: any camera's frame passes, a decompression bomb (a small PNG declaring 10000x10000) does not."""
MAX_INPUT_PIXELS_LIMIT = 1 << 31


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: bool | int | float | str
    description: str
    runtime: bool = False
    integer_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    constraints: str = ""

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(description=self.description, read_only=not self.runtime,
                                         additional_constraints=self.constraints)
        if self.integer_range:
            descriptor.integer_range = [IntegerRange(from_value=self.integer_range[0],
                                                     to_value=self.integer_range[1], step=1)]
        if self.float_range:
            descriptor.floating_point_range = [FloatingPointRange(from_value=self.float_range[0],
                                                                  to_value=self.float_range[1], step=0.0)]
        return descriptor


def parameter_specs() -> tuple[ParameterSpec, ...]:
    """Every parameter of dcmif_node (``model_path`` defaults to the model shipped in the share directory)."""
    return (
        ParameterSpec("autostart", True, "configure and activate on start-up; false leaves the node "
                      "unconfigured for a lifecycle manager (ros2 lifecycle set ...)"),
        ParameterSpec("model_path", str(default_model_path()), "ONNX model file; its .json manifest and "
                      ".film.npz FiLM heads must sit beside it"),
        ParameterSpec("provider", "auto", "onnxruntime execution provider: auto picks TensorRT, then CUDA, "
                      "then CPU, as available", constraints=f"one of {', '.join(PROVIDER_CHOICES)}"),
        ParameterSpec("precision", "auto", "graph precision: auto uses the model's exported fp16 graph on the "
                      "CUDA provider (TensorRT picks its own), its int8 graph on the CPU where the export measured "
                      "it faster and within error bounds, fp32 otherwise; int8 runs on the CPU provider only",
                      constraints=f"one of {', '.join(PRECISION_CHOICES)}"),
        ParameterSpec("allow_cpu_fallback", True, "accept a session that ended up on the CPU when a GPU "
                      "provider was asked for (a warning in /diagnostics); false fails activation instead"),
        ParameterSpec("inference_workers", 0, "frames fused at once, each by a worker thread of its own; 0 = auto: "
                      f"{CPU_INFERENCE_WORKERS} on the CPU provider (two frames side by side, each on its own cores, "
                      "instead of one frame whose many small operators wait on each other), 1 on a GPU",
                      integer_range=(0, MAX_INFERENCE_WORKERS)),
        ParameterSpec("inference_threads", 0, "onnxruntime intra-op threads of the session the workers share (each "
                      "run computes on its worker's thread and the session's pool of threads - 1); 0 = auto: on the "
                      "CPU workers + pool = the process's cores, on a GPU onnxruntime decides",
                      integer_range=(0, MAX_INFERENCE_THREADS)),
        ParameterSpec("processing_width", 0, "width the network runs at; 0 (with processing_height 0) = auto: "
                      "about 320x240 for larger frames (aspect ratio kept), on a GPU too, except frames fused "
                      "with the real infrared (use_ir), which run at the input's own size (outputs always keep "
                      "the input size)",
                      integer_range=(0, MAX_PROCESSING_SIDE),
                      constraints="0 together with processing_height, or both positive"),
        ParameterSpec("processing_height", 0, "height the network runs at; 0 (with processing_width 0) = auto",
                      integer_range=(0, MAX_PROCESSING_SIDE),
                      constraints="0 together with processing_width, or both positive"),
        ParameterSpec("prior", DEFAULT_PRIOR_SPEC, PRIOR_SPEC_HELP, constraints="embedded | none | vlm:PATH"),
        ParameterSpec("refresh_every_n_frames", 30, "recompute the FiLM prior (gamma, beta) every N processed "
                      "frames, in a background thread", runtime=True,
                      integer_range=(1, MAX_REFRESH_PERIOD_FRAMES)),
        ParameterSpec("prior_timeout_s", 30.0, "a prior refresh slower than this is discarded",
                      float_range=(0.1, 3600.0)),
        ParameterSpec("use_compressed", False, "subscribe to image_raw/compressed (sensor_msgs/CompressedImage) "
                      "instead of image_raw"),
        ParameterSpec("max_input_pixels", DEFAULT_MAX_INPUT_PIXELS, "input images with more pixels (width x "
                      "height, read from the header before decoding, compressed images too) are rejected",
                      integer_range=(1, MAX_INPUT_PIXELS_LIMIT)),
        ParameterSpec("use_ir", False, "also subscribe to ir_image (a registered thermal camera) and fuse real "
                      "visible/infrared pairs with dual_model_path; DCMIF's inferred infrared while none arrives"),
        ParameterSpec("dual_model_path", str(default_model_path(DEFAULT_DUAL_MODEL_NAME)), "dual-modal ONNX model "
                      "(visible + real infrared) used with use_ir; its .json manifest must sit beside it"),
        ParameterSpec("ir_pairing_tolerance_s", 0.05, "an infrared frame pairs with a visible frame whose header "
                      "stamp is at most this far from its own", float_range=(0.0, MAX_IR_PAIRING_TOLERANCE_S)),
        ParameterSpec("ir_timeout_s", 1.0, "no infrared frame for this long (in header stamps) falls back to "
                      "the inferred infrared", float_range=IR_TIMEOUT_RANGE_S),
        ParameterSpec("publish_fused", True, "publish fused/image (bgr8)", runtime=True),
        ParameterSpec("publish_pseudo_thermal", True, "publish pseudo_thermal/image (mono8)", runtime=True),
        ParameterSpec("publish_debug_gate", False, "publish debug/gate, the fusion gate as a colour map",
                      runtime=True),
        ParameterSpec("publish_status", True, "publish status (dcmif_msgs/FusionStatus)", runtime=True),
        ParameterSpec("diagnostics_period_s", 1.0, "period of status and /diagnostics messages",
                      float_range=(0.1, 60.0)),
    )


def declare_parameters(node: Node) -> None:
    """Declare every parameter; ConfigError names a value given at start-up that its type or range refuses."""
    for spec in parameter_specs():
        try:
            node.declare_parameter(spec.name, spec.default, spec.descriptor())
        except (InvalidParameterValueException, InvalidParameterTypeException):
            raise ConfigError(f"parameter {spec.name}: {_refusal(spec, node)}") from None


def _refusal(spec: ParameterSpec, node: Node) -> str:
    """Why the override given for ``spec`` was refused, with what would be accepted."""
    given = node._parameter_overrides.get(spec.name)  # what the user passed (rclpy keeps it there)
    value = given.value if given is not None else "?"
    if isinstance(spec.default, bool) or not isinstance(value, type(spec.default)):
        return f"{value!r} is not a {type(spec.default).__name__}"
    low, high = spec.integer_range or spec.float_range
    return f"{value!r} is outside the allowed range {low}..{high}"


def runtime_parameter_names() -> frozenset[str]:
    return frozenset(spec.name for spec in parameter_specs() if spec.runtime)


class ConfigError(ValueError):
    """An initial parameter value the node cannot start with; the message says which and why."""


@dataclass(frozen=True)
class OutputSwitches:
    """Which outputs to produce; each is also skipped while it has no subscriber."""

    fused: bool
    pseudo_thermal: bool
    debug_gate: bool
    status: bool

    @property
    def any_image(self) -> bool:
        return self.fused or self.pseudo_thermal or self.debug_gate


@dataclass(frozen=True)
class RuntimeSettings:
    """The runtime parameters; replaced whole when one changes, so readers never see a half update."""

    outputs: OutputSwitches
    refresh_every_n_frames: int

    def with_changes(self, parameters: Iterable[Parameter]) -> RuntimeSettings:
        values = {p.name: p.value for p in parameters}
        outputs = OutputSwitches(
            fused=values.get("publish_fused", self.outputs.fused),
            pseudo_thermal=values.get("publish_pseudo_thermal", self.outputs.pseudo_thermal),
            debug_gate=values.get("publish_debug_gate", self.outputs.debug_gate),
            status=values.get("publish_status", self.outputs.status),
        )
        return replace(self, outputs=outputs,
                       refresh_every_n_frames=values.get("refresh_every_n_frames", self.refresh_every_n_frames))


@dataclass(frozen=True)
class InfraredConfig:
    """The real-infrared input, when ``use_ir`` is true."""

    dual_model_path: Path
    pairing_tolerance_s: float
    timeout_s: float


@dataclass(frozen=True)
class NodeConfig:
    """The initial parameters, read and checked on configure."""

    model_path: Path
    provider: str
    precision: str
    allow_cpu_fallback: bool
    inference_threads: int
    processing_size: ProcessingSize
    prior: str
    prior_timeout_s: float
    use_compressed: bool
    diagnostics_period_s: float
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS
    ir: InfraredConfig | None = None  # None: no thermal camera (use_ir false)
    inference_workers: int = 0

    @cached_property
    def workers(self) -> int:
        """How many worker threads fuse frames (``inference_workers``, or its auto choice, decided once)."""
        if self.inference_workers:
            return self.inference_workers
        return CPU_INFERENCE_WORKERS if runs_on_cpu(self.provider) else 1

    @cached_property
    def threads(self) -> int | None:
        """onnxruntime intra-op threads of the sessions the workers share (``inference_threads``, or its auto
        choice; None: onnxruntime's): the whole graph's, and its cut's for frames whose pseudo-IR nobody reads;
        while the subscribers stay the same every frame runs the same one. Each worker's run computes on its own
        thread and on the session's pool of threads − 1, which all runs share: auto sizes the pool so workers +
        pool = this process's cores."""
        if self.inference_threads:
            return self.inference_threads
        return max(1, usable_cores() - self.workers + 1) if runs_on_cpu(self.provider) else None

    def pipeline_config(self, refresh_every_n_frames: int) -> PipelineConfig:
        return PipelineConfig(
            model_path=self.model_path, provider=self.provider, precision=self.precision,
            allow_cpu_fallback=self.allow_cpu_fallback,
            processing_size=self.processing_size, prior=self.prior,
            refresh_every_n_frames=refresh_every_n_frames, prior_timeout_s=self.prior_timeout_s,
            threads=self.threads, spin_wait=False,  # the node shares the CPU with its graph
        )


def usable_cores() -> int:
    """The cores this process may run on (its affinity: containers and cpusets included)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def runs_on_cpu(provider: str) -> bool:
    """Whether a session asked for ``provider`` will run on the CPU provider (the first one it is offered)."""
    import onnxruntime

    return resolve_providers(provider, onnxruntime.get_available_providers())[0] == "CPUExecutionProvider"


def read_config(node: Node) -> NodeConfig:
    """The initial parameters as a checked NodeConfig; ConfigError names the first bad one."""
    value = _values(node)
    provider = value["provider"]
    if provider not in PROVIDER_CHOICES:
        raise ConfigError(f"parameter provider is {provider!r}; choose one of {', '.join(PROVIDER_CHOICES)}")
    if value["precision"] not in PRECISION_CHOICES:
        raise ConfigError(f"parameter precision is {value['precision']!r}; choose one of "
                          f"{', '.join(PRECISION_CHOICES)}")
    try:
        parse_prior_spec(value["prior"])
    except ValueError as exc:
        raise ConfigError(f"parameter prior: {exc}") from None
    width, height = value["processing_width"], value["processing_height"]
    if (width == 0) != (height == 0):
        raise ConfigError(f"processing_width and processing_height must both be 0 (auto) or both "
                          f"positive, got {width} x {height}")
    model_path = _existing_model(value, "model_path")
    ir = None
    if value["use_ir"]:
        ir = InfraredConfig(_existing_model(value, "dual_model_path"), value["ir_pairing_tolerance_s"],
                            value["ir_timeout_s"])
    return NodeConfig(
        model_path=model_path, provider=provider, precision=value["precision"],
        allow_cpu_fallback=value["allow_cpu_fallback"],
        inference_threads=value["inference_threads"], inference_workers=value["inference_workers"],
        processing_size=(width, height) if width else AUTO,
        prior=value["prior"], prior_timeout_s=value["prior_timeout_s"], use_compressed=value["use_compressed"],
        diagnostics_period_s=value["diagnostics_period_s"], max_input_pixels=value["max_input_pixels"], ir=ir,
    )


def _existing_model(value: dict, name: str) -> Path:
    path = Path(value[name]).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name} {str(path)!r} is not a file: export a model there or set {name}")
    return path


def read_runtime_settings(node: Node) -> RuntimeSettings:
    value = _values(node)
    return RuntimeSettings(
        outputs=OutputSwitches(fused=value["publish_fused"], pseudo_thermal=value["publish_pseudo_thermal"],
                               debug_gate=value["publish_debug_gate"], status=value["publish_status"]),
        refresh_every_n_frames=value["refresh_every_n_frames"],
    )


def runtime_change_problem(current: RuntimeSettings, prior: str, parameters: list[Parameter]) -> str | None:
    """Why a runtime change is refused (the reason ``ros2 param set`` shows), or None to accept it."""
    names = {p.name for p in parameters}
    if "refresh_every_n_frames" in names and parse_prior_spec(prior).kind == NONE_SPEC:
        return "prior is 'none': there is no prior to refresh (prior is set at start-up)"
    if not current.with_changes(parameters).outputs.any_image:
        return ("at least one of publish_fused, publish_pseudo_thermal, publish_debug_gate must stay true; "
                "deactivate the node to pause it")
    return None


def _values(node: Node) -> dict:
    return {spec.name: node.get_parameter(spec.name).value for spec in parameter_specs()}
