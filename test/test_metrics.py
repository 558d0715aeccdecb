"""Fusion metrics: VIFB's stored outputs where the shared data is present, properties on generated images."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity as skimage_ssim

from dcmif_ros.evaluation import metrics
from dcmif_ros.evaluation.metrics import HIGHER_IS_BETTER, METRIC_NAMES, compute_metrics

DATA_ROOT = Path(os.environ.get("DCMIF_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
FIXTURES = DATA_ROOT / "metric_fixtures"
EXPECTED_VIFB = FIXTURES / "expected_vifb.csv"
FIXTURE_RELATIVE_TOLERANCE = 1e-3  # the CSV keeps VIFB's 5 significant digits

VIFB_COLUMNS = {
    "Avg_gradient": "AG", "Cross_entropy": "CE", "Edge_intensity": "EI", "Entropy": "EN", "Mutinf": "MI",
    "Psnr": "PSNR", "Qabf": "Qabf", "Qcb": "Qcb", "Spatial_frequency": "SF", "Ssim": "SSIM", "Variance": "SD",
}
VIFB_COLUMNS_NOT_IMPLEMENTED = {"Qcv", "Rmse"}  # not in our metric set
VIFB_KEY_COLUMNS = {"image", "method"}

SOURCE_METRICS = ("CE", "Qcb", "MI", "SSIM", "VIF", "Nabf", "Qabf", "SCD", "PSNR")
FUSED_ONLY_METRICS = ("AG", "EI", "EN", "SF", "SD")
SCENE_SHAPE = (72, 96)
SCENE_BLUR_SIGMA = 2.0
EXACT = 1e-9
# Identical images: every strength ratio is a tie (the port's G = g_F >= 1, or weight 0), every angle agrees.
QABF_IDENTITY = (metrics.QABF_TG / (1 + math.exp(metrics.QABF_KG * (1 - metrics.QABF_DG)))
                 * metrics.QABF_TA / (1 + math.exp(metrics.QABF_KA * (1 - metrics.QABF_DA))))

needs_fixtures = pytest.mark.skipif(
    not EXPECTED_VIFB.is_file(),
    reason=f"VIFB metric fixtures not found at {FIXTURES}; set DCMIF_DATA to the shared data folder",
)


def _expected_rows() -> list[dict[str, str]]:
    if not EXPECTED_VIFB.is_file():
        return []
    with EXPECTED_VIFB.open(newline="") as stream:
        return list(csv.DictReader(stream))


def _read_fixture(name: str) -> np.ndarray:
    image = cv2.imread(str(FIXTURES / f"{name}.jpg"), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"cannot read fixture {name}.jpg"
    return image


def _scene(seed: int, shape: tuple[int, ...] = SCENE_SHAPE) -> np.ndarray:
    """A smooth random uint8 image spanning exactly 0..255, so no metric meets a degenerate input."""
    noise = np.random.default_rng(seed).normal(size=shape)
    smooth = cv2.GaussianBlur(noise, (0, 0), SCENE_BLUR_SIGMA)
    stretched = (smooth - smooth.min()) / (smooth.max() - smooth.min()) * metrics.PEAK
    return np.round(stretched).astype(np.uint8)


def _colour_scene(seed: int) -> np.ndarray:
    """Three unrelated scenes as the B, G, R channels."""
    return np.dstack([_scene(seed + channel) for channel in range(metrics.COLOUR_CHANNELS)])


def _blend(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.round((a.astype(np.float64) + b) / 2).astype(np.uint8)


@pytest.fixture(scope="module")
def grey_triple() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vi, ir = _scene(1), _scene(2)
    return vi, ir, _blend(vi, ir)


# ---------------------------------------------------------------- VIFB reference values

@needs_fixtures
@pytest.mark.parametrize("row", _expected_rows() or [None],
                         ids=lambda row: f"{row['image']}_{row['method']}" if row else "none")
def test_vifb_mode_reproduces_vifb_toolbox_outputs(row):
    vi, ir = _read_fixture(f"{row['image']}_vi"), _read_fixture(f"{row['image']}_ir")
    fused = _read_fixture(f"{row['image']}_{row['method']}")
    values = compute_metrics(vi, ir, fused, mode="vifb")
    errors = {ours: abs(values[ours] - float(row[theirs])) / abs(float(row[theirs]))
              for theirs, ours in VIFB_COLUMNS.items() if row.get(theirs)}
    assert errors, "no comparable column in the fixture"
    assert {name: e for name, e in errors.items() if e > FIXTURE_RELATIVE_TOLERANCE} == {}


@needs_fixtures
def test_every_vifb_fixture_column_is_mapped_or_known_to_be_skipped():
    with EXPECTED_VIFB.open(newline="") as stream:
        columns = set(next(csv.reader(stream)))
    assert columns - VIFB_KEY_COLUMNS - VIFB_COLUMNS_NOT_IMPLEMENTED - set(VIFB_COLUMNS) == set()


# ---------------------------------------------------------------- API

def test_metric_names_are_the_report_columns_in_order():
    assert METRIC_NAMES == tuple("AG,CE,EI,EN,Qcb,SF,MI,SSIM,SD,VIF,Nabf,Qabf,SCD,PSNR".split(","))
    assert set(HIGHER_IS_BETTER) == set(METRIC_NAMES)
    assert [name for name in METRIC_NAMES if not HIGHER_IS_BETTER[name]] == ["CE", "Nabf"]


@pytest.mark.parametrize("mode", metrics.MODES)
def test_returns_every_metric_as_a_float_in_column_order(grey_triple, mode):
    values = compute_metrics(*grey_triple, mode=mode)
    assert tuple(values) == METRIC_NAMES
    assert all(type(value) is float and math.isfinite(value) for value in values.values())


def test_names_selects_metrics_in_the_order_asked(grey_triple):
    assert tuple(compute_metrics(*grey_triple, names=["PSNR", "AG"])) == ("PSNR", "AG")


def test_size_mismatch_names_both_shapes():
    vi, ir = _scene(1), _scene(2, (SCENE_SHAPE[0] + 8, SCENE_SHAPE[1]))
    with pytest.raises(ValueError, match=r"ir has shape \(80, 96\).*fused has shape \(72, 96\)"):
        compute_metrics(vi, ir, vi)


@pytest.mark.parametrize("bad, message", [
    (np.zeros(SCENE_SHAPE, np.float32), "fused must be uint8.*float32"),
    (np.zeros(SCENE_SHAPE, np.uint16), "fused must be uint8.*uint16"),
    (np.zeros((*SCENE_SHAPE, 4), np.uint8), r"HxW grey or HxWx3 BGR.*\(72, 96, 4\)"),
    (np.zeros((8, 8), np.uint8), "at least"),
])
def test_bad_fused_image_is_refused_with_the_reason(grey_triple, bad, message):
    vi, ir, _ = grey_triple
    with pytest.raises(ValueError, match=message):
        compute_metrics(vi[:bad.shape[0], :bad.shape[1]], ir[:bad.shape[0], :bad.shape[1]], bad)


def test_unknown_mode_and_metric_are_refused(grey_triple):
    with pytest.raises(ValueError, match="unknown mode 'rgb'"):
        compute_metrics(*grey_triple, mode="rgb")
    with pytest.raises(ValueError, match="unknown metric.*Qcv"):
        compute_metrics(*grey_triple, names=["AG", "Qcv"])


# ---------------------------------------------------------------- properties on generated images

@pytest.mark.parametrize("mode", metrics.MODES)
def test_fusing_an_image_with_itself_reaches_the_ideal_values(mode):
    image = _scene(3)
    values = compute_metrics(image, image, image, mode=mode)
    assert values["SSIM"] == pytest.approx(2.0, abs=EXACT)
    assert values["VIF"] == pytest.approx(2.0, abs=1e-6)
    assert values["Qcb"] == pytest.approx(1.0, abs=EXACT)
    assert values["CE"] == 0.0
    assert values["Nabf"] == 0.0
    assert values["Qabf"] == pytest.approx(QABF_IDENTITY, abs=1e-3)
    assert values["PSNR"] == math.inf
    # F adds nothing to either source: both halves are 0/0 in MATLAB's corr2 (NaN); counted 0 here, so a
    # source itself (the visible image as a "fusion") has an SCD to compare against
    assert values["SCD"] == 0.0


def test_scd_of_the_visible_image_itself_is_its_correlation_with_the_difference_to_the_infrared():
    vi, ir = _scene(5), _scene(6)
    scd = compute_metrics(vi, ir, vi, mode="gray", names=["SCD"])["SCD"]
    assert math.isfinite(scd)
    assert scd == pytest.approx(float(np.corrcoef((vi.astype(float) - ir).ravel(), vi.astype(float).ravel())[0, 1]),
                                abs=1e-9)


def test_mutual_information_of_an_image_with_itself_is_twice_its_entropy_in_bits():
    image = _scene(4)
    values = compute_metrics(image, image, image, names=["MI", "EN"])
    assert values["MI"] == pytest.approx(2 * values["EN"], abs=EXACT)


@pytest.mark.parametrize("mode", metrics.MODES)
def test_a_constant_fused_image_has_no_detail(grey_triple, mode):
    vi, ir, _ = grey_triple
    constant = np.full_like(vi, 128)
    values = compute_metrics(vi, ir, constant, mode=mode, names=FUSED_ONLY_METRICS)
    assert values == {name: 0.0 for name in FUSED_ONLY_METRICS}


@pytest.mark.parametrize("mode", metrics.MODES)
def test_source_metrics_do_not_depend_on_which_source_is_which(grey_triple, mode):
    vi, ir, fused = grey_triple
    forward = compute_metrics(vi, ir, fused, mode=mode, names=SOURCE_METRICS)
    swapped = compute_metrics(ir, vi, fused, mode=mode, names=SOURCE_METRICS)
    assert swapped == pytest.approx(forward, rel=EXACT)


def test_values_lie_in_their_documented_ranges(grey_triple):
    values = compute_metrics(*grey_triple)
    assert 0 < values["EN"] <= math.log2(metrics.GREY_LEVELS)
    for name in ("Qcb", "Qabf", "Nabf"):
        assert 0 <= values[name] <= 1, name
    assert -2 <= values["SCD"] <= 2 and -2 <= values["SSIM"] <= 2
    assert values["MI"] > 0 and values["VIF"] > 0
    assert values["AG"] > 0 and values["EI"] > values["AG"] and values["SD"] > 0 and values["SF"] > 0


def test_gray_and_vifb_modes_agree_on_grey_images_where_their_definitions_do(grey_triple):
    gray, vifb = compute_metrics(*grey_triple, mode="gray"), compute_metrics(*grey_triple, mode="vifb")
    shared = [name for name in METRIC_NAMES if name not in ("MI", "Qabf", "PSNR")]
    assert {name: vifb[name] for name in shared} == {name: gray[name] for name in shared}
    # Qabf differs only in VIFB's extra x255 on tied edge strengths; MI only in the unit (nats).
    assert vifb["Qabf"] == pytest.approx(gray["Qabf"], rel=1e-3)
    assert vifb["MI"] == pytest.approx(gray["MI"] * math.log(2), rel=EXACT)


def test_mutual_information_ignores_vifbs_min_max_stretch_on_8bit_images(grey_triple):
    vi, ir, fused = grey_triple
    low_contrast_ir = (ir // 3 + 40).astype(np.uint8)
    stretched = np.round((low_contrast_ir - low_contrast_ir.min()) * metrics.PEAK
                         / np.ptp(low_contrast_ir)).astype(np.uint8)
    assert (compute_metrics(vi, low_contrast_ir, fused, mode="vifb", names=["MI"])
            == pytest.approx(compute_metrics(vi, stretched, fused, mode="vifb", names=["MI"]), rel=EXACT))


def test_gray_mode_scores_colour_images_on_their_bt601_luma():
    vi, ir, fused = _colour_scene(5), _scene(8), _colour_scene(9)
    luma = [cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image in (vi, fused)]
    assert compute_metrics(vi, ir, fused) == compute_metrics(luma[0], ir, luma[1])


def test_vifb_mode_averages_channels_and_puts_them_side_by_side_for_sf(grey_triple):
    vi, ir, fused = grey_triple
    as_colour = [np.dstack([image] * metrics.COLOUR_CHANNELS) for image in (vi, ir, fused)]
    grey, colour = compute_metrics(vi, ir, fused, mode="vifb"), compute_metrics(*as_colour, mode="vifb")
    not_sf = [name for name in METRIC_NAMES if name != "SF"]
    expected = {name: grey[name] for name in not_sf}
    assert {name: colour[name] for name in not_sf} == pytest.approx(expected, rel=EXACT)
    side_by_side = np.hstack([fused] * metrics.COLOUR_CHANNELS).astype(np.float64)
    assert colour["SF"] == pytest.approx(metrics.spatial_frequency(side_by_side), rel=EXACT)


def test_vifb_mode_reads_bgr_and_lays_channels_out_in_matlab_rgb_order(grey_triple):
    vi, ir, _ = grey_triple
    blue, green, red = _scene(12), _scene(13), _scene(14)
    fused = np.dstack([blue, green, red])
    sf = compute_metrics(vi, ir, fused, mode="vifb", names=["SF"])["SF"]
    rgb = np.hstack([red, green, blue]).astype(np.float64)
    bgr = np.hstack([blue, green, red]).astype(np.float64)
    assert sf == pytest.approx(metrics.spatial_frequency(rgb), rel=EXACT)
    assert sf != pytest.approx(metrics.spatial_frequency(bgr), rel=EXACT)


def test_vifb_mode_scores_a_grey_fused_image_against_the_luma_of_colour_sources():
    vi, ir, fused = _colour_scene(15), _scene(18), _scene(19)
    luma = cv2.cvtColor(vi, cv2.COLOR_BGR2GRAY)
    assert compute_metrics(vi, ir, fused, mode="vifb") == compute_metrics(luma, ir, fused, mode="vifb")


def test_each_ssim_term_equals_scikit_image_with_the_wang_settings(grey_triple):
    vi, _, fused = grey_triple
    expected = skimage_ssim(fused.astype(np.float64), vi.astype(np.float64), data_range=metrics.PEAK,
                            gaussian_weights=True, sigma=metrics.SSIM_SIGMA, use_sample_covariance=False)
    ssim_sum = compute_metrics(vi, vi, fused, names=["SSIM"])["SSIM"]
    assert ssim_sum == pytest.approx(2 * expected, rel=EXACT)


def test_psnr_is_the_textbook_form_on_the_mean_mse(grey_triple):
    vi, ir, fused = (image.astype(np.float64) for image in grey_triple)
    mean_mse = (np.mean((vi - fused) ** 2) + np.mean((ir - fused) ** 2)) / 2
    psnr = compute_metrics(*grey_triple, names=["PSNR"])["PSNR"]
    assert psnr == pytest.approx(10 * math.log10(metrics.PEAK ** 2 / mean_mse), rel=EXACT)
