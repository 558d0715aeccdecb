"""Infrared-visible fusion quality metrics, as the fusion literature computes them.

Every definition follows the team's design note ``shared/design/fusion-metrics.md`` (beside the
repository; section numbers in brackets below), whose definitions were checked against the reference
toolboxes' own stored outputs; ``test/test_metrics.py`` checks ours against VIFB's.
The same metric name means different numbers in different codebases, so this module pins one
convention per mode and says which.

Inputs are ``uint8`` arrays as ``cv2.imread`` returns them: ``HxW`` grey or ``HxWx3`` **BGR** colour,
at least ``MIN_IMAGE_SIDE`` (41) pixels per side, which VIF's four-scale pyramid needs. All arithmetic
is float64 on 0-255 grey values: the references evaluate saved 8-bit files, so quantisation is part of
every metric. Linear filters run through OpenCV with the reference's border rule spelled out (same
values as scipy.ndimage to ~1e-13, several times faster).

Two modes
---------
``gray`` (our reporting convention)
    Colour images are reduced to BT.601 luma (``cv2.COLOR_BGR2GRAY``: 0.299 R + 0.587 G + 0.114 B,
    rounded to uint8, as CDDFuse does) and every metric runs once on that plane.

    - AG, CE, EI, EN, Qcb, SF, SD: the exact VIFB formulas [3, 6], including VIFB's AG divisor
      (M-1)(N-1) and SF divisor M*N.
    - MI: bits (log2), 256-bin joint histogram of the raw 8-bit values, MI(VI,F) + MI(IR,F), as
      Tang / Qu Xiaobo [3 MI, 6]. Nats = bits * ln 2 (``vifb`` mode reports nats).
    - SSIM: the **sum** SSIM(VI,F) + SSIM(IR,F) (range up to 2), each term Wang's Gaussian form
      (11x11, sigma 1.5, valid filtering, L = 255) [3 SSIM, 6]. Halve it for the average form.
    - VIF: VIF_P(VI,F) + VIF_P(IR,F), Sheikh-Bovik pixel-domain multiscale VIF on 0-255 [3 VIF].
    - Nabf: Kumar's modified N^{AB/F} on 0-255 with the correct argument order [3 Nabf, 6]
      (the [0,1] form of the Hui Li lineage gives larger values).
    - Qabf: Xydeas-Petrovic as ported by R. Hong (VIFB, Tang, CDDFuse) on 0-255 [3 Qabf].
    - SCD: corr(F-IR, VI) + corr(F-VI, IR) [3 SCD].
    - PSNR: textbook 10*log10(255^2 / ((MSE_VI + MSE_IR) / 2)) [3 PSNR, 6]. Tang's PSNR is this
      + 48.13 dB; VIFB's is not comparable. +inf when the fused image equals both sources.

``vifb`` (comparable with papers that used the VIFB toolbox, e.g. DCMIF)
    Reproduces VIFB ``metrics/metrics*.m`` quirks included [2, 3]:

    - colour is **not** converted: when the fused image has 3 channels, each metric runs per
      channel k on (VI_k, IR_k, F_k) and the channel values are averaged; a grey source is used for
      every channel (as VIFB does with a grey IR). Channels are taken in MATLAB's RGB order.
    - SF sees the channels side by side as one M x 3N image [R G B] (VIFB's ``size`` quirk), so the
      R|G and G|B seams count; EI's mean over all pixels and channels equals the channel average.
    - MI: nats. VIFB's min-max stretch before MI is omitted: on 8-bit input it only relabels grey
      levels one-to-one, which leaves MI unchanged.
    - PSNR: VIFB's size-dependent form, whose "MSE" is sqrt(sum of squared errors) / (M*N).
    - Qabf: VIFB rescales its 0-255 input by 255 once more (only the tie branch g_A = g_F notices).
    - VIF, Nabf and SCD are not in VIFB; they use the ``gray`` definitions, per channel.

    Our decision where VIFB is undefined: a grey *fused* image with colour sources reduces the
    sources to BT.601 luma (VIFB's CE converts colour to grey in that case; its other metrics fail).

Degenerate inputs (e.g. constant images) give NaN wherever the reference divides by zero (Qcb,
Qabf, SCD, VIF), exactly as the MATLAB code would.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import cv2
import numpy as np

METRIC_NAMES: tuple[str, ...] = (
    "AG", "CE", "EI", "EN", "Qcb", "SF", "MI", "SSIM", "SD", "VIF", "Nabf", "Qabf", "SCD", "PSNR",
)
HIGHER_IS_BETTER: dict[str, bool] = {
    "AG": True, "CE": False, "EI": True, "EN": True, "Qcb": True, "SF": True, "MI": True,
    "SSIM": True, "SD": True, "VIF": True, "Nabf": False, "Qabf": True, "SCD": True, "PSNR": True,
}
MODES: tuple[str, ...] = ("gray", "vifb")

GREY_LEVELS = 256          # 8-bit files: histogram bins for EN, CE, MI
PEAK = 255.0               # 8-bit peak value (PSNR, SSIM's L, min-max stretches)
COLOUR_CHANNELS = 3

# EI: fspecial('sobel'), un-normalised, applied with imfilter(..., 'replicate') [3 EI].
EDGE_SOBEL = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])

# Qcb: Z. Liu metricChenBlum.m (Chen & Blum, IVC 2009), copied into VIFB metricsQcb.m [3 Qcb].
QCB_CSF_F0 = 15.3870
QCB_CSF_F1 = 1.3456
QCB_CSF_A = 0.7622
QCB_FREQ_DIVISOR = 30.0    # u <- u * N / 30 on freqspace's [-1, 1) grid
QCB_GAUSS_HALF = 15        # 31x31 un-normalised Gaussians
QCB_SIGMA_CENTRE = 2.0
QCB_SIGMA_SURROUND = 4.0
QCB_K, QCB_H, QCB_P, QCB_Q, QCB_Z = 1.0, 1.0, 3.0, 2.0, 1e-4

# SSIM: Wang's ssim_index.m as called by VIFB metricsSsim.m [3 SSIM].
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03

# VIF: Sheikh & Bovik vifp_mscale.m (LIVE), as used by Tang and CDDFuse [3 VIF].
VIF_SCALES = 4
VIF_SIGMA_N_SQ = 2.0       # noise variance, in 8-bit units
VIF_WINDOW_TO_SIGMA = 5.0  # sigma = N / 5
VIF_EPS = 1e-10

# Qabf: R. Hong's port of Xydeas & Petrovic (2000), VIFB metricsQabf.m [3 Qabf].
QABF_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
QABF_SOBEL_Y = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
QABF_TG, QABF_KG, QABF_DG = 0.9994, -15.0, 0.5
QABF_TA, QABF_KA, QABF_DA = 0.9879, -22.0, 0.8
VIFB_QABF_RESCALE = 255.0  # VIFB: 255 * im2double(double(x)) on 0-255 data

# Nabf: B. K. Shreyamsha Kumar, objective_fusion_perform_fn.m (2011) [3 Nabf].
NABF_SOBEL_V = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
NABF_SOBEL_H = np.array([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]) / 8.0
NABF_NRG, NABF_KG, NABF_SIGMA_G = 0.9999, 19.0, 0.5
NABF_NRA, NABF_KA, NABF_SIGMA_A = 0.9995, 22.0, 0.5
NABF_EDGE_THRESHOLD = 2.0  # Td
NABF_WEIGHT_EXPONENT = 1.5  # L
NABF_WEIGHT_MIN = 0.001


# ---------------------------------------------------------------- filtering helpers

def _gaussian_taps(size: int, sigma: float) -> np.ndarray:
    """1-D factor of fspecial('gaussian', size, sigma); its outer product is the 2-D window.

    fspecial zeroes taps below eps * max; for every window used here the smallest tap is far above
    that, so the separable form is exact.
    """
    offsets = np.arange(size) - (size - 1) / 2.0
    taps = np.exp(-(offsets ** 2) / (2.0 * sigma ** 2))
    return taps / taps.sum()


def _correlate(image: np.ndarray, kernel: np.ndarray, border: int) -> np.ndarray:
    """2-D correlation (MATLAB filter2/imfilter) of a float64 plane, same size, given border rule."""
    return cv2.filter2D(np.ascontiguousarray(image), cv2.CV_64F, kernel, borderType=border)


def _correlate_separable(image: np.ndarray, taps: np.ndarray, border: int) -> np.ndarray:
    """Correlation with the symmetric separable kernel outer(taps, taps), same size."""
    return cv2.sepFilter2D(np.ascontiguousarray(image), cv2.CV_64F, taps, taps, borderType=border)


def _filter_valid(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """filter2(outer(taps, taps), image, 'valid'): only outputs whose window lies inside the image."""
    half = len(taps) // 2
    filtered = _correlate_separable(image, taps, cv2.BORDER_REFLECT_101)
    return filtered[half:image.shape[0] - half, half:image.shape[1] - half]


def _vif_window(scale: int) -> int:
    """Window side at a VIF scale (1-based): 2^(5 - scale) + 1, i.e. 17, 9, 5, 3."""
    return 2 ** (VIF_SCALES - scale + 1) + 1


def _min_image_side() -> int:
    """Smallest image side for which VIF's coarsest scale still has one valid window.

    Walks VIF's pyramid backwards (each scale: valid filter, then keep every 2nd pixel); every
    other metric needs less (SSIM needs 11).
    """
    side = _vif_window(VIF_SCALES)
    for scale in range(VIF_SCALES, 1, -1):
        side = 2 * side - 1 + _vif_window(scale) - 1
    return max(side, _vif_window(1), SSIM_WINDOW)


MIN_IMAGE_SIDE = _min_image_side()


# ---------------------------------------------------------------- histogram helpers

def _grey_indices(plane: np.ndarray) -> np.ndarray:
    """Integer grey levels of a float plane holding 0..255 values (VIFB bins by floor)."""
    return np.floor(plane).astype(np.intp).ravel()


def _probabilities(plane: np.ndarray) -> np.ndarray:
    """Normalised 256-bin histogram."""
    return np.bincount(_grey_indices(plane), minlength=GREY_LEVELS) / plane.size


def _shannon(probabilities: np.ndarray, log: Callable[[np.ndarray], np.ndarray]) -> float:
    """-sum p log p over the non-empty bins."""
    nonzero = probabilities[probabilities > 0]
    return float(-np.sum(nonzero * log(nonzero)))


# ---------------------------------------------------------------- fused-only metrics

def average_gradient(fused: np.ndarray) -> float:
    """AG, VIFB form: sum of sqrt((Gx^2+Gy^2)/2) over all M*N pixels, divided by (M-1)(N-1)."""
    grad_rows, grad_cols = np.gradient(fused)
    rows, cols = fused.shape
    return float(np.sum(np.sqrt((grad_cols ** 2 + grad_rows ** 2) / 2.0)) / ((rows - 1) * (cols - 1)))


def edge_intensity(fused: np.ndarray) -> float:
    """EI: mean Sobel magnitude, replicate borders (imfilter 'replicate')."""
    grad_x = _correlate(fused, EDGE_SOBEL, cv2.BORDER_REPLICATE)
    grad_y = _correlate(fused, EDGE_SOBEL.T, cv2.BORDER_REPLICATE)
    return float(np.mean(np.hypot(grad_x, grad_y)))


def entropy(fused: np.ndarray) -> float:
    """EN: Shannon entropy in bits of the 256-bin histogram."""
    return _shannon(_probabilities(fused), np.log2)


def standard_deviation(fused: np.ndarray) -> float:
    """SD: population standard deviation (1/N) on 0-255."""
    return float(np.std(fused))


def spatial_frequency(fused: np.ndarray) -> float:
    """SF, VIFB form: row and column squared differences both divided by M*N, not by their count."""
    row_frequency = np.sum(np.diff(fused, axis=1) ** 2) / fused.size
    column_frequency = np.sum(np.diff(fused, axis=0) ** 2) / fused.size
    return float(np.sqrt(row_frequency + column_frequency))


# ---------------------------------------------------------------- metrics against the sources

def _relative_entropy(source: np.ndarray, fused_probabilities: np.ndarray) -> float:
    """KL(source || fused) in bits, skipping bins empty in either histogram (VIFB)."""
    source_probabilities = _probabilities(source)
    both = (source_probabilities > 0) & (fused_probabilities > 0)
    ratio = source_probabilities[both] / fused_probabilities[both]
    return float(np.sum(source_probabilities[both] * np.log2(ratio)))


def cross_entropy(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray) -> float:
    """CE (DCMIF's "contrast entropy"): mean of KL(VI||F) and KL(IR||F); lower is better.

    Skipping the bins where F is empty (VIFB) means CE can dip slightly below 0 when F misses
    grey levels the sources use.
    """
    fused_probabilities = _probabilities(fused)
    return (_relative_entropy(vi, fused_probabilities) + _relative_entropy(ir, fused_probabilities)) / 2.0


def _mutual_information(source: np.ndarray, fused: np.ndarray,
                        log: Callable[[np.ndarray], np.ndarray]) -> float:
    """H(S) + H(F) - H(S,F) from the 256x256 joint histogram."""
    pair_index = _grey_indices(source) * GREY_LEVELS + _grey_indices(fused)
    joint = np.bincount(pair_index, minlength=GREY_LEVELS ** 2).reshape(GREY_LEVELS, GREY_LEVELS)
    joint = joint / source.size
    return _shannon(joint.sum(axis=1), log) + _shannon(joint.sum(axis=0), log) - _shannon(joint, log)


def mutual_information(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray,
                       log: Callable[[np.ndarray], np.ndarray] = np.log2) -> float:
    """MI(VI,F) + MI(IR,F); ``log`` picks the unit (log2: bits, log: nats).

    VIFB first min-max stretches each image to 0..255. On 8-bit input that stretch maps distinct
    grey levels to distinct levels (its gain is >= 1), and MI is invariant to such a relabelling,
    so it is left out.
    """
    return _mutual_information(vi, fused, log) + _mutual_information(ir, fused, log)


def mutual_information_with(source: np.ndarray, fused: np.ndarray) -> float:
    """MI(S,F) in bits against one source: how much of the (real) infrared a fused image carries."""
    return _mutual_information(np.asarray(source, np.float64), np.asarray(fused, np.float64), np.log2)


def _stretch_to_8bit(plane: np.ndarray) -> np.ndarray:
    """Chen-Blum's normalize1: min-max stretch to 0..255, rounded half away from zero (MATLAB round).

    A constant plane becomes zeros (normalize1 leaves an all-zero plane alone and gives NaN for
    other constants; Qcb is NaN for any constant plane either way, as its contrast ratio is 0/0).
    """
    low, high = plane.min(), plane.max()
    if high == low:
        return np.zeros_like(plane)
    return np.floor(PEAK * (plane - low) / (high - low) + 0.5)


def _csf_response(shape: tuple[int, int]) -> np.ndarray:
    """Chen-Blum DoG contrast-sensitivity filter on freqspace's grid, laid out for rfft2.

    freqspace puts zero frequency at index floor(n/2); ifftshift moves it to index 0.
    """
    rows, cols = shape
    u = (np.arange(cols) - cols // 2) * 2.0 / cols * cols / QCB_FREQ_DIVISOR
    v = (np.arange(rows) - rows // 2) * 2.0 / rows * rows / QCB_FREQ_DIVISOR
    radius = np.hypot(u[np.newaxis, :], v[:, np.newaxis])
    response = np.exp(-(radius / QCB_CSF_F0) ** 2) - QCB_CSF_A * np.exp(-(radius / QCB_CSF_F1) ** 2)
    return np.fft.ifftshift(response)[:, :cols // 2 + 1]


def _gaussian_filter_same(image: np.ndarray, sigma: float) -> np.ndarray:
    """filter2 of Chen-Blum's un-normalised 31x31 Gaussian exp(-r^2/2s^2)/(2 pi s^2), zero padding."""
    offsets = np.arange(-QCB_GAUSS_HALF, QCB_GAUSS_HALF + 1, dtype=np.float64)
    taps = np.exp(-(offsets ** 2) / (2.0 * sigma ** 2))
    return _correlate_separable(image, taps, cv2.BORDER_CONSTANT) / (2.0 * np.pi * sigma ** 2)


def _masked_contrast(plane: np.ndarray, csf: np.ndarray) -> np.ndarray:
    """Chen-Blum C' = k C^p / (h C^q + Z) of the CSF-filtered, stretched plane."""
    filtered = np.fft.irfft2(np.fft.rfft2(_stretch_to_8bit(plane)) * csf, s=plane.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        contrast = np.abs(_gaussian_filter_same(filtered, QCB_SIGMA_CENTRE)
                          / _gaussian_filter_same(filtered, QCB_SIGMA_SURROUND) - 1.0)
    return QCB_K * contrast ** QCB_P / (QCB_H * contrast ** QCB_Q + QCB_Z)


def chen_blum(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray) -> float:
    """Qcb: saliency-weighted preservation of masked local contrast (Chen & Blum 2009)."""
    csf = _csf_response(fused.shape)
    contrast_vi, contrast_ir, contrast_fused = (_masked_contrast(p, csf) for p in (vi, ir, fused))
    with np.errstate(divide="ignore", invalid="ignore"):
        preserved_vi = np.minimum(contrast_vi, contrast_fused) / np.maximum(contrast_vi, contrast_fused)
        preserved_ir = np.minimum(contrast_ir, contrast_fused) / np.maximum(contrast_ir, contrast_fused)
        total_saliency = contrast_vi ** 2 + contrast_ir ** 2
        saliency_vi, saliency_ir = contrast_vi ** 2 / total_saliency, contrast_ir ** 2 / total_saliency
    quality = saliency_vi * preserved_vi + saliency_ir * preserved_ir
    return float(np.mean(quality))


def _ssim(reference: np.ndarray, fused: np.ndarray) -> float:
    """Wang's SSIM: Gaussian window, valid filtering, mean of the map."""
    taps = _gaussian_taps(SSIM_WINDOW, SSIM_SIGMA)
    c1, c2 = (SSIM_K1 * PEAK) ** 2, (SSIM_K2 * PEAK) ** 2
    mean_ref, mean_fused = _filter_valid(reference, taps), _filter_valid(fused, taps)
    var_ref = _filter_valid(reference * reference, taps) - mean_ref ** 2
    var_fused = _filter_valid(fused * fused, taps) - mean_fused ** 2
    covariance = _filter_valid(reference * fused, taps) - mean_ref * mean_fused
    ssim_map = ((2 * mean_ref * mean_fused + c1) * (2 * covariance + c2)
                / ((mean_ref ** 2 + mean_fused ** 2 + c1) * (var_ref + var_fused + c2)))
    return float(np.mean(ssim_map))


def structural_similarity(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray) -> float:
    """SSIM, sum form SSIM(VI,F) + SSIM(IR,F) (VIFB, CDDFuse); values above 1 are normal."""
    return _ssim(vi, fused) + _ssim(ir, fused)


def _vif_scale_terms(reference: np.ndarray, distorted: np.ndarray, taps: np.ndarray) -> tuple[float, float]:
    """Numerator and denominator sums of VIF_P at one scale, with vifp_mscale's guards."""
    mean_ref, mean_dist = _filter_valid(reference, taps), _filter_valid(distorted, taps)
    var_ref = np.maximum(_filter_valid(reference * reference, taps) - mean_ref ** 2, 0.0)
    var_dist = np.maximum(_filter_valid(distorted * distorted, taps) - mean_dist ** 2, 0.0)
    covariance = _filter_valid(reference * distorted, taps) - mean_ref * mean_dist

    gain = covariance / (var_ref + VIF_EPS)
    var_noise = var_dist - gain * covariance
    flat_ref = var_ref < VIF_EPS
    gain[flat_ref] = 0.0
    var_noise[flat_ref] = var_dist[flat_ref]
    var_ref[flat_ref] = 0.0
    flat_dist = var_dist < VIF_EPS
    gain[flat_dist] = 0.0
    var_noise[flat_dist] = 0.0
    negative = gain < 0
    var_noise[negative] = var_dist[negative]
    gain[negative] = 0.0
    var_noise = np.maximum(var_noise, VIF_EPS)

    numerator = np.sum(np.log10(1.0 + gain ** 2 * var_ref / (var_noise + VIF_SIGMA_N_SQ)))
    denominator = np.sum(np.log10(1.0 + var_ref / VIF_SIGMA_N_SQ))
    return float(numerator), float(denominator)


def _vif_p(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Pixel-domain multiscale VIF (vifp_mscale): information kept over information available."""
    numerator = denominator = 0.0
    for scale in range(1, VIF_SCALES + 1):
        window = _vif_window(scale)
        taps = _gaussian_taps(window, window / VIF_WINDOW_TO_SIGMA)
        if scale > 1:
            reference = _filter_valid(reference, taps)[::2, ::2]
            distorted = _filter_valid(distorted, taps)[::2, ::2]
        scale_numerator, scale_denominator = _vif_scale_terms(reference, distorted, taps)
        numerator += scale_numerator
        denominator += scale_denominator
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(numerator) / denominator)


def visual_information_fidelity(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray) -> float:
    """VIF: VIF_P(VI,F) + VIF_P(IR,F), sources as references, on 0-255 (sigma_n^2 is in 8-bit units)."""
    return _vif_p(vi, fused) + _vif_p(ir, fused)


def _kumar_edges(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel/8 strength and orientation; borders mirrored without repeating the edge pixel."""
    vertical = _correlate(plane, NABF_SOBEL_V, cv2.BORDER_REFLECT_101)
    horizontal = _correlate(plane, NABF_SOBEL_H, cv2.BORDER_REFLECT_101)
    with np.errstate(divide="ignore", invalid="ignore"):
        orientation = np.nan_to_num(np.arctan(vertical / horizontal), nan=0.0)
    return np.hypot(horizontal, vertical), orientation


def _kumar_preservation(source: tuple[np.ndarray, np.ndarray],
                        fused: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Kumar's per-pixel edge preservation Q^{SF} = sqrt(Q_g * Q_alpha)."""
    (strength_s, angle_s), (strength_f, angle_f) = source, fused
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((strength_s == 0) | (strength_f == 0), 0.0,
                         np.minimum(strength_s, strength_f) / np.maximum(strength_s, strength_f))
    alignment = np.abs(np.abs(angle_s - angle_f) - np.pi / 2) * 2.0 / np.pi
    q_strength = NABF_NRG / (1.0 + np.exp(-NABF_KG * (ratio - NABF_SIGMA_G)))
    q_angle = NABF_NRA / (1.0 + np.exp(-NABF_KA * (alignment - NABF_SIGMA_A)))
    return np.sqrt(q_strength * q_angle)


def _kumar_weight(strength: np.ndarray) -> np.ndarray:
    """g^1.5 on edges at least Td strong, a small floor elsewhere."""
    return np.where(strength >= NABF_EDGE_THRESHOLD, strength ** NABF_WEIGHT_EXPONENT, NABF_WEIGHT_MIN)


def fusion_artifacts(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray) -> float:
    """Nabf (Kumar's modified N^{AB/F}): edge-weighted loss where F has stronger edges than both."""
    edges_vi, edges_ir, edges_fused = (_kumar_edges(p) for p in (vi, ir, fused))
    weight_vi, weight_ir = _kumar_weight(edges_vi[0]), _kumar_weight(edges_ir[0])
    artifact = (edges_fused[0] > edges_vi[0]) & (edges_fused[0] > edges_ir[0])
    loss = ((1.0 - _kumar_preservation(edges_vi, edges_fused)) * weight_vi
            + (1.0 - _kumar_preservation(edges_ir, edges_fused)) * weight_ir)
    return float(np.sum(loss * artifact) / np.sum(weight_vi + weight_ir))


def _hong_edges(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """conv2(.., 'same') Sobel strength and orientation; atan(Sy/Sx), pi/2 where Sx = 0.

    conv2 is a true convolution with zero padding: correlation with the flipped kernel.
    """
    grad_x = _correlate(plane, np.flip(QABF_SOBEL_X), cv2.BORDER_CONSTANT)
    grad_y = _correlate(plane, np.flip(QABF_SOBEL_Y), cv2.BORDER_CONSTANT)
    with np.errstate(divide="ignore", invalid="ignore"):
        orientation = np.where(grad_x == 0, np.pi / 2, np.arctan(grad_y / grad_x))
    return np.hypot(grad_x, grad_y), orientation


def _hong_preservation(source: tuple[np.ndarray, np.ndarray],
                       fused: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Q^{SF}: sigmoid strength and orientation preservation, with the port's tie quirk (G = g_F)."""
    (strength_s, angle_s), (strength_f, angle_f) = source, fused
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(strength_s > strength_f, strength_f / strength_s,
                         np.where(strength_s == strength_f, strength_f, strength_s / strength_f))
    alignment = 1.0 - np.abs(angle_s - angle_f) / (np.pi / 2)
    q_strength = QABF_TG / (1.0 + np.exp(QABF_KG * (ratio - QABF_DG)))
    q_angle = QABF_TA / (1.0 + np.exp(QABF_KA * (alignment - QABF_DA)))
    return q_strength * q_angle


def edge_preservation(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray, rescale: float = 1.0) -> float:
    """Qabf: source-edge-strength-weighted edge preservation; ``rescale`` is VIFB's extra x255."""
    edges_vi, edges_ir, edges_fused = (_hong_edges(p * rescale) for p in (vi, ir, fused))
    weighted = (_hong_preservation(edges_vi, edges_fused) * edges_vi[0]
                + _hong_preservation(edges_ir, edges_fused) * edges_ir[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(np.sum(weighted)) / np.sum(edges_vi[0] + edges_ir[0]))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """corr2: Pearson correlation over all pixels."""
    x_centred, y_centred = x - x.mean(), y - y.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(x_centred * y_centred)
                     / np.sqrt(np.sum(x_centred ** 2) * np.sum(y_centred ** 2)))


def correlation_of_differences(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray) -> float:
    """SCD (Aslantas & Bendes 2015): what F adds over one source should correlate with the other; a half where
    F adds nothing to its source counts 0 (corr2 gives NaN there), so a source itself as F has a finite SCD."""
    return added_correlation(ir, vi, fused) + added_correlation(vi, ir, fused)


def added_correlation(base: np.ndarray, other: np.ndarray, fused: np.ndarray) -> float:
    """SCD's half for ``other``: corr(F − base, other), 0 when F adds nothing to ``base``.

    With base = visible and other = the real infrared, it says whether what a visible-only method adds
    follows the real thermal image (the visible image itself scores 0).
    """
    added = np.asarray(fused, np.float64) - np.asarray(base, np.float64)
    if not added.any():
        return 0.0
    return _pearson(added, np.asarray(other, np.float64))


def _mean_squared_error(source: np.ndarray, fused: np.ndarray) -> float:
    """Textbook MSE."""
    return float(np.mean((source - fused) ** 2))


def _vifb_error(source: np.ndarray, fused: np.ndarray) -> float:
    """VIFB's "mse": sqrt(sum of squared errors) / (M*N), i.e. RMSE / sqrt(M*N)."""
    return float(np.sqrt(np.sum((source - fused) ** 2)) / source.size)


def peak_signal_to_noise(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray,
                         error: Callable[[np.ndarray, np.ndarray], float] = _mean_squared_error) -> float:
    """PSNR = 10 log10(255^2 / mean error over the two sources); ``error`` picks the convention."""
    mean_error = (error(vi, fused) + error(ir, fused)) / 2.0
    with np.errstate(divide="ignore"):
        return float(10.0 * np.log10(PEAK ** 2 / np.float64(mean_error)))


# ---------------------------------------------------------------- modes and the public entry point

Planes = Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]


def _channel_mean(metric: Callable[..., float], planes: Planes) -> float:
    """Run a metric on every (VI_k, IR_k, F_k) channel triple and average (VIFB colour rule)."""
    return float(np.mean([metric(*triple) for triple in planes]))


def _fused_channel_mean(metric: Callable[[np.ndarray], float], planes: Planes) -> float:
    """Fused-only metric averaged over the fused channels."""
    return float(np.mean([metric(fused) for _, _, fused in planes]))


def _side_by_side(metric: Callable[[np.ndarray], float], planes: Planes) -> float:
    """Fused-only metric on the channels placed side by side (VIFB SF quirk; plain SF on grey)."""
    return metric(np.hstack([fused for _, _, fused in planes]))


_SHARED_METRICS: dict[str, Callable[[Planes], float]] = {
    "AG": partial(_fused_channel_mean, average_gradient),
    "CE": partial(_channel_mean, cross_entropy),
    "EI": partial(_fused_channel_mean, edge_intensity),
    "EN": partial(_fused_channel_mean, entropy),
    "Qcb": partial(_channel_mean, chen_blum),
    "SF": partial(_side_by_side, spatial_frequency),
    "SSIM": partial(_channel_mean, structural_similarity),
    "SD": partial(_fused_channel_mean, standard_deviation),
    "VIF": partial(_channel_mean, visual_information_fidelity),
    "Nabf": partial(_channel_mean, fusion_artifacts),
    "SCD": partial(_channel_mean, correlation_of_differences),
}
_MODE_METRICS: dict[str, dict[str, Callable[[Planes], float]]] = {
    "gray": {
        "MI": partial(_channel_mean, mutual_information),
        "Qabf": partial(_channel_mean, edge_preservation),
        "PSNR": partial(_channel_mean, peak_signal_to_noise),
    },
    "vifb": {
        "MI": partial(_channel_mean, partial(mutual_information, log=np.log)),
        "Qabf": partial(_channel_mean, partial(edge_preservation, rescale=VIFB_QABF_RESCALE)),
        "PSNR": partial(_channel_mean, partial(peak_signal_to_noise, error=_vifb_error)),
    },
}


def _check_image(role: str, image: np.ndarray) -> None:
    """uint8, grey (HxW) or 3-channel colour (HxWx3), big enough for every metric."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{role} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{role} must be uint8 (an 8-bit image as cv2.imread returns it), got {image.dtype}")
    is_colour = image.ndim == 3 and image.shape[2] == COLOUR_CHANNELS
    if image.ndim != 2 and not is_colour:
        raise ValueError(f"{role} must be HxW grey or HxWx3 BGR, got shape {image.shape}")
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        raise ValueError(f"{role} is {image.shape[0]}x{image.shape[1]}; the metrics need at least "
                         f"{MIN_IMAGE_SIDE} pixels per side")


def _check_inputs(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray, mode: str,
                  names: Sequence[str]) -> None:
    """Raise ValueError naming the offending argument."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    unknown = [name for name in names if name not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRIC_NAMES)}")
    for role, image in (("vi", vi), ("ir", ir), ("fused", fused)):
        _check_image(role, image)
    for role, image in (("vi", vi), ("ir", ir)):
        if image.shape[:2] != fused.shape[:2]:
            raise ValueError(f"size mismatch: {role} has shape {image.shape}, fused has shape {fused.shape}")


def _luma(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of a BGR image (cv2's rounding), grey images unchanged."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _rgb_channel(image: np.ndarray, channel: int) -> np.ndarray:
    """Channel ``channel`` in MATLAB's RGB order of a BGR image; a grey image serves every channel."""
    return image if image.ndim == 2 else image[:, :, COLOUR_CHANNELS - 1 - channel]


def _planes(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray, mode: str) -> Planes:
    """The (VI, IR, F) float64 planes each metric runs on: one luma triple, or one per RGB channel."""
    if mode == "gray" or fused.ndim == 2:
        return [tuple(_luma(image).astype(np.float64) for image in (vi, ir, fused))]
    return [tuple(_rgb_channel(image, channel).astype(np.float64) for image in (vi, ir, fused))
            for channel in range(COLOUR_CHANNELS)]


def compute_metrics(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray, mode: str = "gray",
                    names: Iterable[str] | None = None) -> dict[str, float]:
    """Fusion metrics of ``fused`` against its visible and infrared sources.

    ``vi``, ``ir``, ``fused``: uint8, HxW grey or HxWx3 BGR, same height and width.
    ``mode``: "gray" or "vifb" (see the module docstring). ``names``: a subset of METRIC_NAMES
    (default all). Returns {name: value} in the order asked.

    The metrics run side by side on a thread per CPU core: numpy and OpenCV release the GIL, which
    roughly halves the wall time on two cores.
    """
    names = list(METRIC_NAMES if names is None else names)
    _check_inputs(vi, ir, fused, mode, names)
    planes = _planes(vi, ir, fused, mode)
    metrics = {**_SHARED_METRICS, **_MODE_METRICS[mode]}
    workers = max(1, min(len(names), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        values = pool.map(lambda name: metrics[name](planes), names)
        return dict(zip(names, values))
