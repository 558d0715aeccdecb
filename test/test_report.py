"""``dcmif report`` and the method registry, on dataset folders generated here."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity as skimage_ssim

from dcmif_ros import cli
from dcmif_ros.evaluation import methods
from dcmif_ros.evaluation.methods import Method, MethodOutput, make_method, max_luminance_fusion, register_alias
from dcmif_ros.evaluation.metrics import HIGHER_IS_BETTER, METRIC_NAMES, compute_metrics
from dcmif_ros.evaluation.report import (
    CLOSENESS_HIGHER_IS_BETTER, FIGURE_GAP, FIGURE_LABEL_HEIGHT, FIGURE_TILE_HEIGHT, VISIBLE_LUMINANCE_LABEL,
    build_report, infrared_closeness,
)
from dcmif_ros.image_codec import luminance
from dcmif_ros.training.data import collect_pairs

SHAPE = (48, 64)  # height, width: above the metrics' minimum side
PAIRS_PER_DATASET = 7  # validation: pairs 0 and 5
VALIDATION_PAIRS = 2


def smooth_noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return cv2.GaussianBlur(noise, (7, 7), 0)


def make_dataset(root: Path, seed: int, ir_shape_of: dict[int, tuple[int, int]] | None = None) -> Path:
    for index in range(PAIRS_PER_DATASET):
        for sub, shape in (("vi", (*SHAPE, 3)), ("ir", (ir_shape_of or {}).get(index, SHAPE))):
            (root / sub).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / sub / f"{index:03d}.png"), smooth_noise(seed + index * 2, shape))
    return root


def oracle(visible_bgr: np.ndarray, infrared: np.ndarray) -> MethodOutput:
    """A stand-in dual-modal method whose pseudo-IR is the real IR."""
    return MethodOutput(max_luminance_fusion(visible_bgr, infrared), pseudo_ir=infrared.copy())


ORACLE = Method("oracle", uses_infrared=True, fuse=oracle)


def table(markdown: str, section: str, title: str) -> dict[str, dict[str, str]]:
    """Rows of the table under ``### title`` in ``## section...``: {row label: {column: cell}}."""
    part = markdown.split(f"## {section}", 1)[1].split(f"### {title}", 1)[1]
    lines = [line for line in part.splitlines() if line.startswith("|")]
    end = next((i for i in range(1, len(lines)) if lines[i].startswith("|  |")), len(lines))
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:end]]
    return {row[0]: dict(zip(header[1:], row[1:])) for row in rows}


def number(cell: str) -> float:
    return float(cell.strip("*"))


@pytest.fixture
def datasets(tmp_path) -> list[Path]:
    return [make_dataset(tmp_path / "alpha", 100), make_dataset(tmp_path / "beta", 200)]


def test_fusion_table_means_and_bold_best_per_column(datasets, tmp_path):
    visible, maximum = make_method("visible"), make_method("max")
    files = build_report(datasets, [visible, maximum, ORACLE], tmp_path / "out", figure_scenes=1)

    markdown = files.markdown.read_text()
    for dataset in datasets:
        assert f"## {dataset.name}\n\n{VALIDATION_PAIRS} of {VALIDATION_PAIRS} validation pairs scored." in markdown
        rows = table(markdown, dataset.name, "Fusion quality")
        assert [(label, row["inputs"]) for label, row in rows.items()] == [
            ("visible", "VIS"), ("max", "VIS+IR"), ("oracle", "VIS+IR")]
        pairs = collect_pairs([dataset], "val")
        assert len(pairs) == VALIDATION_PAIRS
        visible_means = np.mean([list(compute_metrics(cv2.imread(str(p.visible_path)),
                                                      cv2.imread(str(p.infrared_path), cv2.IMREAD_GRAYSCALE),
                                                      cv2.imread(str(p.visible_path))).values())
                                 for p in pairs], axis=0)
        for name, value in zip(METRIC_NAMES, visible_means):
            column = f"{name} {'↑' if HIGHER_IS_BETTER[name] else '↓'}"
            assert rows["visible"][column].strip("*") == ("nan" if np.isnan(value) else f"{value:.4f}")
            cells = [rows[label][column] for label in rows]
            numbers = [number(cell) for cell in cells if cell.strip("*") != "nan"]
            best = max(numbers) if HIGHER_IS_BETTER[name] else min(numbers)
            for cell in cells:
                assert cell.startswith("**") == (cell.strip("*") != "nan" and number(cell) == best), (name, cells)


