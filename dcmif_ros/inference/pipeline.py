"""FusionPipeline: the engine plus the language-model prior, the one object every front end drives.

The ROS node, ``dcmif bag``, ``dcmif fuse`` and ``dcmif bench`` all call ``process(frame)``: it fuses with the
prior in force, then tells the refresher a frame was processed (every N-th frame starts a refresh: in a
background thread live, inline offline so replays are deterministic).
A refresh runs the engine once with identity FiLM (the first-pass pseudo-IR of DCMIF Alg. 2), lets the prior
backend review (visible, pseudo-IR), and maps its text features through the checkpoint's FiLM heads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcmif_ros.inference.engine import EngineError, FusionEngine, FusionResult
from dcmif_ros.inference.export import KIND_VISIBLE
from dcmif_ros.prior import Prior, PriorRefresher, RefreshConfig, check_compatible, make_prior_encoder
from dcmif_ros.prior.refresher import PRIOR_NICENESS
from dcmif_ros.resources import packaged_file

DEFAULT_MODEL_NAME = "dcmif_tiny.onnx"
DEFAULT_DUAL_MODEL_NAME = "dcmif_dual_tiny.onnx"
"""The shipped dual-modal DCMIF (visible + real infrared), for a node with a thermal camera."""


def default_model_path(name: str = DEFAULT_MODEL_NAME) -> Path:
    """A shipped model (the tiny visible one by default), installed or in the source tree."""
    return packaged_file("dcmif_ros", Path("models") / name)


PRIOR_TORCH_THREADS = 1
PRIOR_SESSION_THREADS = 1
"""Intra-op threads of the first pass's own onnxruntime session (``PipelineConfig.prior_threads``): one runs it on
the refresher's thread, which the refresher runs at a lower priority, so the image path's session keeps its
threads (benchmarks/refresh_jitter.py measures the frame-time jitter with and without)."""


def limit_torch_threads() -> None:
    """The prior backend is the only torch user at run time; with torch's default pool it fights onnxruntime
    for the cores (measured on 2 cores: embedded prior 290–900 ms with 2 threads, 51–58 ms with 1)."""
    import torch

    torch.set_num_threads(PRIOR_TORCH_THREADS)


@dataclass(frozen=True)
class PipelineConfig:
    model_path: str | Path | None = None
    provider: str = "auto"
    precision: str = "auto"
    allow_cpu_fallback: bool = True
    processing_size: tuple[int, int] | None = None
    prior: str = "embedded"
    refresh_every_n_frames: int = 30
    prior_timeout_s: float = 30.0
    synchronous_prior: bool = False
    threads: int | None = None
    prior_threads: int | None = PRIOR_SESSION_THREADS  # None: the first pass shares the image path's session
    prior_niceness: int = PRIOR_NICENESS
    prior_idle: bool = False  # True: the refresh thread runs on idle CPU only (RefreshConfig.worker_idle)
    spin_wait: bool = True  # onnxruntime threads spin between operators (engine.SPIN_CONFIG_KEY); False in the node


class FusionPipeline:
    def __init__(self, config: PipelineConfig):
        self.config = config
        self.engine = FusionEngine(config.model_path or default_model_path(), provider=config.provider,
                                   allow_cpu_fallback=config.allow_cpu_fallback,
                                   processing_size=config.processing_size, threads=config.threads,
                                   precision=config.precision, spin_wait=config.spin_wait)
        if self.engine.kind != KIND_VISIBLE:
            raise EngineError(f"{self.engine.model_path} is a {self.engine.kind}-modal model (visible + real "
                              "infrared); this pipeline infers the infrared and needs a visible model such as "
                              f"{DEFAULT_MODEL_NAME} (a node fuses a real thermal camera with use_ir and "
                              "dual_model_path)")
        self.encoder = make_prior_encoder(config.prior)
        self.uses_prior = not getattr(self.encoder, "is_identity", False)
        self.first_pass_engine = self.engine
        if self.uses_prior:
            limit_torch_threads()
            check_compatible(self.encoder, self.engine.manifest["prior_encoder_id"],
                             int(self.engine.manifest["prior_feature_dim"]))
            if config.prior_threads and not config.synchronous_prior:
                # the same graph and provider in a session of its own, so a refresh never takes the image
                # path's intra-op threads (offline runs refresh inline and need no second session)
                self.first_pass_engine = FusionEngine(
                    self.engine.model_path, provider=self.engine.provider,
                    allow_cpu_fallback=config.allow_cpu_fallback, processing_size=config.processing_size,
                    threads=config.prior_threads, precision=self.engine.precision,
                    lean=False)  # a first pass is run for its pseudo-IR
        self.refresher = PriorRefresher(
            self.compute_prior,
            RefreshConfig(config.refresh_every_n_frames, config.prior_timeout_s, config.synchronous_prior,
                          config.prior_niceness, config.prior_idle),
            Prior.identity(self.engine.atoms),
        )
        if self.uses_prior:
            self.refresher.start()

    @property
    def prior_name(self) -> str:
        return self.config.prior

    def compute_prior(self, frame: np.ndarray) -> Prior:
        """First-pass pseudo-IR → backend review → (γ, β). Runs in the refresher's thread when live."""
        first_pass = self.first_pass_engine.run(frame)
        pseudo_ir = first_pass.pseudo_ir.astype(np.float32) * (1.0 / 255.0)
        review = self.encoder.encode(frame, pseudo_ir)
        gamma, beta = self.engine.film_from_features(review.features)
        return Prior(gamma, beta, source_text=review.text)

    def process(self, frame: np.ndarray, want_gate: bool = False, want_pseudo_ir: bool = True) -> FusionResult:
        prior = self.refresher.current
        result = self.engine.run(frame, prior.gamma, prior.beta, want_gate=want_gate, want_pseudo_ir=want_pseudo_ir)
        if self.uses_prior:
            self.refresher.notify_frame(frame)
        return result

    def close(self) -> None:
        self.refresher.stop()

    def __enter__(self) -> "FusionPipeline":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
