"""One way to choose a prior backend, shared by the CLI's ``--prior`` and the ROS node's ``prior`` parameter.

Specs: ``embedded`` (default, offline), ``none`` (identity FiLM, the paper's no-LLM ablation) and
``vlm:PATH`` (a local vision-language model folder). Backends are imported only when built, so parsing
arguments stays fast.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from dcmif_ros.prior.base import PriorEncoder

EMBEDDED_SPEC = "embedded"
NONE_SPEC = "none"
VLM_KIND = "vlm"
VLM_SPEC_PREFIX = f"{VLM_KIND}:"
DEFAULT_PRIOR_SPEC = EMBEDDED_SPEC
PRIOR_SPEC_HELP = (
    "where the FiLM prior comes from: 'embedded' (measured description of the pair, offline, default), "
    "'none' (identity FiLM, no prior) or 'vlm:PATH' (critique by the local vision-language model in PATH, "
    "e.g. a Qwen2-VL folder)"
)


@dataclass(frozen=True)
class PriorSpec:
    """A parsed prior spec: its kind and, for ``vlm``, the model folder."""

    kind: str
    model_path: Path | None = None


def parse_prior_spec(spec: str) -> PriorSpec:
    text = spec.strip()
    if text in (EMBEDDED_SPEC, NONE_SPEC):
        return PriorSpec(text)
    if text.startswith(VLM_SPEC_PREFIX) and text[len(VLM_SPEC_PREFIX):].strip():
        return PriorSpec(VLM_KIND, Path(text[len(VLM_SPEC_PREFIX):].strip()).expanduser())
    raise ValueError(f"unknown prior {spec!r}: expected 'embedded', 'none' or 'vlm:PATH'")


def make_prior_encoder(spec: str) -> PriorEncoder:
    """Build the backend a spec names (loads models: seconds for 'embedded', longer for 'vlm:PATH')."""
    parsed = parse_prior_spec(spec)
    if parsed.kind == EMBEDDED_SPEC:
        from dcmif_ros.prior.embedded import EmbeddedPriorEncoder
        return EmbeddedPriorEncoder()
    if parsed.kind == NONE_SPEC:
        from dcmif_ros.prior.null import NullPriorEncoder
        return NullPriorEncoder()
    from dcmif_ros.prior.vlm import VisionLanguagePriorEncoder
    return VisionLanguagePriorEncoder(parsed.model_path)


def add_prior_argument(parser: argparse.ArgumentParser, default: str = DEFAULT_PRIOR_SPEC) -> None:
    """Add ``--prior SPEC`` (validated at parse time, kept as the string for ``make_prior_encoder``)."""
    parser.add_argument("--prior", type=checked_prior_spec, default=default, metavar="SPEC", help=PRIOR_SPEC_HELP)


def checked_prior_spec(spec: str) -> str:
    try:
        parse_prior_spec(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec
