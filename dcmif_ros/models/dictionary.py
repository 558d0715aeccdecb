"""The shared convolutional dictionary D and the exact solves around it.

Conventions (used everywhere in the package):
- D has shape (1, B, k, k); an image is synthesised as I = Σ_b d_b ⋆ s_b, a cross-correlation
  (what ``F.conv2d`` computes) with circular boundaries, so the frequency-domain solves are exact.
- The coefficient step (CSB) solves  argmin_x ½‖y − D⋆x‖² + (a/2)‖x − x0‖²  in closed form:
  X̂ = X̂0 + D̂ (Ŷ − D̂ᴴX̂0) / (a + ‖D̂‖²)   (Sherman–Morrison per frequency, a correct 2-D FFT).
  For inference the same solve is written in real arithmetic: x = x0 + Dᵀ(h ⊛ (y − D⋆x0)) where h is the
  (rapidly decaying) spatial filter whose spectrum is 1/(a + ‖D̂‖²); ``solver_filter`` computes it once.
  REN folds that expression into two convolutions (see ``jsrl.REN``) with ``correlation_kernel``,
  ``block_kernel`` and ``blocked_correlate``.
- The dictionary step (DSB) solves  argmin_D Σ_m ½‖y_m − D⋆S_m‖² + (a_d/2)‖D − D_prev‖²  jointly over the
  batch and both modalities by its normal equations (float64, so it never fails the way float32 Cholesky does).
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable

import torch
import torch.nn.functional as F


def circular_pad(x: torch.Tensor, radius: int) -> torch.Tensor:
    return F.pad(x, (radius, radius, radius, radius), mode="circular") if radius else x


SYNTHESIS_BLOCK = 4  # synthesis writes 4×4 pixel blocks per output position (measured: half the time of 1×1)


@functools.lru_cache(maxsize=8)
def _phase_indices(kernel_size: int, factor: int, device: torch.device) -> torch.Tensor:
    """Gather indices (cached) laying a k×k atom out as ``phase_dictionary``'s factor² shifted copies (index k²
    picks an appended zero); a constant gather keeps the weight's shape known to the ONNX tracer."""
    size = kernel_size + factor - 1
    source = torch.arange(size)[None, :] - torch.arange(factor)[:, None]  # (phase, position): atom row or column
    inside = (source >= 0) & (source < kernel_size)
    rows, cols = source[:, None, :, None], source[None, :, None, :]  # (oy, ox, y, x) once broadcast
    valid = inside[:, None, :, None] & inside[None, :, None, :]
    index = torch.where(valid, rows * kernel_size + cols, kernel_size * kernel_size)
    return index.reshape(factor * factor, size, size).to(device)


def phase_dictionary(dictionary: torch.Tensor, factor: int) -> torch.Tensor:
    """D as the weight of a stride-``factor`` correlation that writes factor×factor pixel blocks:
    (factor², B, factor + k − 1, factor + k − 1), output channel oy·factor + ox holding D shifted by (oy, ox)."""
    atoms, kernel_size = dictionary.shape[1], dictionary.shape[-1]
    flat = F.pad(dictionary.reshape(atoms, kernel_size * kernel_size), (0, 1))
    return flat[:, _phase_indices(kernel_size, factor, dictionary.device)].transpose(0, 1)


def synthesize(coefficients: torch.Tensor, dictionary: torch.Tensor) -> torch.Tensor:
    """I = D ⋆ S (TailNet): (N,B,H,W) coefficients → (N,1,H,W) image.

    Where H and W divide by ``SYNTHESIS_BLOCK`` the same sums run as a strided correlation with
    ``phase_dictionary`` and a pixel shuffle: onnxruntime runs a convolution with one output channel as a
    matrix-vector product, and this one as a matrix product with 16 (10 → 5.6 ms per 320×240 image here).
    """
    radius = dictionary.shape[-1] // 2
    padded = circular_pad(coefficients, radius)
    if coefficients.shape[-2] % SYNTHESIS_BLOCK or coefficients.shape[-1] % SYNTHESIS_BLOCK:
        return F.conv2d(padded, dictionary)
    blocks = F.conv2d(padded, phase_dictionary(dictionary, SYNTHESIS_BLOCK), stride=SYNTHESIS_BLOCK)
    return F.pixel_shuffle(blocks, SYNTHESIS_BLOCK)


def upsample_field(field: torch.Tensor, stride: int) -> torch.Tensor:
    """A low-resolution coefficient field at full resolution: the bilinear upsampling every smooth exit uses."""
    return F.interpolate(field, scale_factor=stride, mode="bilinear", align_corners=False)


