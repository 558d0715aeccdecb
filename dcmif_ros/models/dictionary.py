"""The shared convolutional dictionary D and the exact solves around it.

Conventions (used everywhere in the package):
- D has shape (1, B, k, k); an image is synthesised as I = Σ_b d_b ⋆ s_b, a cross-correlation
  (what ``F.conv2d`` computes) with circular boundaries, so the frequency-domain solves are exact.
- The coefficient step (CSB) solves  argmin_x ½‖y − D⋆x‖² + (a/2)‖x − x0‖²  in closed form:
  X̂ = X̂0 + D̂ (Ŷ − D̂ᴴX̂0) / (a + ‖D̂‖²)   (Sherman–Morrison per frequency, a correct 2-D FFT).
  For inference the same solve is written in real arithmetic: x = x0 + Dᵀ(h ⊛ (y − D⋆x0)) where h is the
  (rapidly decaying) spatial filter whose spectrum is 1/(a + ‖D̂‖²); ``solver_filter`` computes it once.
- The dictionary step (DSB) solves  argmin_D Σ_m ½‖y_m − D⋆S_m‖² + (a_d/2)‖D − D_prev‖²  jointly over the
  batch and both modalities by its normal equations (float64, so it never fails the way float32 Cholesky does).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def circular_pad(x: torch.Tensor, radius: int) -> torch.Tensor:
    return F.pad(x, (radius, radius, radius, radius), mode="circular") if radius else x


def synthesize(coefficients: torch.Tensor, dictionary: torch.Tensor) -> torch.Tensor:
    """I = D ⋆ S (TailNet): (N,B,H,W) coefficients → (N,1,H,W) image."""
    radius = dictionary.shape[-1] // 2
    return F.conv2d(circular_pad(coefficients, radius), dictionary)


def synthesize_adjoint(residual: torch.Tensor, dictionary: torch.Tensor) -> torch.Tensor:
    """Dᵀ r: the adjoint of ``synthesize`` (a true convolution of r with each atom)."""
    radius = dictionary.shape[-1] // 2
    adjoint_weight = dictionary.flip(-1, -2).transpose(0, 1)
    return F.conv2d(circular_pad(residual, radius), adjoint_weight)


def normalize_atoms(dictionary: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Project every atom onto the unit sphere (the norm constraint ϕ(D) of the paper)."""
    norms = dictionary.flatten(2).norm(dim=2).clamp_min(eps)
    return dictionary / norms[..., None, None]


