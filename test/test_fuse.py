"""``dcmif fuse`` on images generated here, through a random tiny model, and the still-image prior rule."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dcmif_ros import cli
from dcmif_ros.commands.fuse import GATE_FOLDER, PSEUDO_IR_FOLDER
from dcmif_ros.image_codec import read_image
from dcmif_ros.evaluation.methods import StillImageFuser
from dcmif_ros.inference.pipeline import FusionPipeline, PipelineConfig

ODD_SHAPE = (23, 37)  # height, width: not a multiple of the model's padding


def smooth_noise(seed: int, shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    high = np.iinfo(dtype).max
    noise = np.random.default_rng(seed).integers(0, high, shape, dtype=dtype, endpoint=True)
    return cv2.GaussianBlur(noise, (5, 5), 0)


def write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def inputs(tmp_path) -> Path:
    """Grey, colour JPEG, RGBA, 16-bit grey and a wide image, plus a text file and a corrupt PNG."""
    folder = tmp_path / "in"
    write(folder / "grey.png", smooth_noise(1, ODD_SHAPE))
    write(folder / "colour.jpg", smooth_noise(2, (*ODD_SHAPE, 3)))
    write(folder / "rgba.png", smooth_noise(3, (*ODD_SHAPE, 4)))
    write(folder / "deep.png", smooth_noise(4, ODD_SHAPE, np.uint16))
    write(folder / "wide.png", smooth_noise(5, (9, 300, 3)))
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / ".hidden.png").write_bytes(b"left out")
    return folder


def model_args(model: Path, prior: str = "none") -> list[str]:
    return ["--model", str(model), "--provider", "cpu", "--prior", prior]


@pytest.fixture(scope="module")
def pipeline(random_tiny_onnx):
    """The random model with the embedded prior, for the expected outputs."""
    with FusionPipeline(PipelineConfig(model_path=random_tiny_onnx, provider="cpu", prior="embedded",
                                       synchronous_prior=True)) as pipeline:
        yield pipeline


def test_fuse_writes_every_readable_image_and_reports_the_rest(inputs, tmp_path, random_tiny_onnx, capsys):
    out = tmp_path / "out"
    code = cli.main(["fuse", str(inputs), "--out", str(out), "--save-pseudo-ir", "--save-gate",
                     *model_args(random_tiny_onnx)])

    assert code == 1
    captured = capsys.readouterr()
    assert "fused 5 image(s)" in captured.out
    assert f"skipped {inputs / 'notes.txt'}" in captured.err and f"skipped {inputs / 'broken.png'}" in captured.err
    assert ".hidden" not in captured.err
    good = ["colour", "deep", "grey", "rgba", "wide"]
    for folder in (out, out / PSEUDO_IR_FOLDER, out / GATE_FOLDER):
        assert sorted(p.stem for p in folder.glob("*.png")) == good
    with FusionPipeline(PipelineConfig(model_path=random_tiny_onnx, provider="cpu", prior="none")) as pipeline:
        for source in sorted(inputs.iterdir()):
            if source.stem not in good:
                continue
            expected = pipeline.process(read_image(source), want_gate=True)
            fused = cv2.imread(str(out / f"{source.stem}.png"), cv2.IMREAD_UNCHANGED)
            pseudo = cv2.imread(str(out / PSEUDO_IR_FOLDER / f"{source.stem}.png"), cv2.IMREAD_UNCHANGED)
            gate = cv2.imread(str(out / GATE_FOLDER / f"{source.stem}.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(fused, expected.fused)
            np.testing.assert_array_equal(pseudo, expected.pseudo_ir)
            assert gate.shape == pseudo.shape == expected.fused.shape[:2] and gate.dtype == np.uint8


def test_fuse_without_extras_writes_only_fused_images(inputs, tmp_path, random_tiny_onnx):
    out = tmp_path / "out"
    assert cli.main(["fuse", str(inputs / "grey.png"), str(inputs / "wide.png"), "--out", str(out),
                     *model_args(random_tiny_onnx)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grey.png", "wide.png"]


def test_fuse_never_overwrites_an_input(inputs, tmp_path, random_tiny_onnx, capsys):
    other = write(tmp_path / "other" / "grey.jpg", smooth_noise(6, ODD_SHAPE))
    missing = tmp_path / "missing.png"
    original = (inputs / "grey.png").read_bytes()
    code = cli.main(["fuse", str(inputs / "grey.png"), str(other), str(missing), "--out", str(inputs),
                     *model_args(random_tiny_onnx)])

    assert code == 1
    errors = capsys.readouterr().err
    for source in (inputs / "grey.png", other):
        assert f"skipped {source}: its output {inputs / 'grey.png'} would overwrite an input" in errors
    assert f"skipped {missing}: no such file or folder" in errors
    assert (inputs / "grey.png").read_bytes() == original


def test_fuse_refuses_a_second_input_with_the_same_name(tmp_path, random_tiny_onnx, capsys):
    first = write(tmp_path / "a" / "scene.png", smooth_noise(7, (*ODD_SHAPE, 3)))
    second = write(tmp_path / "b" / "scene.jpg", smooth_noise(8, (*ODD_SHAPE, 3)))
    out = tmp_path / "out"
    assert cli.main(["fuse", str(first), str(second), "--out", str(out), *model_args(random_tiny_onnx)]) == 1
    assert f"skipped {second}: output name scene.png already taken by {first}" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["scene.png"]


def test_fuse_with_a_missing_model_names_the_file(tmp_path, capsys):
    image = write(tmp_path / "scene.png", smooth_noise(9, (*ODD_SHAPE, 3)))
    missing_model = tmp_path / "nowhere" / "dcmif_tiny.onnx"
    assert cli.main(["fuse", str(image), "--out", str(tmp_path / "out"), "--model", str(missing_model)]) == 2
    assert str(missing_model) in capsys.readouterr().err


def test_fuse_handles_images_a_few_pixels_wide(tmp_path, random_tiny_onnx):
    image = write(tmp_path / "tiny.png", smooth_noise(10, (3, 5, 3)))
    assert cli.main(["fuse", str(image), "--out", str(tmp_path / "out"), *model_args(random_tiny_onnx)]) == 0


# ---------------------------------------------------------------------------------------------------------
# The still-image prior rule


def test_a_single_image_is_fused_with_its_own_prior(tmp_path, random_tiny_onnx, pipeline):
    frame = smooth_noise(11, (*ODD_SHAPE, 3))
    image = write(tmp_path / "scene.png", frame)
    out = tmp_path / "out"
    assert cli.main(["fuse", str(image), "--out", str(out), *model_args(random_tiny_onnx, "embedded")]) == 0

    own_prior = pipeline.compute_prior(frame)
    expected = pipeline.engine.run(frame, own_prior.gamma, own_prior.beta)
    without_prior = pipeline.engine.run(frame)
    written = cv2.imread(str(out / "scene.png"))
    np.testing.assert_array_equal(written, expected.fused)
    assert not np.array_equal(written, without_prior.fused)


def test_prior_refreshes_every_n_images_from_the_image_it_serves_first(pipeline):
    frames = [smooth_noise(20 + index, (*ODD_SHAPE, 3)) for index in range(3)]
    fuser = StillImageFuser(pipeline, refresh_every=2)
    results = [fuser(frame) for frame in frames]

    prior_of = {index: pipeline.compute_prior(frames[index]) for index in (0, 2)}
    for index, source in ((0, 0), (1, 0), (2, 2)):
        expected = pipeline.engine.run(frames[index], prior_of[source].gamma, prior_of[source].beta)
        np.testing.assert_array_equal(results[index].fused, expected.fused)
    with pytest.raises(ValueError, match="at least 1"):
        StillImageFuser(pipeline, refresh_every=0)


def test_fuse_into_an_unwritable_folder_fails_in_one_line(tmp_path, unwritable_path, random_tiny_onnx, capsys):
    image = write(tmp_path / "scene.png", smooth_noise(11, (*ODD_SHAPE, 3)))
    assert cli.main(["fuse", str(image), "--out", str(unwritable_path), *model_args(random_tiny_onnx)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dcmif fuse: error:") and str(unwritable_path) in err and err.count("\n") == 1, err


def test_fuse_leaves_no_empty_output_when_nothing_could_be_fused(tmp_path, random_tiny_onnx, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "new" / "out"
    assert cli.main(["fuse", str(broken), "--out", str(out), "--save-gate", *model_args(random_tiny_onnx)]) == 1
    assert not (tmp_path / "new").exists(), "folders made for outputs that never came are removed"
    assert f"{out} not written" in capsys.readouterr().out


def test_a_live_prior_runs_its_first_pass_in_a_one_thread_session_of_its_own(random_tiny_onnx):
    """So a refresh never takes the image path's intra-op threads; offline (synchronous) runs need none."""
    from dcmif_ros.inference.pipeline import PRIOR_SESSION_THREADS

    live = PipelineConfig(model_path=random_tiny_onnx, provider="cpu", prior="embedded", synchronous_prior=False)
    with FusionPipeline(live) as pipeline:
        own = pipeline.first_pass_engine
        assert own is not pipeline.engine and own.model_path == pipeline.engine.model_path
        assert own.session.get_session_options().intra_op_num_threads == PRIOR_SESSION_THREADS
        assert own.lean_session is None  # a first pass is run for its pseudo-IR: no graph cut without it
        assert pipeline.compute_prior(np.full((48, 64, 3), 90, np.uint8)).gamma.shape == (pipeline.engine.atoms,)
    offline = PipelineConfig(model_path=random_tiny_onnx, provider="cpu", prior="embedded", synchronous_prior=True)
    with FusionPipeline(offline) as pipeline:
        assert pipeline.first_pass_engine is pipeline.engine
