"""The shipped DCMIF checkpoint: network weights, FiLM heads, and what they were trained with.

One file (``models/dcmif_<size>.pt``) is the source of the ONNX export and of PyTorch inference. Loading
checks the format and names the file and what was expected when something does not match.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dcmif_ros.models.config import DCMIFConfig
from dcmif_ros.models.dcmif import DCMIFNet, FiLMHeads

FORMAT = "dcmif-checkpoint/1"


@dataclass
class DCMIFBundle:
    """A loaded checkpoint: the network, its FiLM heads and the prior encoder they expect."""

    net: DCMIFNet
    film: FiLMHeads
    prior_encoder_id: str
    prior_feature_dim: int
    metadata: dict


def save_bundle(path: str | Path, bundle: DCMIFBundle) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({
        "format": FORMAT,
        "config": bundle.net.config.to_dict(),
        "net": bundle.net.state_dict(),
        "film": bundle.film.state_dict(),
        "prior_encoder_id": bundle.prior_encoder_id,
        "prior_feature_dim": bundle.prior_feature_dim,
        "metadata": bundle.metadata,
    }, tmp)
    tmp.replace(path)


def load_bundle(path: str | Path, map_location: str = "cpu") -> DCMIFBundle:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DCMIF checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise ValueError(f"{path} is not a readable DCMIF checkpoint ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected a {FORMAT} checkpoint, found {found!r}")
    config = DCMIFConfig.from_dict(data["config"])
    net = DCMIFNet(config)
    film = FiLMHeads(data["prior_feature_dim"], config.atoms)
    try:
        net.load_state_dict(data["net"])
        film.load_state_dict(data["film"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the {config.name!r} configuration: {exc}") from None
    net.eval()
    film.eval()
    return DCMIFBundle(net, film, data["prior_encoder_id"], data["prior_feature_dim"], data.get("metadata", {}))
