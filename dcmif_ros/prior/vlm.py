"""The paper's prior: a local vision-language chat model critiques the pair, MiniLM encodes the critique.

Any Hugging Face image-text-to-text checkpoint with a chat template works (Qwen2-VL, Qwen2.5-VL, LLaVA, ...;
with transformers 5 the Qwen-VL families also need torchvision, for their video processor). The chat is the
visible image, T1, the pseudo-IR, T2, built by the processor's own template. The visible image is shown in
colour (the reference showed only its Y channel): these models are trained on colour photos. Decoding is
greedy, so a frame gives the same critique every time (the reference sampled, making F_text random).
The critique goes through the same text encoder as the embedded prior, so F is the same size.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dcmif_ros.prior.base import PriorEncoder, PriorText, checked_pair
from dcmif_ros.prior.prompt import SYNTHETIC_INFRARED_TEXT, VISIBLE_IMAGE_TEXT
from dcmif_ros.prior.text_encoder import SentenceEncoder

#: Long enough for a few sentences of critique; MiniLM reads at most 256 tokens of it anyway.
DEFAULT_MAX_NEW_TOKENS = 128
#: Images are shrunk to this longest side before review; 448 is the input size of Qwen-VL in the reference.
DEFAULT_IMAGE_MAX_SIDE = 448


@dataclass(frozen=True)
class VisionLanguageConfig:
    """How the critique is generated; ``device`` "auto" picks CUDA when torch sees a GPU."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    image_max_side: int = DEFAULT_IMAGE_MAX_SIDE
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.image_max_side < 1:
            raise ValueError(f"image_max_side must be at least 1, got {self.image_max_side}")


class VisionLanguagePriorEncoder(PriorEncoder):
    """Critique by a local VLM (greedy decoding) → all-MiniLM-L6-v2 features (384-d)."""

    def __init__(
        self,
        model_path: str | Path,
        config: VisionLanguageConfig = VisionLanguageConfig(),
        text_encoder: SentenceEncoder | None = None,
    ):
        import torch
        from transformers import AutoModelForImageTextToText

        self.model_path = Path(model_path).expanduser()
        self.config = config
        device = resolve_device(config.device)
        self._processor = load_chat_processor(self.model_path)
        dtype = torch.float32 if device == "cpu" else "auto"  # half precision is slow or unsupported on CPUs
        self._model = AutoModelForImageTextToText.from_pretrained(
            self.model_path, local_files_only=True, dtype=dtype
        ).to(device).eval()
        self._text_encoder = text_encoder or SentenceEncoder()

    @property
    def model_name(self) -> str:
        return self.model_path.resolve().name

    @property
    def encoder_id(self) -> str:
        return f"vlm:{self.model_name}+{self._text_encoder.name}"

    @property
    def feature_dim(self) -> int:
        return self._text_encoder.feature_dim

    def encode(self, visible_bgr: np.ndarray, pseudo_ir: np.ndarray) -> PriorText:
        text = self.critique(visible_bgr, pseudo_ir)
        return PriorText(self._text_encoder.encode(text), text, self.encoder_id)

    def critique(self, visible_bgr: np.ndarray, pseudo_ir: np.ndarray) -> str:
        """The model's free-text review of the pair (special tokens removed)."""
        import torch

        visible_bgr, pseudo_ir = checked_pair(visible_bgr, pseudo_ir)
        visible_rgb = cv2.cvtColor(fit_within(visible_bgr, self.config.image_max_side), cv2.COLOR_BGR2RGB)
        infrared_8bit = np.round(fit_within(pseudo_ir, self.config.image_max_side) * 255.0).astype(np.uint8)
        infrared_rgb = cv2.cvtColor(infrared_8bit, cv2.COLOR_GRAY2RGB)
        inputs = self._processor.apply_chat_template(
            review_chat(visible_rgb, infrared_rgb),
            add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        ).to(self._model.device, dtype=self._model.dtype)
        with torch.inference_mode():
            output = self._model.generate(
                **inputs, do_sample=False, num_beams=1, max_new_tokens=self.config.max_new_tokens,
                temperature=None, top_p=None, top_k=None,
            )
        reply = output[0, inputs["input_ids"].shape[1]:]
        return self._processor.tokenizer.decode(reply, skip_special_tokens=True).strip()


def review_chat(visible_rgb: np.ndarray, infrared_rgb: np.ndarray) -> list[dict]:
    """One user turn: visible image, T1, pseudo-IR image, T2 (the reference's order and texts).

    Images are H×W×3 uint8 RGB arrays, which every Hugging Face image processor accepts.
    """
    return [{
        "role": "user",
        "content": [
            {"type": "image", "image": visible_rgb},
            {"type": "text", "text": VISIBLE_IMAGE_TEXT},
            {"type": "image", "image": infrared_rgb},
            {"type": "text", "text": SYNTHETIC_INFRARED_TEXT},
        ],
    }]


def load_chat_processor(model_path: Path):
    """The checkpoint's processor, with clear errors for a missing folder or a model that is not a chat VLM."""
    from transformers import AutoConfig, AutoProcessor
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    from transformers.utils import is_torchvision_available

    if not model_path.is_dir():
        raise FileNotFoundError(f"vision-language model folder not found: {model_path}")
    if not (model_path / "config.json").is_file():
        raise ValueError(f"{model_path} is not a Hugging Face model folder (it has no config.json)")
    model_type = AutoConfig.from_pretrained(model_path, local_files_only=True).model_type
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise ValueError(
            f"{model_path} holds a {model_type!r} model, which is not a vision-language (image-text-to-text) "
            "model; give the folder of a chat VLM such as Qwen2-VL or LLaVA"
        )
    try:
        processor = AutoProcessor.from_pretrained(model_path, local_files_only=True)
    except Exception as exc:  # transformers raises many types for an incomplete or unsupported folder
        hint = "" if is_torchvision_available() else (
            " (some families, e.g. Qwen2-VL and Qwen2.5-VL, need torchvision for their video processor)"
        )
        raise RuntimeError(f"cannot load the processor of {model_path}: {type(exc).__name__}: {exc}{hint}") from None
    if not hasattr(processor, "image_processor") or not getattr(processor, "chat_template", None):
        raise ValueError(f"{model_path} has no image processor with a chat template, so it cannot review images")
    return processor


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def fit_within(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink (never enlarge) so the longest side is at most ``max_side``, keeping the aspect ratio."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

