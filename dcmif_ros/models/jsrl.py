"""JSRL: joint shared-dictionary representation learning by unfolded optimisation (DCMIF, Alg. 1).

Each IV-DLB alternates, for visible and infrared:
  CSB (exact closed-form coefficient solve with the current D) → CoeNet (learned proximal step, soft
  threshold = the ℓ1 sparsity prior on S), then DSB (joint least-squares dictionary solve over both
  modalities) → DicNet (learned proximal step on D, projected to unit-norm atoms = the norm prior on D).
HypNet predicts the six step sizes/thresholds of every block from the scale factor σ.

Unlike the reference code, D₀ is a learned unit-norm dictionary (not zero, which makes the first CSB the
identity), and the DSB is one joint float64 solve (not two float32 Cholesky solves that fail silently).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from dcmif_ros.models.blocks import NEAR_ZERO_INIT_STD, CoefficientBackbone, soft_threshold
from dcmif_ros.models.config import SOLVE_BLOCK, BackboneConfig, DCMIFConfig
from dcmif_ros.models.dictionary import (
    DictionaryNormalEquations,
    adjoint_weight,
    block_kernel,
    blocked_correlate,
    circular_pad,
    coefficient_solve_fft,
    correlation_kernel,
    normalize_atoms,
    synthesize,
)

MODALITIES = ("vis", "ir")
THRESHOLD_INIT = 1e-3


class HypNet(nn.Module):
    """σ → the positive hyper-parameters of one IV-DLB (paper: μ1..3 and β1..3)."""

    NAMES = ("csb_vis", "csb_ir", "dsb", "prox_vis", "prox_ir", "prox_dic")

    def __init__(self, width: int, minimum: float):
        super().__init__()
        self.minimum = minimum
        self.net = nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, len(self.NAMES)), nn.Softplus())

    def forward(self, sigma: torch.Tensor) -> dict[str, torch.Tensor]:
        values = self.net(sigma.reshape(1, 1))[0]
        return {name: values[i] + (self.minimum if name.startswith(("csb", "dsb")) else 0.0)
                for i, name in enumerate(self.NAMES)}


class HeadNet(nn.Module):
    """Initial coefficients S₀ from an image: a learned analysis filter bank."""

    def __init__(self, atoms: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(1, atoms, kernel_size, padding=kernel_size // 2, padding_mode="circular", bias=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image)


class CoeNet(nn.Module):
    """Learned proximal operator on coefficients: residual refinement, then per-atom soft threshold."""

    def __init__(self, atoms: int, config: BackboneConfig):
        super().__init__()
        self.refine = CoefficientBackbone(atoms, atoms, config)
        self.log_threshold = nn.Parameter(torch.full((1, atoms, 1, 1), float(torch.log(torch.tensor(THRESHOLD_INIT)))))

    def forward(self, coefficients: torch.Tensor, prox_weight: torch.Tensor) -> torch.Tensor:
        refined = coefficients + self.refine(coefficients)
        return soft_threshold(refined, prox_weight * self.log_threshold.exp())


class DicNet(nn.Module):
    """Learned proximal operator on the dictionary (its atoms viewed as a B-channel k×k image)."""

    def __init__(self, atoms: int, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(atoms, width, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(width, atoms, 3, padding=1))
        nn.init.normal_(self.net[-1].weight, std=NEAR_ZERO_INIT_STD)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, dictionary: torch.Tensor, prox_weight: torch.Tensor) -> torch.Tensor:
        return normalize_atoms(dictionary + prox_weight * self.net(dictionary))


class JSRL(nn.Module):
    """The unfolded dictionary learner. ``forward`` returns reconstructions, coefficients and the final D."""

    def __init__(self, config: DCMIFConfig, blocks: int = 1):
        super().__init__()
        self.config, self.blocks = config, blocks
        atoms, k = config.atoms, config.kernel_size
        self.initial_dictionary = nn.Parameter(normalize_atoms(torch.randn(1, atoms, k, k)))
        self.register_buffer("sigma", torch.tensor(config.hyper_sigma))
        self.heads = nn.ModuleDict({m: HeadNet(atoms, k) for m in MODALITIES})
        self.coenets = nn.ModuleDict({m: CoeNet(atoms, config.coenet) for m in MODALITIES})
        self.hypnets = nn.ModuleList([HypNet(config.hypnet_width, config.min_data_weight) for _ in range(blocks)])
        self.dicnets = nn.ModuleList([DicNet(atoms, config.dicnet_width) for _ in range(blocks)])

    def dictionary_zero(self) -> torch.Tensor:
        return normalize_atoms(self.initial_dictionary)

    def encode_step(self, modality: str, image: torch.Tensor, coefficients: torch.Tensor,
                    dictionary: torch.Tensor, hyper: dict[str, torch.Tensor]) -> torch.Tensor:
        """CSB then CoeNet for one modality (lines 4–7 of Algorithm 1)."""
        solved = coefficient_solve_fft(coefficients, image, dictionary, hyper[f"csb_{modality}"])
        return self.coenets[modality](solved, hyper[f"prox_{modality}"])

    def forward(self, vis: torch.Tensor, ir: torch.Tensor) -> dict[str, torch.Tensor]:
        images = {"vis": vis, "ir": ir}
        coefficients = {m: self.heads[m](images[m]) for m in MODALITIES}
        dictionary = self.dictionary_zero()
        for hypnet, dicnet in zip(self.hypnets, self.dicnets):
            hyper = hypnet(self.sigma)
            coefficients = {m: self.encode_step(m, images[m], coefficients[m], dictionary, hyper) for m in MODALITIES}
            equations = DictionaryNormalEquations(self.config.atoms, self.config.kernel_size, device=vis.device)
            for m in MODALITIES:
                equations.add(coefficients[m], images[m])
            dictionary = dicnet(equations.solve(dictionary, hyper["dsb"]), hyper["prox_dic"])
        return {
            "recon_vis": synthesize(coefficients["vis"], dictionary),
            "recon_ir": synthesize(coefficients["ir"], dictionary),
            "coef_vis": coefficients["vis"],
            "coef_ir": coefficients["ir"],
            "dictionary": dictionary,
        }

    @torch.no_grad()
    def dataset_dictionary(self, pairs) -> torch.Tensor:
        """The shared dictionary over a whole dataset: the DSB + DicNet of the last block over all ``pairs``.

        This is the D shipped for inference (one D for every image), instead of a per-batch solution.
        Supports one IV-DLB, the paper's setting; more blocks would need a dataset D per block.
        """
        if self.blocks != 1:
            raise ValueError("dataset_dictionary supports one IV-DLB (the paper's setting)")
        hyper = self.hypnets[0](self.sigma)
        prior = self.dictionary_zero()
        equations = DictionaryNormalEquations(self.config.atoms, self.config.kernel_size, device=prior.device)
        for vis, ir in pairs:
            for modality, image in (("vis", vis), ("ir", ir)):
                coefficients = self.encode_step(modality, image, self.heads[modality](image), prior, hyper)
                equations.add(coefficients, image)
        return self.dicnets[0](equations.solve(prior, hyper["dsb"]), hyper["prox_dic"])


class REN(nn.Module):
    """The frozen JSRL encoder for one modality, in exportable form (spatial CSB, no FFT).

    Built from a trained JSRL: HeadNet, the CSB with D₀ and its learned data weight, and CoeNet. Since the
    CSB starts from x₀ = H⋆y, it is linear in y and folds exactly into two convolutions:
        x = H⋆y + Dᵀ(h ⊛ (y − D⋆H⋆y)) = [H | Dᵀ] ⋆ [y, k⋆y],   k = h ∘ (δ − D∘H),
    one single-channel k (the 31×31 h widened by the 9×9 D∘H, cropped to ``config.solve_kernel_size`` and
    run on ``SOLVE_BLOCK``² pixel blocks) and one 2→B 5×5 convolution, instead of four full-resolution
    convolutions (H 1→B, D⋆ B→1, the 31×31 h, Dᵀ 1→B; timings in docs/model.md). k is derived
    from the stored h, H and D₀, so checkpoints keep the paper's terms and the folded form follows them;
    ``frozen()`` holds it as a constant while a graph is exported.
    """

    def __init__(self, config: DCMIFConfig, modality: str = "vis"):
        super().__init__()
        self.modality, self.solve_radius = modality, config.solve_radius
        atoms, k = config.atoms, config.kernel_size
        self.head = HeadNet(atoms, k)
        self.coenet = CoeNet(atoms, config.coenet)
        self.register_buffer("dictionary", torch.zeros(1, atoms, k, k))
        self.register_buffer("solver_kernel", torch.zeros(1, 1, config.solver_kernel_size, config.solver_kernel_size))
        self.register_buffer("prox_weight", torch.tensor(1.0))
        self.register_buffer("solver_truncation", torch.tensor(0.0))
        self._frozen_solve_weight: torch.Tensor | None = None

    def exact_solve_kernel(self) -> torch.Tensor:
        """k uncropped: the single-channel kernel of y ↦ h ⊛ (y − D⋆H⋆y)."""
        solver_radius = self.solver_kernel.shape[-1] // 2

        def residual_solve(image: torch.Tensor) -> torch.Tensor:
            residual = image - synthesize(self.head(image), self.dictionary)
            return F.conv2d(circular_pad(residual, solver_radius), self.solver_kernel)

        exact_radius = solver_radius + self.head.conv.weight.shape[-1] // 2 + self.dictionary.shape[-1] // 2
        return correlation_kernel(residual_solve, exact_radius, like=self.solver_kernel)

    def cropped(self, kernel: torch.Tensor) -> torch.Tensor:
        """``kernel`` cropped to ``config.solve_kernel_size``."""
        crop = max(kernel.shape[-1] // 2 - self.solve_radius, 0)
        return kernel[..., crop : kernel.shape[-2] - crop, crop : kernel.shape[-1] - crop]

    def solve_truncation(self) -> float:
        """The relative energy of k that the crop drops (recorded in export manifests), in float64: it is
        around 1e-7, where float32's 1 − ratio rounds to 0."""
        with torch.no_grad():
            exact = self.exact_solve_kernel().double()
            return float(1.0 - (self.cropped(exact) ** 2).sum() / (exact**2).sum())

    def solve_weight(self) -> torch.Tensor:
        """k as the weight of its correlation on pixel blocks (``block_kernel``)."""
        if self._frozen_solve_weight is not None:
            return self._frozen_solve_weight
        return block_kernel(self.cropped(self.exact_solve_kernel()), SOLVE_BLOCK)

    @contextlib.contextmanager
    def frozen(self):
        """Hold ``solve_weight`` as a constant: an exported graph then carries k's final weights instead of
        the ops that derive them (which onnxruntime cannot fold in an fp16 graph)."""
        with torch.no_grad():
            self._frozen_solve_weight = self.solve_weight().detach()
        try:
            yield self
        finally:
            self._frozen_solve_weight = None

    def solve(self, image: torch.Tensor) -> torch.Tensor:
        """The CSB from x₀ = H⋆y (before CoeNet). H and W must be multiples of ``SOLVE_BLOCK``."""
        filtered = blocked_correlate(image, self.solve_weight())
        # H and D share the atom size (config.kernel_size), so one 2→B convolution applies both
        analysis = torch.cat([self.head.conv.weight, adjoint_weight(self.dictionary)], dim=1)  # (B, 2, k, k)
        return F.conv2d(circular_pad(torch.cat([image, filtered], dim=1), self.dictionary.shape[-1] // 2), analysis)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.coenet(self.solve(image), self.prox_weight)
