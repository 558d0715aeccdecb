"""Fusion methods by name, for ``dcmif report``: a registry that other methods (LRCFuse, dual-modal DCMIF) join.

A method is a callable ``(visible BGR uint8, infrared grey uint8) -> fused BGR uint8``, or a
:class:`MethodOutput` that also carries the pseudo-infrared the method inferred. Visible-only methods ignore
the infrared argument; ``Method.uses_infrared`` says which kind a method is, so reports can tell them apart.

A spec names a method: ``NAME`` or ``NAME:ARGUMENT``. Built in:

* ``visible``: the visible image itself (the do-nothing baseline).
* ``max``: max(Y_vis, IR) with the visible colour (uses the real infrared; the fusion-loss target of AFRI).
* ``dcmif:MODEL:PRIOR``: our model on the visible image only; ``MODEL`` empty means the shipped model and
  ``PRIOR`` is a ``--prior`` spec (default ``embedded``; it may itself contain a colon, as ``vlm:PATH``).
  Labelled ``dcmif:MODEL_STEM:PRIOR`` in reports.
* aliases ``dcmif-tiny`` (= ``dcmif::embedded``) and ``dcmif-tiny-noprior`` (= ``dcmif::none``).
* ``lrcfuse:ONNX`` and ``dcmif-dual:ONNX``: the dual-modal models (visible + real infrared, see
  ``dcmif_ros.inference.dual``); ``ONNX`` empty means the shipped ``models/lrcfuse.onnx`` / ``models/dcmif_dual_tiny.onnx``.

To add a method: ``register_method(name, build)``, where ``build(argument, options)`` returns a
:class:`Method`; ``register_alias`` gives a spec a short name.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import cv2
import numpy as np

if TYPE_CHECKING:
    from dcmif_ros.inference.engine import FusionResult
    from dcmif_ros.inference.pipeline import FusionPipeline

SPEC_SEPARATOR = ":"
DCMIF_DEFAULT_PRIOR = "embedded"


@dataclass(frozen=True)
class MethodOutput:
    """A method's result: the fused image and, for methods that infer it, the pseudo-infrared (uint8 HxW)."""

    fused: np.ndarray
    pseudo_ir: np.ndarray | None = None


FusionMethod = Callable[[np.ndarray, np.ndarray], Union[np.ndarray, MethodOutput]]


@dataclass(frozen=True)
class MethodOptions:
    """Settings every method builder gets: the onnxruntime provider and precision of model-based methods."""

    provider: str = "auto"
    precision: str = "auto"


def _release_nothing() -> None:
    """``Method.close`` of methods that hold no resources."""


@dataclass(frozen=True)
class Method:
    """A built method: the label reports show, whether it reads the real infrared, and how to run and free it."""

    label: str
    uses_infrared: bool
    fuse: FusionMethod
    close: Callable[[], None] = _release_nothing

    def __call__(self, visible_bgr: np.ndarray, infrared: np.ndarray) -> MethodOutput:
        """Run the method and check its output, so a new method's mistake is reported by name, not later."""
        output = self.fuse(visible_bgr, infrared)
        if not isinstance(output, MethodOutput):
            output = MethodOutput(output)
        if output.fused.dtype != np.uint8 or output.fused.shape != visible_bgr.shape:
            raise ValueError(f"method {self.label} returned {output.fused.dtype} {output.fused.shape}, "
                             f"expected uint8 {visible_bgr.shape} like the visible image")
        return output


MethodBuilder = Callable[[str, MethodOptions], Method]
"""Makes a Method from the spec's argument (the text after ``NAME:``, empty when absent) and the options."""

_BUILDERS: dict[str, MethodBuilder] = {}
_ALIASES: dict[str, str] = {}


def _check_unused(name: str) -> None:
    if SPEC_SEPARATOR in name or name in _BUILDERS or name in _ALIASES:
        raise ValueError(f"method name {name!r} is taken or contains {SPEC_SEPARATOR!r}")


def register_method(name: str, build: MethodBuilder) -> None:
    """Make ``name`` (and ``name:ARGUMENT``) a method spec, built by ``build``."""
    _check_unused(name)
    _BUILDERS[name] = build


def register_alias(alias: str, spec: str) -> None:
    """Let ``alias`` stand for ``spec``; reports label the method with the alias."""
    _check_unused(alias)
    _ALIASES[alias] = spec


def make_method(spec: str, options: MethodOptions = MethodOptions()) -> Method:
    """Build the method a spec names (loads models for model-based methods); ValueError lists the known names.

    The method is labelled by its alias when named by one, else by its builder.
    """
    name, _, argument = _ALIASES.get(spec, spec).partition(SPEC_SEPARATOR)
    if name not in _BUILDERS:
        known = ", ".join([*_BUILDERS, *_ALIASES])
        raise ValueError(f"unknown method {spec!r}; known: {known} (or NAME:ARGUMENT for those taking one)")
    method = _BUILDERS[name](argument, options)
    return dataclasses.replace(method, label=spec) if spec in _ALIASES else method


def label_apart(methods: list[Method], specs: list[str]) -> list[Method]:
    """``methods`` (built from ``specs``, in order) with every label that two of them would share replaced by
    the method's spec: models are labelled by file name, and two runs' ``lrcfuse.onnx`` must not merge."""
    labels = [method.label for method in methods]
    return [dataclasses.replace(method, label=spec) if labels.count(method.label) > 1 else method
            for method, spec in zip(methods, specs)]