def test_closeness_table_compares_pseudo_ir_with_the_luminance(datasets, tmp_path):
    files = build_report(datasets[:1], [make_method("visible"), ORACLE], tmp_path / "out", figure_scenes=0)

    rows = table(files.markdown.read_text(), datasets[0].name, "Pseudo-infrared vs. real infrared")
    assert list(rows) == [VISIBLE_LUMINANCE_LABEL, "oracle pseudo-IR"]
    assert rows["oracle pseudo-IR"] == {"SSIM ↑": "**1.0000**", "PSNR ↑": "**inf**", "L1 ↓": "**0.0000**"}
    pairs = collect_pairs(datasets[:1], "val")
    expected = np.mean([list(infrared_closeness(luminance(cv2.imread(str(p.visible_path))),
                                                cv2.imread(str(p.infrared_path), cv2.IMREAD_GRAYSCALE)).values())
                        for p in pairs], axis=0)
    for (name, higher), value in zip(CLOSENESS_HIGHER_IS_BETTER.items(), expected):
        assert rows[VISIBLE_LUMINANCE_LABEL][f"{name} {'↑' if higher else '↓'}"] == f"{value:.4f}"
    assert files.figure is None


def test_infrared_closeness_matches_independent_definitions():
    infrared, estimate = smooth_noise(1, SHAPE), smooth_noise(2, SHAPE)
    closeness = infrared_closeness(estimate, infrared)
    error = infrared.astype(np.float64) - estimate
    assert closeness["PSNR"] == pytest.approx(10 * np.log10(255.0 ** 2 / np.mean(error ** 2)))
    assert closeness["L1"] == pytest.approx(np.mean(np.abs(error)) / 255.0)
    wang = skimage_ssim(infrared, estimate, data_range=255, gaussian_weights=True, sigma=1.5,
                        use_sample_covariance=False)
    assert closeness["SSIM"] == pytest.approx(wang, abs=1e-6)


def test_figure_has_a_row_per_scene_and_a_tile_per_method(datasets, tmp_path):
    methods_used = [make_method("visible"), make_method("max")]
    files = build_report(datasets, methods_used, tmp_path / "out", figure_scenes=2)

    figure = cv2.imread(str(files.figure))
    tile_width = round(SHAPE[1] * FIGURE_TILE_HEIGHT / SHAPE[0])
    row_height = 2 * FIGURE_LABEL_HEIGHT + FIGURE_TILE_HEIGHT
    tiles = 2 + len(methods_used)  # VIS | IR | each method
    scenes = len(datasets) * 2
    assert figure.shape == (scenes * row_height + (scenes - 1) * FIGURE_GAP,
                            tiles * tile_width + (tiles - 1) * FIGURE_GAP, 3)
    first_pair = collect_pairs(datasets[:1], "val")[0]
    top = 2 * FIGURE_LABEL_HEIGHT
    vis_tile = figure[top:top + FIGURE_TILE_HEIGHT, :tile_width]
    expected = cv2.resize(cv2.imread(str(first_pair.visible_path)), (tile_width, FIGURE_TILE_HEIGHT),
                          interpolation=cv2.INTER_AREA)
    # PNG round trip of the figure is lossless.
    np.testing.assert_array_equal(vis_tile, expected)
    assert f"![VIS, IR and each method's fused image per scene]({files.figure.name})" in files.markdown.read_text()


def test_unscorable_pairs_are_listed_and_left_out_for_every_method(tmp_path):
    dataset = make_dataset(tmp_path / "gamma", 300, ir_shape_of={5: (40, 64)})
    files = build_report([dataset], [make_method("visible"), ORACLE], tmp_path / "out", figure_scenes=1)
    markdown = files.markdown.read_text()
    assert "1 of 2 validation pairs scored." in markdown
    assert re.search(r"- gamma/005: visible 64x48 and infrared 64x40 differ in size", markdown)