def field_synthesis_radius(kernel_size: int, stride: int) -> int:
    """Low-resolution cells on each side that one block of D ⋆ up(X) depends on: one for the bilinear
    upsampling, and the atom radius in blocks for the synthesis."""
    return 1 + -(-(kernel_size // 2) // stride)


def field_synthesis_weight(dictionary: torch.Tensor, stride: int) -> torch.Tensor:
    """D ⋆ up(X) for a low-resolution field X as one correlation at X's resolution writing stride×stride pixel
    blocks: (stride², B, 2R+1, 2R+1), read off the exact operator's responses to one impulse per atom."""
    atoms, kernel_size = dictionary.shape[1], dictionary.shape[-1]
    radius = field_synthesis_radius(kernel_size, stride)
    size = 4 * radius + 1  # an impulse at the centre never reaches the (circular) border
    centre = size // 2
    impulses = dictionary.new_zeros(atoms, atoms, size, size)
    impulses[torch.arange(atoms), torch.arange(atoms), centre, centre] = 1.0
    blocks = F.pixel_unshuffle(synthesize(upsample_field(impulses, stride), dictionary), stride)  # (B, s², n, n)
    window = blocks[..., centre - radius : centre + radius + 1, centre - radius : centre + radius + 1]
    return window.flip(-1, -2).transpose(0, 1)  # a correlation reads the response backwards


def synthesize_field(field: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """D ⋆ up(X) for a low-resolution field X, given ``field_synthesis_weight``: the full-resolution upsampled
    coefficients are never built (one small correlation instead of an upsampling, an addition and a share of the
    synthesis over B full-resolution maps). The field is extended by replicating its border cells (a smooth
    field has no reason to wrap around the frame); away from the border it equals ``synthesize(upsample_field(X))``."""
    stride, radius = math.isqrt(weight.shape[0]), weight.shape[-1] // 2
    return F.pixel_shuffle(F.conv2d(F.pad(field, (radius,) * 4, mode="replicate"), weight), stride)


def adjoint_weight(dictionary: torch.Tensor) -> torch.Tensor:
    """The (B, 1, k, k) ``F.conv2d`` weight of Dᵀ (a true convolution of one channel with each atom)."""
    return dictionary.flip(-1, -2).transpose(0, 1)


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


def correlation_kernel(operator: Callable[[torch.Tensor], torch.Tensor], radius: int,
                       like: torch.Tensor) -> torch.Tensor:
    """The (1, 1, 2r+1, 2r+1) kernel k with ``operator(y) == F.conv2d(circular_pad(y, r), k)`` for a linear,
    shift-invariant, single-channel ``operator`` whose support fits in ``radius`` (dtype and device of ``like``).

    Read off the operator's response to an impulse (on a grid wide enough not to wrap), so it holds for any
    composition of circular convolutions without tracking flips and offsets by hand.
    """
    size = 2 * (2 * radius + 1)
    centre = size // 2
    impulse = like.new_zeros(1, 1, size, size)
    impulse[0, 0, centre, centre] = 1.0
    response = operator(impulse)[0, 0, centre - radius : centre + radius + 1, centre - radius : centre + radius + 1]
    return response.flip(0, 1)[None, None]  # a correlation reads the response backwards


@functools.lru_cache(maxsize=8)
def _block_indices(size: int, factor: int, device: torch.device) -> torch.Tensor:
    """Gather indices (on ``device``, cached) that lay a size×size kernel out as a factor²→factor² convolution
    over factor×factor pixel blocks (index size² picks an appended zero)."""
    radius = size // 2
    block_radius = -(-radius // factor)
    span = torch.arange(-block_radius, block_radius + 1)
    phase = torch.arange(factor)
    # output phase (o), input phase (i), block offset (b): kernel offset = b·factor + i − o per axis
    offset = span[None, None, :] * factor + phase[None, :, None] - phase[:, None, None]  # (o, i, b)
    flat_axis = torch.where(offset.abs() <= radius, offset + radius, -1)
    rows = flat_axis[:, None, :, None, :, None]  # (oy, ox, iy, ix, by, bx) once broadcast
    cols = flat_axis[None, :, None, :, None, :]
    index = torch.where((rows >= 0) & (cols >= 0), rows * size + cols, size * size)
    return index.reshape(factor * factor, factor * factor, 2 * block_radius + 1, 2 * block_radius + 1).to(device)


def block_kernel(kernel: torch.Tensor, factor: int) -> torch.Tensor:
    """A (1, 1, K, K) correlation kernel as the weight of the same correlation on factor×factor pixel blocks:
    (factor², factor², 2R+1, 2R+1) with R = ⌈(K // 2) / factor⌉ (``pixel_unshuffle`` channel order)."""
    index = _block_indices(kernel.shape[-1], factor, kernel.device)
    return F.pad(kernel.flatten(), (0, 1))[index]


def blocked_correlate(image: torch.Tensor, block_weight: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(circular_pad(image, r), kernel)`` for one channel, given ``block_kernel(kernel, factor)``.

    The same sums, laid out as a factor²-channel convolution at 1/factor resolution: onnxruntime runs a
    one-channel convolution with a large kernel as a matrix-vector product over a huge im2col buffer, and
    this form as a matrix product over a buffer factor² smaller (a 39×39 kernel at 640×480: 41 → 12 ms).
    H and W must be multiples of factor, and at least factor·R.
    """
    factor = math.isqrt(block_weight.shape[0])
    blocks = F.pixel_unshuffle(image, factor)
    return F.pixel_shuffle(F.conv2d(circular_pad(blocks, block_weight.shape[-1] // 2), block_weight), factor)


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


@contextlib.contextmanager
def frozen_derived_weights(model: torch.nn.Module):
    """Enter the ``frozen()`` context of every module inside ``model`` that has one (REN's solve kernel, warmth
    fusion's field kernel): weights derived from D are then held as constants while a graph is exported."""
    with contextlib.ExitStack() as stack:
        for module in model.modules():
            if callable(getattr(module, "frozen", None)):
                stack.enter_context(module.frozen())
        yield model
