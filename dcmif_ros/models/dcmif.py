"""The DCMIF inference network: REN → FiLM → RIN → RFN gate → TailNet, in the coefficient domain.

Per frame: S̃_vis = REN(Y); S_fm = γ ⊙ S̃_vis + β; S_pir = RIN(S_fm); (W_vis, W_pir) = softmax(RFN(S̃_vis, S_pir));
S_f = W_vis ⊙ S̃_vis + W_pir ⊙ S_pir; I_f = D ⋆ S_f, I_pir = D ⋆ S_pir. With warmth fusion (``DCMIFConfig.fusion``)
RIN writes S_pir = G ⊙ S_fm + O and the gate admits its offset field: S_f = S̃_vis + W ⊙ O, and the fused
image is the visible one plus the positive part of that warmth, kept off what is already white:
I_f = Y + max(D ⋆ up(R ⊙ W ⊙ O), 0) (``DCMIFNet.warmth_fusion``).
γ, β are graph inputs: identity (γ = 1, β = 0) gives the first-pass pseudo-IR that the language-model prior
reviews; the prior's γ, β then modulate every following frame (DCMIF Alg. 2, with the first RIN pass run only
when the prior refreshes instead of on every frame).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from dcmif_ros.models.blocks import NEAR_ZERO_INIT_STD, CoefficientBackbone, SmoothExit, blocks
from dcmif_ros.models.config import FUSION_WARMTH, DCMIFConfig
from dcmif_ros.models.dictionary import (field_synthesis_weight, normalize_atoms, solver_filter, synthesize,
                                         synthesize_field, upsample_field)
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

    def features(self, coefficients: torch.Tensor, guide: torch.Tensor | None) -> torch.Tensor:
        """The trunk's features at the entry resolution, which the fields (and warmth fusion's gate) read."""
        return self.backbone.trunk(coefficients, guide=guide)

    def fields(self, features: torch.Tensor, guide: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The gain G ∈ (0, 2) and offset O fields at the entry resolution (``rin_gain`` models)."""
        gain, offset = self.backbone.exit.project(features).chunk(2, dim=1)  # squashed at low resolution
        if self.warmth is not None and guide is not None:  # object warmth: objectness map × a learned atom vector
            offset = offset + self.warmth.reshape(1, -1, 1, 1) * torch.sigmoid(self.semantic.objectness(guide))
        return 2.0 * torch.sigmoid(gain), offset

    def apply_fields(self, coefficients: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """S_pir = up(G) ⊙ S_fm + up(O), the two upsampled apart: a full-resolution concatenation and split
        cost more than the upsampling."""
        return upsample_field(gain, self.stride) * coefficients + upsample_field(offset, self.stride)

    @property
    def stride(self) -> int:
        """Full resolution over the fields' resolution."""
        return self.backbone.exit.stride

    def guided(self, coefficients: torch.Tensor, guide: torch.Tensor | None) -> torch.Tensor:
        if not self.gain:
            return coefficients + self.backbone(coefficients, guide=guide)
        return self.apply_fields(coefficients, *self.fields(self.features(coefficients, guide), guide))

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


GATE_INITIAL_OPENING = 0.05
"""Where warmth fusion's gate starts, everywhere alike: nearly closed, so AFRI opens it where warmth is real. Opened
halfway, the whole offset field enters at once, the loss against the real infrared shuts every gate within about
200 steps, and the saturated sigmoid then learns to reopen slowly (docs/model.md, "Fourth round")."""


class OffsetGate(nn.Module):
    """RFN for warmth fusion: the per-atom gate W over RIN's offset field, read from the features RIN computed
    that field from (a 1×1 convolution at RIN's entry resolution). The paper's RFN re-encodes (S̃_vis, S_pir)
    from full resolution through a U-Net of its own; RIN's trunk already holds both, and reading it makes the
    gate nearly free (docs/model.md, "Warmth fusion": an eighth of the frame time)."""

    def __init__(self, config: DCMIFConfig):
        super().__init__()
        self.body = blocks(config.rin.width, 1, config.rin.expansion)
        self.project = nn.Conv2d(config.rin.width, config.atoms, 1)
        nn.init.normal_(self.project.weight, std=NEAR_ZERO_INIT_STD)
        nn.init.constant_(self.project.bias, math.log(GATE_INITIAL_OPENING / (1.0 - GATE_INITIAL_OPENING)))

    def forward(self, rin_features: torch.Tensor) -> torch.Tensor:
        """W (N, B, h, w) in (0, 1) at RIN's entry resolution."""
        return torch.sigmoid(self.project(self.body(rin_features)))


def make_rfn(config: DCMIFConfig) -> nn.Module:
    return OffsetGate(config) if config.fusion == FUSION_WARMTH else RFN(config)


WHITE_MARGIN = 0.4
"""Warmth fusion admits all of its warmth only where the brightest pixel near a cell is at least this far below
white, less closer to white, and none where it reaches white (``room_below_white``)."""
WARMTH_REACH_CELLS = 1
"""Cells on each side of a cell that its warmth reaches: the field is upsampled bilinearly (half a cell) and
synthesised with D's atoms (their radius, under a cell), so ``room_below_white`` looks that far for white."""


def room_below_white(luminance: torch.Tensor, stride: int) -> torch.Tensor:
    """Per cell of ``stride``×``stride`` pixels, the share of its warmth the fused image has room for, in [0, 1]:
    (1 − the brightest pixel within the warmth's reach) / ``WHITE_MARGIN``. Warmth added and clipped at white
    flattened the texture of bright sky and lamps, which cost the fused image more spatial frequency than the
    warmth added elsewhere gave (docs/model.md, "Fifth round")."""
    cells = F.max_pool2d(luminance, stride)  # each cell's brightest pixel, then the brightest cell within reach:
    reach = WARMTH_REACH_CELLS  # the same maximum as one window over the pixels, at a tenth of the comparisons
    brightest = F.max_pool2d(cells, 2 * reach + 1, 1, padding=reach)
    return ((1.0 - brightest) / WHITE_MARGIN).clamp(0.0, 1.0)


@dataclass
class DCMIFOutput:
    fused: torch.Tensor
    pseudo_ir: torch.Tensor
    gate: torch.Tensor
    coef_vis: torch.Tensor


class DCMIFNet(nn.Module):
    """The per-frame inference graph. Input Y in [0,1], (N,1,H,W) with H, W multiples of ``pad_multiple``."""

    def __init__(self, config: DCMIFConfig):
        super().__init__()
        self.config = config
        atoms, k = config.atoms, config.kernel_size
        self.ren = REN(config)
        self.rin = RIN(config)
        self.rfn = make_rfn(config)
        self.register_buffer("dictionary", torch.zeros(1, atoms, k, k))
        self._frozen_field_weight: torch.Tensor | None = None

    def field_weight(self) -> torch.Tensor:
        """``field_synthesis_weight`` of D at RIN's field stride (warmth fusion synthesises its field with it)."""
        if self._frozen_field_weight is not None:
            return self._frozen_field_weight
        return field_synthesis_weight(self.dictionary, self.rin.stride)

    @contextlib.contextmanager
    def frozen(self):
        """Hold ``field_weight`` as a constant while a graph is exported (see ``jsrl.REN.frozen``)."""
        with torch.no_grad():
            self._frozen_field_weight = self.field_weight().detach() if self.config.fusion == FUSION_WARMTH else None
        try:
            yield self
        finally:
            self._frozen_field_weight = None

    def infer(self, luminance: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
              linear_warmth: bool = False) -> DCMIFOutput:
        """``linear_warmth``: warmth fusion's training rule (``warmth_fusion``); the paper's gate ignores it."""
        coef_vis = self.ren(luminance)
        modulated = gamma.reshape(-1, self.config.atoms, 1, 1) * coef_vis + beta.reshape(-1, self.config.atoms, 1, 1)
        if self.config.fusion == FUSION_WARMTH:
            return self.warmth_fusion(luminance, coef_vis, modulated, linear_warmth)
        coef_pir = self.rin(modulated, luminance)
        weight_pir, gate = self.rfn(coef_vis, coef_pir)
        coef_fused = coef_vis + weight_pir * (coef_pir - coef_vis)  # W_vis ⊙ S_vis + W_pir ⊙ S_pir
        return DCMIFOutput(
            fused=synthesize(coef_fused, self.dictionary),
            pseudo_ir=synthesize(coef_pir, self.dictionary),
            gate=gate,
            coef_vis=coef_vis,
        )

    def warmth_fusion(self, luminance: torch.Tensor, coef_vis: torch.Tensor, modulated: torch.Tensor,
                      linear: bool = False) -> DCMIFOutput:
        """S_f = S̃_vis + up(W ⊙ O): every visible coefficient kept, RIN's warmth admitted where the gate opens.
        D is linear, so each smooth field is synthesised at its own resolution (``synthesize_field``):
        I_pir = D ⋆ (up(G) ⊙ S_fm) + D ⋆ up(O), which is D ⋆ S_pir but for the atom-radius rim (two
        full-resolution upsamplings and sums fewer per frame), and I_f = Y + max(D ⋆ up(R ⊙ W ⊙ O), 0).

        I_f departs from D ⋆ S_f three ways, each measured (docs/model.md, "Fifth round"): Y itself stands for
        D ⋆ S̃_vis (which reproduces Y to a few thousandths of an 8-bit grey level, and that remainder alone cost
        the fused image's spatial frequency 0.02 %; Y also saves a synthesis); the warmth only warms (a thermal
        camera adds what is warm: the negative part cost MI with the real infrared and bought no object
        contrast); and R = ``room_below_white`` keeps it off what is already white. ``linear`` gives the rule the
        gate is trained on, the paper's D ⋆ S_f = D ⋆ S̃_vis + D ⋆ up(W ⊙ O): AFRI learns where warmth agrees with
        the infrared from both signs of it, everywhere. (Trained on the rule above, the gate opened everywhere
        and warmed people less; trained with Y for D ⋆ S̃_vis, it shut.)"""
        guide = self.rin.guide(luminance)
        features = self.rin.features(modulated, guide)
        gain, offset = self.rin.fields(features, guide)
        weight = self.rfn(features)
        if not linear:
            weight = weight * room_below_white(luminance, self.rin.stride)
        field_weight = self.field_weight()
        warmth = synthesize_field(weight * offset, field_weight)
        kept = synthesize(upsample_field(gain, self.rin.stride) * modulated, self.dictionary)
        return DCMIFOutput(
            fused=synthesize(coef_vis, self.dictionary) + warmth if linear else luminance + F.relu(warmth),
            pseudo_ir=kept + synthesize_field(offset, field_weight),
            gate=upsample_field(weight.mean(1, keepdim=True), self.rin.stride),
            coef_vis=coef_vis,
        )

    def forward(self, luminance: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor):
        """ONNX signature: (Y, γ, β) → (fused Y, pseudo-IR, gate)."""
        out = self.infer(luminance, gamma, beta)
        return out.fused, out.pseudo_ir, out.gate

    def identity_film(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.dictionary.device
        return torch.ones(batch, self.config.atoms, device=device), torch.zeros(batch, self.config.atoms, device=device)


def with_fresh_gate(net: DCMIFNet, fusion: str) -> DCMIFNet:
    """``net`` fusing by ``fusion`` (a ``DCMIFConfig.fusion``), its RFN at initial weights: AFRI trains RFN from
    them (VGII never trains it, so a VGII checkpoint's RFN is whatever init that run drew)."""
    net.config = replace(net.config, fusion=fusion)
    net.rfn = make_rfn(net.config).to(net.dictionary.device)
    return net


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
