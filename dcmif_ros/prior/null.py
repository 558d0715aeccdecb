"""The paper's "no LLM" ablation: no review at all; the FiLM code turns it into identity (γ = 1, β = 0)."""
from __future__ import annotations

import numpy as np

from dcmif_ros.prior.base import PriorEncoder, PriorText, checked_pair
from dcmif_ros.prior.text_encoder import MINILM_FEATURE_DIM

NULL_ENCODER_ID = "none"


class NullPriorEncoder(PriorEncoder):
    """Zero features of the embedded size, so shapes match everywhere; ``is_identity`` tells FiLM to skip them."""

    is_identity = True
    encoder_id = NULL_ENCODER_ID
    feature_dim = MINILM_FEATURE_DIM

    def encode(self, visible_bgr: np.ndarray, pseudo_ir: np.ndarray) -> PriorText:
        checked_pair(visible_bgr, pseudo_ir)
        return PriorText(np.zeros(self.feature_dim, dtype=np.float32), "", NULL_ENCODER_ID)
