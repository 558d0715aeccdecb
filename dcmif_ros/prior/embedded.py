"""The default prior: the paper's prompt completed with a measured description of the pair, MiniLM-encoded.

Offline and deterministic on any machine: no language model, so the "critique" is the description that
``describe.py`` measures, appended to the exact texts T1 and T2 a vision-language model would be given.
"""
from __future__ import annotations

import numpy as np

from dcmif_ros.prior.base import PriorEncoder, PriorText
from dcmif_ros.prior.describe import describe_pair
from dcmif_ros.prior.prompt import SYNTHETIC_INFRARED_TEXT, VISIBLE_IMAGE_TEXT
from dcmif_ros.prior.text_encoder import SentenceEncoder

#: Names how the text is made; bump the version whenever ``describe.py`` changes its sentences or thresholds,
#: so checkpoints trained on the old text are rejected.
DESCRIPTION_SOURCE = "embedded-describe-v1"


class EmbeddedPriorEncoder(PriorEncoder):
    """T1 + T2 + measured sentences → all-MiniLM-L6-v2 features (384-d)."""

    def __init__(self, text_encoder: SentenceEncoder | None = None):
        self._text_encoder = text_encoder or SentenceEncoder()

    @property
    def encoder_id(self) -> str:
        return f"{DESCRIPTION_SOURCE}+{self._text_encoder.name}"

    @property
    def feature_dim(self) -> int:
        return self._text_encoder.feature_dim

    def encode(self, visible_bgr: np.ndarray, pseudo_ir: np.ndarray) -> PriorText:
        description = describe_pair(visible_bgr, pseudo_ir)
        text = " ".join((VISIBLE_IMAGE_TEXT, SYNTHETIC_INFRARED_TEXT, description.text))
        return PriorText(self._text_encoder.encode(text), text, self.encoder_id)
