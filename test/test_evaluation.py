"""Folder evaluation and ``dcmif eval`` on images generated in tmp_path."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from dcmif_ros import cli
from dcmif_ros.evaluation import metrics
from dcmif_ros.commands import eval as eval_command
from dcmif_ros.evaluation.scoring import evaluate_dirs, format_table, write_csv

SHAPE = (48, 64)
OTHER_SHAPE = (56, 64)
CSV_HEADER = "image,AG,CE,EI,EN,Qcb,SF,MI,SSIM,SD,VIF,Nabf,Qabf,SCD,PSNR"


def _image(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _write(folder: Path, name: str, image: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(folder / name), image)


def _folders(root: Path) -> tuple[Path, Path, Path]:
    return root / "vi", root / "ir", root / "fused"


def _write_triple(root: Path, stem: str, seed: int, ir_shape: tuple[int, ...] = SHAPE,
                  fused_suffix: str = ".png") -> None:
    vi, ir, fused = _folders(root)
    _write(vi, f"{stem}.png", _image(seed, (*SHAPE, 3)))
    _write(ir, f"{stem}.png", _image(seed + 1, ir_shape))
    _write(fused, f"{stem}{fused_suffix}", _image(seed + 2, (*SHAPE, 3)))


@pytest.fixture
def clean_set(tmp_path: Path) -> Path:
    """Two complete triples; the fused images use different extensions than the sources."""
    _write_triple(tmp_path, "a", 10)
    _write_triple(tmp_path, "b", 20, fused_suffix=".bmp")
    return tmp_path


@pytest.fixture
def messy_set(clean_set: Path) -> Path:
    """The clean set plus a stem missing its infrared, an orphan infrared, a size mismatch and a duplicate."""
    vi, ir, fused = _folders(clean_set)
    _write(vi, "no_ir.png", _image(30, (*SHAPE, 3)))
    _write(fused, "no_ir.png", _image(31, (*SHAPE, 3)))
    _write(ir, "orphan.png", _image(32, SHAPE))
    _write_triple(clean_set, "small_ir", 40, ir_shape=OTHER_SHAPE)
    _write_triple(clean_set, "twice", 50)
    _write(fused, "twice.bmp", _image(53, (*SHAPE, 3)))
    (vi / "notes.txt").write_text("not an image")
    return clean_set


def test_pairs_files_by_stem_whatever_their_extension(clean_set):
    evaluation = evaluate_dirs(*_folders(clean_set))
    assert list(evaluation.rows) == ["a", "b"]
    assert evaluation.errors == {}
    assert tuple(evaluation.rows["a"]) == metrics.METRIC_NAMES


def test_mean_is_the_per_metric_mean_of_the_rows(clean_set):
    evaluation = evaluate_dirs(*_folders(clean_set), mode="vifb")
    for name in metrics.METRIC_NAMES:
        expected = np.mean([row[name] for row in evaluation.rows.values()])
        assert evaluation.mean[name] == pytest.approx(expected)


def test_unmatched_names_and_size_mismatches_are_reported_by_name_and_the_rest_scored(messy_set):
    evaluation = evaluate_dirs(*_folders(messy_set))
    assert list(evaluation.rows) == ["a", "b"]
    assert set(evaluation.errors) == {"no_ir", "orphan", "small_ir", "twice"}
    assert evaluation.errors["no_ir"] == "no ir image"
    assert evaluation.errors["orphan"] == "no vi, fused image"
    assert "(56, 64)" in evaluation.errors["small_ir"] and "(48, 64, 3)" in evaluation.errors["small_ir"]
    assert evaluation.errors["twice"] == "fused: several files: twice.bmp, twice.png"


def test_nothing_to_score_raises_with_the_reasons(tmp_path):
    _write_triple(tmp_path, "small_ir", 60, ir_shape=OTHER_SHAPE)
    with pytest.raises(ValueError, match="nothing to evaluate.*small_ir.*size mismatch"):
        evaluate_dirs(*_folders(tmp_path))


def test_a_missing_folder_is_named(clean_set):
    vi, ir, _ = _folders(clean_set)
    with pytest.raises(FileNotFoundError, match="fused folder not found"):
        evaluate_dirs(vi, ir, clean_set / "absent")


def test_csv_has_the_report_header_and_one_row_per_scored_image(messy_set, tmp_path):
    evaluation = evaluate_dirs(*_folders(messy_set))
    path = write_csv(evaluation, tmp_path / "out" / "metrics.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == CSV_HEADER
    assert len(lines) == 1 + len(evaluation.rows)
    first = next(csv.DictReader(lines))
    assert first["image"] == "a" and float(first["AG"]) == evaluation.rows["a"]["AG"]


def test_table_lists_each_image_then_the_mean(clean_set):
    table = format_table(evaluate_dirs(*_folders(clean_set)))
    lines = table.splitlines()
    assert lines[0].split() == CSV_HEADER.split(",")
    assert [line.split()[0] for line in lines[2:4]] == ["a", "b"]
    assert lines[-2].startswith("mean")
    assert len({len(line) for line in lines[:-1] if not line.startswith("-")}) == 1  # aligned columns


def test_cli_eval_prints_the_table_and_writes_the_csv(clean_set, tmp_path, capsys):
    vi, ir, fused = _folders(clean_set)
    out = tmp_path / "metrics.csv"
    code = cli.main(["eval", "--vi", str(vi), "--ir", str(ir), "--fused", str(fused),
                     "--mode", "vifb", "--csv", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean" in printed and "mode vifb" in printed
    assert out.read_text().splitlines()[0] == CSV_HEADER


def test_cli_eval_reports_skipped_images_and_exits_1(messy_set, capsys):
    vi, ir, fused = _folders(messy_set)
    assert cli.main(["eval", "--vi", str(vi), "--ir", str(ir), "--fused", str(fused)]) == 1
    errors = capsys.readouterr().err
    assert "skipped small_ir: size mismatch" in errors and "skipped orphan: no vi, fused image" in errors


def test_cli_eval_missing_folder_exits_2(tmp_path, capsys):
    missing = str(tmp_path / "absent")
    assert cli.main(["eval", "--vi", missing, "--ir", missing, "--fused", missing]) == 2
    assert "vi folder not found" in capsys.readouterr().err


def test_cli_modes_match_the_metrics_modes():
    assert eval_command.MODES == metrics.MODES


def test_an_undecodable_file_is_named_with_its_folder(clean_set):
    _, _, fused = _folders(clean_set)
    (fused / "c.png").write_bytes(b"not a png")
    _write_triple(clean_set, "c", 60)
    (fused / "c.png").write_bytes(b"not a png")
    evaluation = evaluate_dirs(*_folders(clean_set))
    assert evaluation.errors["c"] == f"cannot decode {fused / 'c.png'}"


def test_a_degenerate_image_does_not_turn_the_mean_into_nan_or_inf(clean_set):
    vi, ir, fused = _folders(clean_set)
    for folder, channels in ((vi, (3,)), (ir, ()), (fused, (3,))):
        _write(folder, "black.png", np.zeros((*SHAPE, *channels), np.uint8))
    evaluation = evaluate_dirs(vi, ir, fused)
    assert evaluation.non_finite.get("black"), "an all-black triple has some NaN or inf metric"
    assert all(np.isfinite(value) for value in evaluation.mean.values()), evaluation.mean
    kept = [name for name in evaluation.mean if name not in evaluation.non_finite["black"]]
    assert all(evaluation.mean[name] == pytest.approx(np.mean([row[name] for row in evaluation.rows.values()]))
               for name in kept)
    assert "left out of the mean as NaN or inf: black: " in format_table(evaluation)


def test_cli_eval_with_an_unwritable_csv_fails_in_one_line(clean_set, unwritable_path, capsys):
    vi, ir, fused = _folders(clean_set)
    csv_path = unwritable_path / "metrics.csv"
    code = cli.main(["eval", "--vi", str(vi), "--ir", str(ir), "--fused", str(fused), "--csv", str(csv_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dcmif eval: error:") and err.count("\n") == 1, err
