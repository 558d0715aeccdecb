"""What every prior backend promises: text about a (visible, pseudo-IR) pair and its feature vector F_text.

Checkpoints record the ``encoder_id`` and ``feature_dim`` their FiLM heads were trained with, so a
different backend is rejected by ``check_compatible`` instead of silently producing meaningless γ, β.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class PriorText:
    """One review of a pair: the text that was encoded, its features, and which encoder made them."""

    features: np.ndarray = field(repr=False)
    text: str
    encoder_id: str

    def __post_init__(self) -> None:
        features = np.array(self.features, dtype=np.float32)
        if features.ndim != 1:
            raise ValueError(f"prior features must be a vector, got shape {features.shape}")
        features.setflags(write=False)
        object.__setattr__(self, "features", features)


class PriorEncoder(ABC):
    """Turns a visible frame and its first-pass pseudo-IR into F_text for the FiLM heads."""

    #: True only for the "no LLM" ablation, whose features the FiLM code replaces by identity (γ = 1, β = 0).
    is_identity: bool = False

    @property
    @abstractmethod
    def encoder_id(self) -> str:
        """Names the text source and the text encoder; checkpoints store it."""

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """F, the length of ``PriorText.features`` (the FiLM heads' input size)."""

    @abstractmethod
    def encode(self, visible_bgr: np.ndarray, pseudo_ir: np.ndarray) -> PriorText:
        """Review one pair: ``visible_bgr`` uint8 H×W×3, ``pseudo_ir`` float32 H×W in [0, 1]."""


class IncompatiblePriorEncoder(ValueError):
    """The prior encoder in use is not the one the checkpoint's FiLM heads were trained with."""


def check_compatible(encoder: PriorEncoder, expected_id: str, expected_dim: int) -> None:
    """Reject an encoder whose features the checkpoint's FiLM heads were not trained on.

    The identity encoder is accepted with any checkpoint: its γ, β never come from the FiLM heads.
    """
    if encoder.is_identity:
        return
    if encoder.encoder_id != expected_id or encoder.feature_dim != expected_dim:
        raise IncompatiblePriorEncoder(
            f"prior encoder mismatch: the checkpoint was trained with {expected_id!r} ({expected_dim}-d features) "
            f"but the configured prior encoder is {encoder.encoder_id!r} ({encoder.feature_dim}-d features); "
            "use the prior the checkpoint was trained with, or 'none' for identity FiLM"
        )


def checked_pair(visible_bgr: np.ndarray, pseudo_ir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate an encoder's inputs and clamp the pseudo-IR to [0, 1], as the reference does before review.

    The two images may differ in size (the engine may pad); backends only compare relative statistics.
    """
    if visible_bgr.dtype != np.uint8 or visible_bgr.ndim != 3 or visible_bgr.shape[2] != 3:
        raise ValueError(f"visible image must be uint8 H×W×3 (BGR), got {visible_bgr.dtype} {visible_bgr.shape}")
    if pseudo_ir.ndim != 2 or not np.issubdtype(pseudo_ir.dtype, np.floating):
        raise ValueError(f"pseudo-IR must be a float H×W array in [0, 1], got {pseudo_ir.dtype} {pseudo_ir.shape}")
    if min(visible_bgr.shape[:2]) == 0 or min(pseudo_ir.shape) == 0:
        raise ValueError("cannot review an empty image")
    if not np.all(np.isfinite(pseudo_ir)):
        raise ValueError("pseudo-IR contains NaN or infinite values")
    return visible_bgr, np.clip(pseudo_ir, 0.0, 1.0).astype(np.float32, copy=False)
