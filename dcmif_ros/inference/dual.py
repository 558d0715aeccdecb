"""Dual-modal fusion (visible Y + a real thermal image): DCMIF with real infrared, and how dual models ship.

DCMIF's dictionary D is shared by both bands (JSRL learns it on visible and infrared together), so a real
infrared image can be encoded into the same coefficient space by JSRL's infrared branch and take the place
of the pseudo-IR: S_vis = REN_vis(Y), S_ir = REN_ir(IR), W_ir = RFN(S_vis, S_ir), fused = D ⋆ (S_vis + W_ir ⊙ (S_ir − S_vis)).
The RFN gate is AFRI's as trained (on pseudo-IR coefficients) when the visible model fuses by the paper's gate;
a warmth-fusion model's gate reads RIN, which this model has not, so its RFN starts from fresh weights. The
``dual`` training stage fine-tunes it on real infrared coefficients with AFRI's losses (``--steps 0`` ships AFRI's
paper gate unchanged, or an untrained one from a warmth-fusion model: train it then).

Dual models (this one and ``models.lrcfuse.LRCFuse``) ship as one checkpoint (``CHECKPOINT_FORMAT``) plus
its ONNX graph and manifest (``export.export_dual``), which ``FusionEngine.run_dual`` runs.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from dcmif_ros.inference.export import export_dual
from dcmif_ros.models.config import FUSION_GATE, DCMIFConfig, get_config
from dcmif_ros.models.dcmif import RFN, DCMIFNet, ren_from_jsrl
from dcmif_ros.models.dictionary import synthesize
from dcmif_ros.models.jsrl import JSRL, REN
from dcmif_ros.models.lrcfuse import LRCFuse, LRCFuseConfig
from dcmif_ros.training.loop import TrainConfig
from dcmif_ros.training.losses import with_overrides
from dcmif_ros.training.fusion_validation import fusion_validation
from dcmif_ros.training.stages import AFRIWeights, afri_losses, jsrl_from_output, load_stage_output

CHECKPOINT_FORMAT = "dcmif-dual-checkpoint/1"
DUAL_DCMIF = "dcmif-dual"
LRCFUSE = "lrcfuse"


class DualDCMIF(nn.Module):
    """(Y, IR) in [0, 1], H and W multiples of ``config.pad_multiple`` → (fused Y, gate = mean W_ir over atoms)."""

    def __init__(self, config: DCMIFConfig):
        super().__init__()
        self.config = config
        self.ren_vis = REN(config, "vis")
        self.ren_ir = REN(config, "ir")
        self.rfn = RFN(config)
        self.register_buffer("dictionary", torch.zeros(1, config.atoms, config.kernel_size, config.kernel_size))

    def forward(self, luminance: torch.Tensor, infrared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coef_vis, coef_ir = self.ren_vis(luminance), self.ren_ir(infrared)
        weight_ir, gate = self.rfn(coef_vis, coef_ir)
        fused = synthesize(coef_vis + weight_ir * (coef_ir - coef_vis), self.dictionary)
        return fused, gate


def dual_from_dcmif(net: DCMIFNet, jsrl: JSRL) -> DualDCMIF:
    """The visible encoder, gate (the paper's RFN, else a fresh one) and dictionary of a trained DCMIF net, with
    JSRL's infrared branch added."""
    dual = DualDCMIF(replace(net.config, fusion=FUSION_GATE))  # the paper's gate, whatever the visible model's
    dual.ren_vis.load_state_dict(net.ren.state_dict())
    dual.ren_ir.load_state_dict(ren_from_jsrl(jsrl, "ir").state_dict())
    if isinstance(net.rfn, RFN):  # a warmth-fusion gate reads RIN's features, which the dual model has not
        dual.rfn.load_state_dict(net.rfn.state_dict())
    with torch.no_grad():
        dual.dictionary.copy_(net.dictionary)
    for encoder in (dual.ren_vis, dual.ren_ir):
        encoder.requires_grad_(False)
    return dual.eval()


# ---------------------------------------------------------------------------------------------------------
# Checkpoints and shipping

ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {
    LRCFUSE: (LRCFuse, LRCFuseConfig),
    DUAL_DCMIF: (DualDCMIF, DCMIFConfig),
}


def architecture_of(model: nn.Module) -> str:
    for name, (cls, _) in ARCHITECTURES.items():
        if isinstance(model, cls):
            return name
    raise ValueError(f"{type(model).__name__} is not a dual-modal architecture ({', '.join(ARCHITECTURES)})")


def save_dual_checkpoint(path: str | Path, model: nn.Module, metadata: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "architecture": architecture_of(model), "config": model.config.to_dict(),
                "model": model.state_dict(), "metadata": metadata}, tmp)
    tmp.replace(path)
    return path