def dictionary_spectrum(dictionary: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """D̂: 2-D FFT of each atom placed with its centre at the origin (psf→otf), shape (B, H, W) complex."""
    k = dictionary.shape[-1]
    padded = dictionary.new_zeros(dictionary.shape[1], height, width)
    padded[:, :k, :k] = dictionary[0]
    padded = torch.roll(padded, shifts=(-(k // 2), -(k // 2)), dims=(-2, -1))
    return torch.fft.fft2(padded)


def coefficient_solve_fft(
    x0: torch.Tensor, image: torch.Tensor, dictionary: torch.Tensor, data_weight: torch.Tensor
) -> torch.Tensor:
    """Exact CSB in the frequency domain (training path). ``data_weight`` is a, shape () or (N,)."""
    height, width = x0.shape[-2:]
    d_hat = dictionary_spectrum(dictionary, height, width)  # (B,H,W)
    x_hat = torch.fft.fft2(x0)  # (N,B,H,W)
    y_hat = torch.fft.fft2(image)  # (N,1,H,W)
    a = data_weight.reshape(-1, 1, 1, 1)
    residual = y_hat - (d_hat.conj() * x_hat).sum(1, keepdim=True)
    energy = (d_hat.abs() ** 2).sum(0)
    update = d_hat * residual / (a + energy)
    return x0 + torch.fft.ifft2(update).real


def solver_filter(dictionary: torch.Tensor, data_weight: float, size: int, grid: int = 256) -> tuple[torch.Tensor, float]:
    """The spatial filter h (size×size) with spectrum 1/(a + ‖D̂‖²), and the relative energy it leaves out.

    h is computed on a large periodic grid and cropped; the circular solve with the cropped h equals the FFT
    solve up to that truncation (which decays with the filter size, faster for larger a).
    """
    with torch.no_grad():
        d_hat = dictionary_spectrum(dictionary.double(), grid, grid)
        spectrum = 1.0 / (data_weight + (d_hat.abs() ** 2).sum(0))
        full = torch.fft.fftshift(torch.fft.ifft2(spectrum).real)
        centre, radius = grid // 2, size // 2
        kernel = full[centre - radius : centre + radius + 1, centre - radius : centre + radius + 1]
        tail = 1.0 - float((kernel**2).sum() / (full**2).sum())
    return kernel.float()[None, None], tail


def coefficient_solve_spatial(
    x0: torch.Tensor, image: torch.Tensor, dictionary: torch.Tensor, kernel: torch.Tensor
) -> torch.Tensor:
    """The CSB in real arithmetic (inference and ONNX path): x0 + Dᵀ(h ⊛ (y − D⋆x0))."""
    residual = image - synthesize(x0, dictionary)
    filtered = F.conv2d(circular_pad(residual, kernel.shape[-1] // 2), kernel)
    return x0 + synthesize_adjoint(filtered, dictionary)


class DictionaryNormalEquations:
    """Accumulates the DSB normal equations over any number of (S, y) pairs, then solves them.

    Used per batch inside JSRL (differentiable) and over a whole dataset when JSRL is finalised.
    Positions are subsampled on a ``sample_stride`` grid to keep the Gram matrix cheap; the prior weight is
    scaled by the number of equations so it means the same at any batch or crop size.
    """

    def __init__(self, atoms: int, kernel_size: int, sample_stride: int = 2, device=None):
        size = atoms * kernel_size * kernel_size
        self.kernel_size, self.sample_stride = kernel_size, sample_stride
        self.gram = torch.zeros(size, size, dtype=torch.float64, device=device)
        self.rhs = torch.zeros(size, dtype=torch.float64, device=device)
        self.equations = 0

    def add(self, coefficients: torch.Tensor, image: torch.Tensor) -> None:
        radius, stride = self.kernel_size // 2, self.sample_stride
        # (N, B*k*k, P): the F.conv2d weight layout, one column per sampled output position
        patches = F.unfold(circular_pad(coefficients, radius), self.kernel_size, stride=stride)
        targets = image[:, :, ::stride, ::stride].flatten(1)  # (N, P)
        self.gram = self.gram + torch.matmul(patches, patches.transpose(1, 2)).sum(0).double()
        self.rhs = self.rhs + torch.matmul(patches, targets.unsqueeze(2)).sum(0)[:, 0].double()
        self.equations += patches.shape[0] * patches.shape[2]

    def solve(self, prior: torch.Tensor, prior_weight: torch.Tensor) -> torch.Tensor:
        weight = prior_weight.double() * self.equations / self.gram.shape[0]
        identity = torch.eye(self.gram.shape[0], dtype=torch.float64, device=self.gram.device)
        solution = torch.linalg.solve(self.gram + weight * identity, self.rhs + weight * prior.double().reshape(-1))
        return solution.to(prior.dtype).view_as(prior)


def dictionary_solve(
    coefficients: list[torch.Tensor], images: list[torch.Tensor], prior: torch.Tensor, prior_weight: torch.Tensor
) -> torch.Tensor:
    """DSB over the given (S, y) pairs (e.g. both modalities of one batch), pulled towards ``prior``."""
    equations = DictionaryNormalEquations(prior.shape[1], prior.shape[-1], device=prior.device)
    for s, y in zip(coefficients, images):
        equations.add(s, y)
    return equations.solve(prior, prior_weight)
