"""``lrcfuse``: train LRCFuse with the paper's multi-level loss (pixel, shallow, middle, deep Gram, Sobel).

L = γ1·L_pixel + γ2·L_shallow + L_middle + γ4·L_deep + γ5·L_sobel with, for the fused image F and a frozen
loss network φ (levels 1–4, see ``dcmif_ros.models.feature_network``):

- L_pixel = ‖F − VI‖² (mean): keeps the visible intensities;
- L_shallow = ‖φ1(F) − φ1(VI)‖²: visible edges and textures;
- L_middle = Σ_{k=2,3} w_k ‖φk(F) − (w_ir·φk(IR) + w_vi·φk(VI))‖²: the infrared content, w_vi < w_ir;
- L_deep = ‖G(φ4(F)) − G(φ4(IR))‖², G the Gram matrix of the mean-removed features normalised by C·H·W (the
  paper: "a covariance matrix with no whitening"): infrared semantics;
- L_sobel = ‖∇F − max(∇VI, ∇IR)‖₁ with ∇ = |Gx| + |Gy|: the sharper edge of either source.

Pixel and Sobel terms are measured on 0–255 grey values and φ sees 0–255 inputs (LRRNet's convention, which
the paper follows), so the paper's weights keep their balance as far as the loss network allows.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dcmif_ros.inference.dual import ship_dual_model
from dcmif_ros.models.feature_network import PIXEL_SCALE, make_feature_network
from dcmif_ros.models.lrcfuse import LRCFuse, LRCFuseConfig, get_config
from dcmif_ros.training.data import ImagePair
from dcmif_ros.training.fusion_validation import fusion_validation
from dcmif_ros.training.loop import TrainConfig
from dcmif_ros.training.losses import max_gradient_l1, with_overrides
from dcmif_ros.training.stages import load_stage_output

DEFAULT_FEATURE_NETWORK = "random"


@dataclass(frozen=True)
class LRCFuseLossWeights:
    """Paper §4.1: γ1 = 10, γ2 = 1.9, middle levels 0.01 and 0.5 with w_ir = 1.0, w_vi = 0.5, γ4 = 700, γ5 = 1000.

    The extracted paper text lost the symbols next to some numbers; where it did, the assignment follows
    LRRNet (the paper's stated basis): 0.01/0.5 weigh the relu2_2/relu3_3 levels of L_middle, and of the pair
    tuned in Table 1, 1.9 is the shallow weight and 1.0 the infrared weight (listed in that order).
    """

    pixel: float = 10.0
    shallow: float = 1.9
    middle_levels: tuple[float, float] = (0.01, 0.5)
    middle_infrared: float = 1.0
    middle_visible: float = 0.5
    deep: float = 700.0
    sobel: float = 1000.0


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """F̄ F̄ᵀ / (C·H·W) per image, F̄ each channel minus its spatial mean: channel co-variations, independent of
    the image size and of each channel's mean.

    Centred, as the paper defines it (a covariance, not whitened). Uncentred, the means dominate: with the
    offline loss networks the term then pulls the fused image's brightness towards the dark infrared (measured
    in docs/dual_modal.md: MSRS SD 33 instead of 48).
    """
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    flat = flat - flat.mean(dim=2, keepdim=True)
    return flat @ flat.transpose(1, 2) / (c * h * w)


class MultiLevelLoss(torch.nn.Module):
    """The five LRCFuse terms for (fused, visible, infrared), each on [0, 1] images (N,1,H,W)."""

    def __init__(self, feature_network: torch.nn.Module, weights: LRCFuseLossWeights = LRCFuseLossWeights()):
        super().__init__()
        self.features, self.weights = feature_network, weights

    def forward(self, fused: torch.Tensor, visible: torch.Tensor, infrared: torch.Tensor) -> dict[str, torch.Tensor]:
        w = self.weights
        with torch.no_grad():
            phi_vis, phi_ir = self.features(visible), self.features(infrared)
        phi_fused = self.features(fused)
        middle = sum(level_weight * F.mse_loss(phi_fused[k], w.middle_infrared * phi_ir[k] + w.middle_visible * phi_vis[k])
                     for k, level_weight in zip((1, 2), w.middle_levels))
        terms = {
            "pixel": F.mse_loss(PIXEL_SCALE * fused, PIXEL_SCALE * visible),
            "shallow": F.mse_loss(phi_fused[0], phi_vis[0]),
            "middle": middle,
            "deep": F.mse_loss(gram_matrix(phi_fused[3]), gram_matrix(phi_ir[3])),
            "sobel": PIXEL_SCALE * max_gradient_l1(fused, visible, infrared),
        }
        total = (w.pixel * terms["pixel"] + w.shallow * terms["shallow"] + terms["middle"]
                 + w.deep * terms["deep"] + w.sobel * terms["sobel"])
        return {"total": total, **terms}


class LRCFuseStage:
    """A ``training.loop`` stage; ``config.extra["feature_network"]`` is the loss network spec."""

    name = "lrcfuse"

    def __init__(self, config: TrainConfig, val_pairs: list[ImagePair]):
        self.config, self.val_pairs = config, val_pairs
        self.model_config: LRCFuseConfig = get_config(config.model)
        self.model = LRCFuse(self.model_config).to(config.device)
        self.feature_network = config.extra.get("feature_network", DEFAULT_FEATURE_NETWORK)
        weights = with_overrides(LRCFuseLossWeights(), config.extra.get("loss_weights"))
        self.loss = MultiLevelLoss(make_feature_network(self.feature_network), weights).to(config.device)

    def trainable(self):
        return list(self.model.parameters())

    def state(self) -> dict:
        return {"model": self.model.state_dict()}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])

    def losses(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        fused = self.model(batch["vis"], batch["ir"])
        return self.loss(fused, batch["vis"], batch["ir"])

    def validate(self) -> dict[str, float]:
        self.model.eval()
        scores = fusion_validation(self.model, self.val_pairs[: self.config.val_images],
                                   self.model_config.pad_multiple, self.config.device)
        self.model.train()
        return scores

    def finalize(self) -> dict:
        return {"stage": self.name, "model_config": self.model_config.to_dict(), "model": self.model.state_dict(),
                "feature_network": self.feature_network, "loss_weights": asdict(self.loss.weights),
                "validation": self.validate()}


def ship_lrcfuse(out: str | Path, destination: str | Path, metadata: dict) -> Path:
    """The trained ``<out>/lrcfuse/final.pt`` as a shipped dual-modal checkpoint + ONNX + manifest."""
    output = load_stage_output(out, LRCFuseStage.name)
    model = LRCFuse(LRCFuseConfig.from_dict(output["model_config"]))
    model.load_state_dict(output["model"])
    metadata = {**metadata, "feature_network": output["feature_network"], "loss_weights": output["loss_weights"],
                "validation": output["validation"]}
    return ship_dual_model(model.eval(), destination, metadata)
