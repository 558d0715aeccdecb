"""Model sizes as dataclasses: one code path, two presets (``tiny`` for real-time CPU, ``base`` for GPUs)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

FUSION_GATE, FUSION_WARMTH = "gate", "warmth"
FUSIONS = (FUSION_GATE, FUSION_WARMTH)
SOLVE_BLOCK = 4  # REN's solve kernel runs on 4×4 pixel blocks (measured fastest of 1, 2 and 4 in onnxruntime)

# MobileNetV2's inverted-residual table: (expansion t, output channels c, repeats n, first stride s)
MOBILENET_V2_TABLE = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1))
MOBILENET_V2_STEM = 32


@dataclass(frozen=True)
class SemanticConfig:
    """Which MobileNetV2 layers the branch keeps and which it taps.

    ``taps`` are indices into MobileNetV2's ``features`` (0 is the stem); the branch runs up to the last one. The
    defaults tap the end of the stride-8 stage (32 channels: small objects) and of the stride-16 stage (96
    channels: what an object is), and leave out the stride-32 stages (most of MobileNetV2's FLOPs).
    """

    taps: tuple[int, ...] = (6, 13)
    # an objectness head on the guide (trained on the labelled boxes) whose map RIN adds as warmth: a learned
    # per-atom vector times the map, in the offset field (``DCMIFConfig.rin_gain``); False: no head
    objectness: bool = False

    @property
    def depth(self) -> int:
        return max(self.taps) + 1

    @property
    def deepest_stride(self) -> int:
        return layer_shapes()[max(self.taps)][1]


def layer_shapes() -> list[tuple[int, int]]:
    """(output channels, stride relative to the input) of every MobileNetV2 ``features`` layer."""
    shapes, stride = [(MOBILENET_V2_STEM, 2)], 2
    for _, channels, repeats, first_stride in MOBILENET_V2_TABLE:
        for repeat in range(repeats):
            stride *= first_stride if repeat == 0 else 1
            shapes.append((channels, stride))
    return shapes


@dataclass(frozen=True)
class BackboneConfig:
    """A low-resolution U-Net over coefficient maps (see ``blocks.CoefficientBackbone``).

    ``entry_stride`` is the pixel-unshuffle factor from full resolution to the first level; the heavy
    work runs there and below, which is what keeps the full-resolution cost small. ``blocks_per_level`` has an
    entry per level, each level at half the resolution and twice the width of the one above: coarse levels
    add receptive field (context) for few FLOPs. ``smooth_exit`` leaves through a low-resolution 1×1
    convolution and a bilinear upsampling instead of the transposed convolution: the transposed convolution
    writes an independent ``entry_stride``² patch per cell, which RIN's pseudo-IR and RFN's gate showed as a
    block grid (docs/model.md, "Semantics"); the smooth exit cannot.
    """

    width: int
    blocks_per_level: tuple[int, ...] = (1, 1)
    entry_stride: int = 4
    expansion: int = 2
    smooth_exit: bool = False

    @property
    def deepest_stride(self) -> int:
        """Downsampling factor of the coarsest level: inputs must divide by it."""
        return self.entry_stride * 2 ** (len(self.blocks_per_level) - 1)


@dataclass(frozen=True)
class DCMIFConfig:
    """Everything that fixes a DCMIF network's shapes.

    ``atoms`` and ``kernel_size`` define the shared dictionary D (B atoms of k×k).
    ``solver_kernel_size`` is the size of the spatial filter that replaces the FFT in the coefficient solve
    of the exported encoder (REN); the energy it truncates is measured and recorded when REN is built, and
    VGII/AFRI train on that exported form.
    ``solve_kernel_size`` crops REN's folded solve kernel k = h ∘ (δ − D∘H) (exactly 39×39 for a 31×31 h and
    5×5 atoms): 33 is the largest size whose ``SOLVE_BLOCK`` blocks still need only a 9×9 block kernel. The
    energy it drops is recorded in export manifests (3e-7 for the shipped model, whose VGII/AFRI were trained
    before the crop existed: its fused and pseudo-IR outputs move by at most 0.04 of a grey level).
    ``semantic`` adds the pretrained semantic branch F_sem to RIN (``models/semantic.py``); None is the paper's
    RIN alone (and what checkpoints written before the branch existed hold).
    ``rin_gain`` has RIN predict a per-atom gain field G and offset field O instead of a residual alone:
    S_pir = G ⊙ S_fm + O, G = 2σ(·) ∈ (0, 2) (1 at initialisation). With a smooth exit a residual can only
    add smooth fields, which leaves every visible edge in the pseudo-IR (an edge map); the gain removes
    the visible detail an infrared camera would not see, region by region, and the offset adds the warmth.
    It is FiLM's (γ, β) per atom made spatial. False is the paper's residual RIN.
    ``fusion`` is how RFN's gate W combines the coefficients: ``"gate"`` is the paper's
    S_f = (1 − W) ⊙ S̃_vis + W ⊙ S_pir, which replaces visible detail by the pseudo-IR's softer one wherever
    the gate opens; ``"warmth"`` is S_f = S̃_vis + W ⊙ O, RIN's offset field (the warmth it adds) admitted
    where the gate opens and every visible coefficient kept, with W read from RIN's own features
    (``dcmif.OffsetGate``; needs ``rin_gain``; docs/model.md, "Warmth fusion"), and its fused image is Y plus the
    positive part of D ⋆ up(W ⊙ O) where there is room below white (``DCMIFNet.warmth_fusion``). ``rfn`` shapes
    the paper's RFN, which the dual-modal model keeps.
    """

    name: str
    atoms: int
    kernel_size: int = 5
    unfolded_blocks: int = 1
    coenet: BackboneConfig = field(default_factory=lambda: BackboneConfig(width=32))
    rin: BackboneConfig = field(default_factory=lambda: BackboneConfig(width=32, blocks_per_level=(2, 2)))
    rfn: BackboneConfig = field(default_factory=lambda: BackboneConfig(width=24))
    dicnet_width: int = 32
    hypnet_width: int = 64
    hyper_sigma: float = 1.0
    min_data_weight: float = 0.5
    solver_kernel_size: int = 31
    solve_kernel_size: int = 33
    text_feature_dim: int = 384
    semantic: SemanticConfig | None = None
    rin_gain: bool = False
    fusion: str = FUSION_GATE

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        if self.fusion == FUSION_WARMTH and not self.rin_gain:
            raise ValueError("warmth fusion needs rin_gain: the gate admits RIN's offset field")

    @property
    def pad_multiple(self) -> int:
        """Inputs are padded to this multiple so every backbone level and REN's solve blocks divide evenly."""
        strides = [c.deepest_stride for c in (self.coenet, self.rin, self.rfn, self.semantic) if c is not None]
        return math.lcm(*strides, SOLVE_BLOCK)

    @property
    def solve_radius(self) -> int:
        """Radius of REN's folded solve kernel k (see ``jsrl.REN``)."""
        return self.solve_kernel_size // 2

    @property
    def min_side(self) -> int:
        """Smallest padded side: REN's solve pads its grid of ``SOLVE_BLOCK`` blocks circularly by ⌈r / block⌉
        blocks, which needs at least that many blocks."""
        needed = -(-self.solve_radius // SOLVE_BLOCK) * SOLVE_BLOCK
        return -(-needed // self.pad_multiple) * self.pad_multiple

    def to_dict(self) -> dict:
        return asdict(self)

    def differences(self, other: "DCMIFConfig", ignore: frozenset[str] = frozenset()) -> list[str]:
        """'field other's-value vs this-value' for each field outside ``ignore`` where the two differ."""
        mine = asdict(self)
        return [f"{key} {value!r} vs {mine[key]!r}" for key, value in asdict(other).items()
                if key not in ignore and value != mine[key]]

    def with_encoder_of(self, trained: "DCMIFConfig") -> "DCMIFConfig":
        """This config for the networks trained after JSRL (RIN, RFN), after checking that a JSRL trained with
        ``trained`` fits it: the fields JSRL's weights depend on must agree, the later networks' need not."""
        later_networks = frozenset({"name", "rin", "rfn", "text_feature_dim", "semantic", "rin_gain", "fusion"})
        differ = self.differences(trained, ignore=later_networks)
        if differ:
            raise ValueError(f"the JSRL stage was trained with another encoder than the {self.name} preset: "
                             + "; ".join(differ))
        return self

    def require_same(self, trained: "DCMIFConfig", source: str, ignore: frozenset[str] = frozenset()) -> None:
        """Raise unless ``trained`` (the config of the network in ``source``) is this one outside ``ignore``: the
        stages after VGII train on its networks as they are, so a --model naming another preset would be
        silently ignored."""
        differ = self.differences(trained, ignore)
        if differ:
            preset = PRESETS.get(trained.name)
            known = preset is not None and not preset.differences(trained, ignore)
            held, option = (f"a {trained.name}", f"--model {trained.name}") if known else (
                "another", "the --model it was trained with")
            raise ValueError(f"{source} holds {held} model, not the {self.name} preset: pass {option} "
                             f"({'; '.join(differ)})")

    @classmethod
    def from_dict(cls, data: dict) -> "DCMIFConfig":
        data = dict(data)
        for key in ("coenet", "rin", "rfn"):
            sub = dict(data[key])
            sub["blocks_per_level"] = tuple(sub["blocks_per_level"])
            data[key] = BackboneConfig(**sub)
        if data.get("semantic") is not None:
            data["semantic"] = SemanticConfig(**{**data["semantic"], "taps": tuple(data["semantic"]["taps"])})
        return cls(**data)


PRESETS: dict[str, DCMIFConfig] = {
    # the semantic branch is what makes people and vehicles warm (docs/model.md, "Semantics")
    "tiny": DCMIFConfig(
        name="tiny",
        atoms=16,
        rin=BackboneConfig(width=32, blocks_per_level=(2, 2), smooth_exit=True),
        rfn=BackboneConfig(width=24, smooth_exit=True),
        semantic=SemanticConfig(objectness=True),
        rin_gain=True,
        fusion=FUSION_WARMTH,
    ),
    "base": DCMIFConfig(
        name="base",
        atoms=64,
        coenet=BackboneConfig(width=64, blocks_per_level=(2, 2), entry_stride=2),
        # four levels (down to 1/16 of the frame): inferring infrared takes context. Measured on tiny, a
        # four-level RIN's first pass is closer to the real infrared (docs/model.md, "RIN depth")
        rin=BackboneConfig(width=64, blocks_per_level=(3, 3, 2, 2), entry_stride=2, smooth_exit=True),
        rfn=BackboneConfig(width=64, blocks_per_level=(2, 2), entry_stride=2, smooth_exit=True),
        dicnet_width=64,
        semantic=SemanticConfig(objectness=True),
        rin_gain=True,
        fusion=FUSION_WARMTH,
    ),
}


def get_config(name: str) -> DCMIFConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model size {name!r}; choose one of {sorted(PRESETS)}") from None