def require_distinct_labels(methods: list[Method]) -> None:
    """Results are keyed by label: a shared one would silently average two methods into one row."""
    labels = [method.label for method in methods]
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"need methods with distinct labels, got {labels}")


def _no_argument(name: str, argument: str) -> None:
    if argument:
        raise ValueError(f"method {name!r} takes no argument, got {name}{SPEC_SEPARATOR}{argument}")


# ---------------------------------------------------------------------------------------------------------
# Baselines


def max_luminance_fusion(visible_bgr: np.ndarray, infrared: np.ndarray) -> np.ndarray:
    """max(Y_vis, IR) as the luminance, the visible chroma kept (full-range BT.601, as the engine uses)."""
    ycrcb = cv2.cvtColor(visible_bgr, cv2.COLOR_BGR2YCrCb)
    ycrcb[:, :, 0] = np.maximum(ycrcb[:, :, 0], infrared)
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)


def _visible_only(visible_bgr: np.ndarray, infrared: np.ndarray) -> np.ndarray:
    return visible_bgr


def _build_visible(argument: str, options: MethodOptions) -> Method:
    _no_argument("visible", argument)
    return Method("visible", uses_infrared=False, fuse=_visible_only)


def _build_max(argument: str, options: MethodOptions) -> Method:
    _no_argument("max", argument)
    return Method("max", uses_infrared=True, fuse=max_luminance_fusion)


# ---------------------------------------------------------------------------------------------------------
# DCMIF on the visible image


class StillImageFuser:
    """Fuses still images in order, each refresh computed from the image it serves first (DCMIF Alg. 2).

    Images 0, N, 2N, ... compute the prior from themselves (first pass, review, FiLM) before being fused;
    the images in between reuse it. The node's live rule (``FusionPipeline.process``) instead applies a
    prior from the frame after the one it was computed from, which for stills would fuse a single image
    without any prior. Deterministic; no thread.
    """

    def __init__(self, pipeline: FusionPipeline, refresh_every: int):
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be at least 1, got {refresh_every}")
        self._pipeline = pipeline
        self._refresh_every = refresh_every
        self._images_fused = 0
        self._prior = None

    def __call__(self, frame_bgr: np.ndarray, want_gate: bool = False) -> FusionResult:
        if self._pipeline.uses_prior and self._images_fused % self._refresh_every == 0:
            self._prior = self._pipeline.compute_prior(frame_bgr)
        self._images_fused += 1
        gamma, beta = (None, None) if self._prior is None else (self._prior.gamma, self._prior.beta)
        return self._pipeline.engine.run(frame_bgr, gamma, beta, want_gate=want_gate)


def _build_dcmif(argument: str, options: MethodOptions) -> Method:
    from dcmif_ros.inference.pipeline import FusionPipeline, PipelineConfig

    model, _, prior = argument.partition(SPEC_SEPARATOR)
    prior = prior or DCMIF_DEFAULT_PRIOR
    pipeline = FusionPipeline(PipelineConfig(model_path=model or None, provider=options.provider,
                                             precision=options.precision, prior=prior, synchronous_prior=True))
    fuser = StillImageFuser(pipeline, refresh_every=1)

    def fuse(visible_bgr: np.ndarray, infrared: np.ndarray) -> MethodOutput:
        result = fuser(visible_bgr)
        return MethodOutput(result.fused, result.pseudo_ir)

    label = SPEC_SEPARATOR.join(("dcmif", pipeline.engine.model_path.stem, prior))
    return Method(label, uses_infrared=False, fuse=fuse, close=pipeline.close)


register_method("visible", _build_visible)
register_method("max", _build_max)
register_method("dcmif", _build_dcmif)
register_alias("dcmif-tiny", "dcmif::embedded")
register_alias("dcmif-tiny-noprior", "dcmif::none")


# ---------------------------------------------------------------------------------------------------------
# Dual-modal models: visible + the real infrared

DUAL_MODEL_FILES = {"lrcfuse": "lrcfuse.onnx", "dcmif-dual": "dcmif_dual_tiny.onnx"}


def shipped_dual_model(name: str):
    """Where the shipped ONNX graph of a dual-modal method lies (beside the shipped DCMIF model)."""
    from dcmif_ros.inference.pipeline import default_model_path

    return default_model_path().with_name(DUAL_MODEL_FILES[name])


def _dual_builder(name: str) -> MethodBuilder:
    def build(argument: str, options: MethodOptions) -> Method:
        from dcmif_ros.inference.engine import FusionEngine
        from dcmif_ros.inference.export import KIND_DUAL

        engine = FusionEngine(argument or shipped_dual_model(name), provider=options.provider,
                              precision=options.precision)
        if engine.kind != KIND_DUAL:
            raise ValueError(f"method {name!r} needs a dual-modal model, {engine.model_path} is {engine.kind}")

        def fuse(visible_bgr: np.ndarray, infrared: np.ndarray) -> np.ndarray:
            return engine.run_dual(visible_bgr, infrared).fused

        return Method(SPEC_SEPARATOR.join((name, engine.model_path.stem)), uses_infrared=True, fuse=fuse)

    return build


register_method("lrcfuse", _dual_builder("lrcfuse"))
register_method("dcmif-dual", _dual_builder("dcmif-dual"))
