"""The DCMIF inference network: REN → FiLM → RIN → RFN gate → TailNet, all in the coefficient domain.

Per frame: S̃_vis = REN(Y); S_fm = γ ⊙ S̃_vis + β; S_pir = RIN(S_fm); (W_vis, W_pir) = softmax(RFN(S̃_vis, S_pir));
S_f = W_vis ⊙ S̃_vis + W_pir ⊙ S_pir; I_f = D ⋆ S_f, I_pir = D ⋆ S_pir.
γ, β are graph inputs: identity (γ = 1, β = 0) gives the first-pass pseudo-IR that the language-model prior
reviews; the prior's γ, β then modulate every following frame (DCMIF Alg. 2, with the first RIN pass run only
when the prior refreshes instead of on every frame).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dcmif_ros.models.blocks import CoefficientBackbone, SmoothExit
from dcmif_ros.models.config import DCMIFConfig
from dcmif_ros.models.dictionary import normalize_atoms, solver_filter, synthesize
from dcmif_ros.models.jsrl import JSRL, REN
from dcmif_ros.models.semantic import SemanticBranch


class RIN(nn.Module):
    """Representation inference: visible coefficients → pseudo-infrared coefficients (a residual, or a gain and an
    offset field with ``config.rin_gain``; either starts as the identity), guided by the semantic branch F_sem
    of the visible luminance when the config has one, and warmed where its objectness map finds people,
    bicycles and cars when the branch has that head."""

    def __init__(self, config: DCMIFConfig):
        super().__init__()
        self.gain = config.rin_gain
        if self.gain and not config.rin.smooth_exit:
            raise ValueError("rin_gain needs rin.smooth_exit: the gain is squashed between its projection and upsampling")
        outputs = 2 * config.atoms if self.gain else config.atoms
        self.backbone = CoefficientBackbone(config.atoms, outputs, config.rin)
        self.semantic = (None if config.semantic is None else
                         SemanticBranch(config.semantic, config.rin.width, config.rin.entry_stride))
        self.warmth = None
        if self.semantic is not None and self.semantic.objectness is not None:
            if not self.gain:
                raise ValueError("the semantic branch's objectness warmth needs rin_gain (it enters the offset field)")
            self.warmth = nn.Parameter(torch.zeros(config.atoms))  # the coefficients of a warm object, per atom

    def guide(self, luminance: torch.Tensor) -> torch.Tensor | None:
        return None if self.semantic is None else self.semantic(luminance)

    def guided(self, coefficients: torch.Tensor, guide: torch.Tensor | None) -> torch.Tensor:
        if not self.gain:
            return coefficients + self.backbone(coefficients, guide=guide)
        exit = self.backbone.exit  # a SmoothExit: the gain is squashed at low resolution, then both upsampled
        gain, offset = exit.project(self.backbone.trunk(coefficients, guide=guide)).chunk(2, dim=1)
        if self.warmth is not None and guide is not None:  # object warmth: objectness map × a learned atom vector
            offset = offset + self.warmth.reshape(1, -1, 1, 1) * torch.sigmoid(self.semantic.objectness(guide))
        # apart, not as one tensor: a full-resolution concatenation and split cost more than the upsampling
        return exit.upsample(2.0 * torch.sigmoid(gain)) * coefficients + exit.upsample(offset)

    def forward(self, coefficients: torch.Tensor, luminance: torch.Tensor) -> torch.Tensor:
        return self.guided(coefficients, self.guide(luminance))


class FiLMHeads(nn.Module):
    """Φγ, Φβ: text features → per-atom (γ, β), initialised to the identity (γ = 1, β = 0)."""

    def __init__(self, feature_dim: int, atoms: int):
        super().__init__()
        self.gamma = nn.Linear(feature_dim, atoms)
        self.beta = nn.Linear(feature_dim, atoms)
        for layer in (self.gamma, self.beta):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 1.0 + self.gamma(features), self.beta(features)


class RFN(nn.Module):
    """Representation fusion: the per-atom, per-pixel gate W_pir (and W_vis = 1 − W_pir).

    A softmax over two sources depends only on the difference of their logits, so the network predicts that
    difference and the gate is its sigmoid: the same family as the paper's softmax, at half the output cost
    and without a softmax over a non-final axis (slow in onnxruntime). With a smooth exit the sigmoid and the
    gate map (the mean over atoms) are taken at low resolution and upsampled: the same smooth gate at
    1/entry_stride² of their full-resolution cost.
    """

    def __init__(self, config: DCMIFConfig):
        super().__init__()
        self.backbone = CoefficientBackbone(2 * config.atoms, config.atoms, config.rfn)

    def forward(self, vis: torch.Tensor, pseudo_ir: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """W_pir (N, B, H, W) and its mean over atoms, the gate map (N, 1, H, W)."""
        exit = self.backbone.exit
        if not isinstance(exit, SmoothExit):
            weight = torch.sigmoid(self.backbone(vis, pseudo_ir))
            return weight, weight.mean(1, keepdim=True)
        weight = torch.sigmoid(exit.project(self.backbone.trunk(vis, pseudo_ir)))
        return exit.upsample(weight), exit.upsample(weight.mean(1, keepdim=True))


@dataclass
class DCMIFOutput:
    fused: torch.Tensor
    pseudo_ir: torch.Tensor
    gate: torch.Tensor
    coef_vis: torch.Tensor
    coef_pseudo_ir: torch.Tensor


class DCMIFNet(nn.Module):
    """The per-frame inference graph. Input Y in [0,1], (N,1,H,W) with H, W multiples of ``pad_multiple``."""

    def __init__(self, config: DCMIFConfig):
        super().__init__()
        self.config = config
        atoms, k = config.atoms, config.kernel_size
        self.ren = REN(config)
        self.rin = RIN(config)
        self.rfn = RFN(config)
        self.register_buffer("dictionary", torch.zeros(1, atoms, k, k))

    def infer(self, luminance: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> DCMIFOutput:
        coef_vis = self.ren(luminance)
        modulated = gamma.reshape(-1, self.config.atoms, 1, 1) * coef_vis + beta.reshape(-1, self.config.atoms, 1, 1)
        coef_pir = self.rin(modulated, luminance)
        weight_pir, gate = self.rfn(coef_vis, coef_pir)
        coef_fused = coef_vis + weight_pir * (coef_pir - coef_vis)  # W_vis ⊙ S_vis + W_pir ⊙ S_pir
        return DCMIFOutput(
            fused=synthesize(coef_fused, self.dictionary),
            pseudo_ir=synthesize(coef_pir, self.dictionary),
            gate=gate,
            coef_vis=coef_vis,
            coef_pseudo_ir=coef_pir,
        )

    def forward(self, luminance: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor):
        """ONNX signature: (Y, γ, β) → (fused Y, pseudo-IR, gate)."""
        out = self.infer(luminance, gamma, beta)
        return out.fused, out.pseudo_ir, out.gate

    def identity_film(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.dictionary.device
        return torch.ones(batch, self.config.atoms, device=device), torch.zeros(batch, self.config.atoms, device=device)


def ren_from_jsrl(jsrl: JSRL, modality: str = "vis") -> REN:
    """Freeze one JSRL branch into an exportable REN: the FFT solve becomes the spatial filter of
    ``solver_kernel_size``; ``ren.solver_truncation`` records the filter energy the truncation drops."""
    config = jsrl.config
    ren = REN(config, modality)
    ren.head.load_state_dict(jsrl.heads[modality].state_dict())
    ren.coenet.load_state_dict(jsrl.coenets[modality].state_dict())
    with torch.no_grad():
        hyper = jsrl.hypnets[0](jsrl.sigma)
        d0 = jsrl.dictionary_zero()
        kernel, tail = solver_filter(d0, float(hyper[f"csb_{modality}"]), config.solver_kernel_size)
        ren.dictionary.copy_(d0)
        ren.solver_kernel.copy_(kernel)
        ren.prox_weight.copy_(hyper[f"prox_{modality}"])
        ren.solver_truncation.fill_(tail)
    for p in ren.parameters():
        p.requires_grad_(False)
    return ren


def dcmif_from_jsrl(jsrl: JSRL, dictionary: torch.Tensor, config: DCMIFConfig | None = None) -> DCMIFNet:
    """A fresh DCMIFNet whose REN and shared dictionary come from a trained JSRL (stage 2 starts here); RIN and
    RFN take their shapes from ``config`` (default: the JSRL's own), checked to fit that JSRL."""
    net = DCMIFNet(jsrl.config if config is None else config.with_encoder_of(jsrl.config))
    net.ren = ren_from_jsrl(jsrl)
    with torch.no_grad():
        net.dictionary.copy_(normalize_atoms(dictionary))
    return net
