"""The FiLM parameters in force for inference: one immutable object, swapped whole when a refresh lands.

The engine reads ``gamma`` and ``beta`` (one value per dictionary atom) and may keep the object as long as it
likes: its arrays are read-only copies, so a reader can never see half of one prior and half of the next.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

#: ``frame_index`` of a prior that was not computed from a processed frame (the initial one).
BEFORE_FIRST_FRAME = -1


@dataclass(frozen=True, eq=False)
class Prior:
    """γ, β for the atoms, the text they came from, and when and how fast they were made.

    A compute function fills ``gamma``, ``beta`` and ``source_text``; the refresher stamps the rest.
    """

    gamma: np.ndarray
    beta: np.ndarray
    source_text: str = ""
    version: int = 0
    frame_index: int = BEFORE_FIRST_FRAME
    latency_s: float = 0.0
    created_s: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        gamma = read_only_vector(self.gamma, "gamma")
        beta = read_only_vector(self.beta, "beta")
        if gamma.shape != beta.shape:
            raise ValueError(f"gamma and beta must have the same shape, got {gamma.shape} and {beta.shape}")
        object.__setattr__(self, "gamma", gamma)
        object.__setattr__(self, "beta", beta)

    @classmethod
    def identity(cls, num_atoms: int) -> Prior:
        """γ = 1, β = 0: leaves the coefficients unchanged (the first pass, and the no-prior ablation)."""
        return cls(np.ones(num_atoms, np.float32), np.zeros(num_atoms, np.float32), source_text="identity")

    @property
    def num_atoms(self) -> int:
        return self.gamma.size

    def age_frames(self, now_frame: int) -> int:
        """Processed frames since the frame this prior was computed from."""
        return now_frame - self.frame_index

    def age_s(self) -> float:
        """Seconds since this prior was put in force (monotonic clock)."""
        return time.monotonic() - self.created_s


def read_only_vector(values: np.ndarray, name: str) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"{name} must be a non-empty vector, got shape {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"{name} contains NaN or infinite values")
    vector.setflags(write=False)
    return vector