def test_methods_must_have_distinct_labels(datasets, tmp_path):
    with pytest.raises(ValueError, match="distinct labels"):
        build_report(datasets, [make_method("visible"), make_method("visible")], tmp_path / "out", figure_scenes=1)


def test_two_models_with_one_file_name_are_labelled_by_their_specs(random_tiny_onnx, tmp_path):
    copy = tmp_path / "other_run" / random_tiny_onnx.name
    copy.parent.mkdir()
    for source in random_tiny_onnx.parent.glob(random_tiny_onnx.stem + ".*"):
        shutil.copy(source, copy.parent / source.name)
    specs = [f"dcmif:{random_tiny_onnx}:none", f"dcmif:{copy}:none", "max"]
    built = [make_method(spec, methods.MethodOptions(provider="cpu")) for spec in specs]
    assert built[0].label == built[1].label  # each labelled by its file name
    labels = [method.label for method in methods.label_apart(built, specs)]
    assert labels == [*specs[:2], "max"]
    methods.require_distinct_labels(methods.label_apart(built, specs))


def test_method_registry_builds_aliases_and_rejects_bad_specs(random_tiny_onnx, monkeypatch):
    monkeypatch.setattr(methods, "_ALIASES", dict(methods._ALIASES))
    register_alias("random-noprior", f"dcmif:{random_tiny_onnx}:none")
    with pytest.raises(ValueError, match="taken"):
        register_alias("visible", "max")

    method = make_method("random-noprior", methods.MethodOptions(provider="cpu"))
    try:
        frame, infrared = smooth_noise(3, (*SHAPE, 3)), smooth_noise(4, SHAPE)
        output = method(frame, infrared)
        assert (method.label, method.uses_infrared) == ("random-noprior", False)
        assert output.fused.shape == frame.shape and output.pseudo_ir.shape == SHAPE
    finally:
        method.close()
    direct = make_method(f"dcmif:{random_tiny_onnx}:none", methods.MethodOptions(provider="cpu"))
    direct.close()
    assert direct.label == f"dcmif:{random_tiny_onnx.stem}:none"

    with pytest.raises(ValueError, match="unknown method 'seafusion'; known: visible, max, dcmif"):
        make_method("seafusion")
    with pytest.raises(ValueError, match="takes no argument"):
        make_method("max:2")
    broken = Method("half-size", uses_infrared=False, fuse=lambda vis, ir: vis[::2])
    with pytest.raises(ValueError, match="method half-size returned uint8"):
        broken(smooth_noise(5, (*SHAPE, 3)), smooth_noise(6, SHAPE))


def test_max_baseline_keeps_the_visible_colour_and_takes_the_brighter_luminance():
    visible = np.full((*SHAPE, 3), (90, 110, 130), np.uint8)
    infrared = np.zeros(SHAPE, np.uint8)
    infrared[:, SHAPE[1] // 2:] = 200
    fused = max_luminance_fusion(visible, infrared)
    # The 8-bit YCrCb round trip (the engine's too) may move a channel by one level.
    np.testing.assert_allclose(fused[:, : SHAPE[1] // 2], visible[:, : SHAPE[1] // 2], atol=1)
    luminance = cv2.cvtColor(fused, cv2.COLOR_BGR2YCrCb)
    assert abs(int(luminance[0, -1, 0]) - 200) <= 1
    original = cv2.cvtColor(visible, cv2.COLOR_BGR2YCrCb)
    assert np.abs(luminance[0, -1, 1:].astype(int) - original[0, -1, 1:]).max() <= 2


def test_cli_report_writes_the_report_and_the_figure(datasets, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["report", "--data", *map(str, datasets), "--methods", "visible", "max",
                     "--out", str(out), "--max-pairs", "1"]) == 0
    assert f"wrote {out / 'report.md'} and {out / 'comparison.png'}" in capsys.readouterr().out
    assert "1 of 1 validation pairs scored." in (out / "report.md").read_text()
    assert cli.main(["report", "--data", str(datasets[0]), "--methods", "nope", "--out", str(out)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
