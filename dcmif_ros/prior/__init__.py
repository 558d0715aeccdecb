"""FiLM priors for DCMIF: review a (visible, first-pass pseudo-IR) pair in text, encode it, refresh it live.

Backends (``make_prior_encoder``): ``embedded`` (measured description + MiniLM, offline), ``vlm:PATH`` (a
local vision-language model's critique + MiniLM) and ``none`` (identity FiLM). ``PriorRefresher`` keeps
the γ, β in force up to date off the image path. Pure Python, no ROS; torch loads only with a backend.
"""
from dcmif_ros.prior.base import IncompatiblePriorEncoder, PriorEncoder, PriorText, check_compatible
from dcmif_ros.prior.describe import PairDescription, PairStatistics, describe_pair
from dcmif_ros.prior.embedded import EmbeddedPriorEncoder
from dcmif_ros.prior.factory import (
    PRIOR_SPEC_HELP, PriorSpec, add_prior_argument, make_prior_encoder, parse_prior_spec,
)
from dcmif_ros.prior.film_prior import Prior
from dcmif_ros.prior.null import NullPriorEncoder
from dcmif_ros.prior.prompt import SYNTHETIC_INFRARED_TEXT, VISIBLE_IMAGE_TEXT
from dcmif_ros.prior.refresher import ComputePrior, PriorRefresher, RefreshConfig, RefreshStats
from dcmif_ros.prior.text_encoder import MINILM_FEATURE_DIM, SentenceEncoder
from dcmif_ros.prior.vlm import VisionLanguageConfig, VisionLanguagePriorEncoder

__all__ = [
    "ComputePrior", "EmbeddedPriorEncoder", "IncompatiblePriorEncoder", "MINILM_FEATURE_DIM", "NullPriorEncoder",
    "PRIOR_SPEC_HELP", "PairDescription", "PairStatistics", "Prior", "PriorEncoder", "PriorRefresher",
    "PriorSpec", "PriorText", "RefreshConfig", "RefreshStats", "SYNTHETIC_INFRARED_TEXT", "SentenceEncoder",
    "VISIBLE_IMAGE_TEXT", "VisionLanguageConfig", "VisionLanguagePriorEncoder", "add_prior_argument",
    "check_compatible", "describe_pair", "make_prior_encoder", "parse_prior_spec",
]