def load_dual_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """(model in eval mode, metadata); errors name the file and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dual-modal checkpoint not found: {path}")
    data = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected a {CHECKPOINT_FORMAT} checkpoint, found {found!r}")
    if data["architecture"] not in ARCHITECTURES:
        raise ValueError(f"{path}: unknown architecture {data['architecture']!r}")
    cls, config_cls = ARCHITECTURES[data["architecture"]]
    model = cls(config_cls.from_dict(data["config"]))
    model.load_state_dict(data["model"])
    return model.eval(), data.get("metadata", {})


def ship_dual_model(model: nn.Module, destination: str | Path, metadata: dict) -> Path:
    """``destination`` (.pt) plus ``<stem>.onnx`` and ``<stem>.json`` beside it; returns the ONNX path."""
    destination = save_dual_checkpoint(destination, model, metadata)
    return export_dual(model, destination.parent, destination.stem, architecture_of(model), source=destination,
                       metadata=metadata)


# ---------------------------------------------------------------------------------------------------------
# The ``dual`` training stage


class DualDCMIFStage:
    """Fine-tunes the RFN gate on (REN_vis(Y), REN_ir(IR)) against AFRI's max-intensity/max-gradient targets."""

    name = "dual"

    def __init__(self, config: TrainConfig, val_pairs):
        self.config, self.val_pairs = config, val_pairs
        jsrl, _ = jsrl_from_output(load_stage_output(config.out, "jsrl"))
        afri = load_stage_output(config.out, "afri")
        net = DCMIFNet(DCMIFConfig.from_dict(afri["model_config"]))
        # the dual model fuses with an RFN of its own, whatever the visible model's fusion
        get_config(config.model).require_same(net.config, f"{config.out}/afri/final.pt", ignore=frozenset({"fusion"}))
        net.load_state_dict(afri["net"])
        self.model = dual_from_dcmif(net, jsrl).to(config.device)
        self.model.rfn.train()
        self.weights = with_overrides(AFRIWeights(), config.extra.get("loss_weights"))

    def trainable(self):
        return list(self.model.rfn.parameters())

    def state(self) -> dict:
        return {"rfn": self.model.rfn.state_dict()}

    def load_state(self, state: dict) -> None:
        self.model.rfn.load_state_dict(state["rfn"])

    def losses(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        vis, ir = batch["vis"], batch["ir"]
        fused, gate = self.model(vis, ir)
        return afri_losses(fused, vis, ir, gate, self.weights)

    def validate(self) -> dict[str, float]:
        self.model.rfn.eval()
        scores = fusion_validation(lambda vis, ir: self.model(vis, ir)[0], self.val_pairs[: self.config.val_images],
                                   self.model.config.pad_multiple, self.config.device)
        self.model.rfn.train()
        return scores

    def finalize(self) -> dict:
        return {"stage": self.name, "model_config": self.model.config.to_dict(), "model": self.model.state_dict(),
                "validation": self.validate()}


def ship_dual_dcmif(out: str | Path, destination: str | Path, metadata: dict) -> Path:
    output = load_stage_output(out, DualDCMIFStage.name)
    model = DualDCMIF(DCMIFConfig.from_dict(output["model_config"]))
    model.load_state_dict(output["model"])
    return ship_dual_model(model.eval(), destination, metadata)
