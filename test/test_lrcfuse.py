"""LRCFuse: the unfolded blocks, the multi-level loss, loss networks, training, shipping and dual-modal serving."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dcmif_ros.cli import main as dcmif
from dcmif_ros.inference.engine import EngineError, FusionEngine, pad_to_multiple
from dcmif_ros.image_codec import to_uint8
from dcmif_ros.models.feature_network import VGGFeatures, make_feature_network, random_vgg, vgg16_from_checkpoint
from dcmif_ros.models.lrcfuse import LRCFuse, SoftThreshold, get_config
from dcmif_ros.training.lrcfuse_stage import LRCFuseLossWeights, MultiLevelLoss, gram_matrix

TINY = get_config("tiny")
TINY_MAX_PARAMETERS = 60_000
TINY_MAX_GFLOPS_640x480 = 20.0
PARITY_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def shipped(synthetic_dataset, tmp_path_factory) -> Path:
    """``dcmif train lrcfuse`` for a few steps, shipped (checkpoint + ONNX + manifest)."""
    out = tmp_path_factory.mktemp("run")
    destination = out / "models" / "lrcfuse.pt"
    code = dcmif(["train", "lrcfuse", "--data", str(synthetic_dataset), "--out", str(out / "runs"),
                  "--steps", "3", "--batch-size", "2", "--crop", "32", "--val-every", "3", "--val-images", "1",
                  "--checkpoint-every", "2", "--ship", str(destination)])
    assert code == 0
    return destination


def test_llrr_block_is_one_lista_iteration():
    torch.manual_seed(0)
    block = LRCFuse(TINY).encoders["vis"].blocks[0]
    image, code = torch.rand(1, 1, 16, 16), torch.randn(1, 2 * TINY.code_channels, 16, 16)
    with torch.no_grad():
        block.momentum.fill_(0.7)
        update = 0.7 * code + block.adjoint(image - block.dictionary(code))
        threshold = block.threshold.log_threshold.exp()
        expected = torch.sign(update) * torch.clamp(update.abs() - threshold, min=0)
        assert torch.allclose(block(image, code), expected, atol=1e-6)


def test_llrr_splits_the_code_into_low_rank_and_sparse_halves_that_thresholds_sparsify():
    torch.manual_seed(0)
    encoder = LRCFuse(TINY).encoders["vis"]
    image = torch.rand(2, 1, 24, 40)
    with torch.no_grad():
        low_rank, sparse = encoder(image)
        assert low_rank.shape == sparse.shape == (2, TINY.code_channels, 24, 40)
        for module in encoder.modules():
            if isinstance(module, SoftThreshold):
                module.log_threshold.fill_(0.0)  # θ = 1 on [0, 1] images
        assert (torch.cat(encoder(image), 1) == 0).float().mean() > 0.5


def test_cfpm_finds_nothing_common_where_the_codes_explain_both_images():
    torch.manual_seed(0)
    net = LRCFuse(TINY)
    codes = [(torch.randn(1, TINY.code_channels, 20, 20), torch.randn(1, TINY.code_channels, 20, 20))
             for _ in range(2)]
    with torch.no_grad():
        explained = tuple(r(*c) for r, c in zip(net.cfpm.reconstructions, codes))
        assert torch.count_nonzero(net.cfpm(explained, codes)) == 0
        assert torch.count_nonzero(net.cfpm(tuple(e + 1.0 for e in explained), codes)) > 0


@pytest.mark.parametrize("height,width", [(37, 53), (64, 48)])
def test_any_image_size_is_fused(height, width):
    net = LRCFuse(TINY).eval()
    with torch.no_grad():
        fused = net(torch.rand(1, 1, height, width), torch.rand(1, 1, height, width))
    assert fused.shape == (1, 1, height, width) and torch.isfinite(fused).all()


def test_decoder_computes_its_transposed_convolutions_as_convolutions():
    torch.manual_seed(2)
    decoder = LRCFuse(get_config("tiny")).decoder
    features = torch.randn(1, get_config("tiny").feature_channels, 23, 30)
    assert torch.allclose(decoder(features), decoder.layers(features), atol=1e-5)


def test_tiny_fits_the_cpu_budget_and_paper_matches_the_paper_size():
    from torch.utils.flop_counter import FlopCounterMode

    net = LRCFuse(TINY)
    assert sum(p.numel() for p in net.parameters()) <= TINY_MAX_PARAMETERS
    height, width = 96, 128  # every layer is full resolution: FLOPs scale with the pixel count
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.rand(1, 1, height, width), torch.rand(1, 1, height, width))
    assert counter.get_total_flops() * (480 * 640) / (height * width) / 1e9 <= TINY_MAX_GFLOPS_640x480
    paper = sum(p.numel() for p in LRCFuse(get_config("paper")).parameters())
    assert 0.1e6 < paper < 0.25e6  # the paper reports 0.18 M


def test_gram_matrix_does_not_depend_on_the_image_size():
    features = torch.rand(2, 5, 8, 8)
    assert torch.allclose(gram_matrix(features), gram_matrix(features.repeat(1, 1, 2, 3)), atol=1e-6)


def test_gram_matrix_is_the_covariance_of_the_channels():
    torch.manual_seed(0)
    features = torch.rand(2, 5, 8, 8)
    flat = features.reshape(2, 5, 64)
    expected = torch.stack([torch.cov(f, correction=0) for f in flat]) / 5  # Gram / (C·H·W) = covariance / C
    assert torch.allclose(gram_matrix(features), expected, atol=1e-6)
    assert torch.allclose(gram_matrix(features + torch.rand(2, 5, 1, 1) * 10), gram_matrix(features), atol=1e-5)


def test_each_loss_term_vanishes_where_it_should():
    torch.manual_seed(0)
    loss = MultiLevelLoss(random_vgg())
    vis, ir = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    as_visible, as_infrared = loss(vis, vis, ir), loss(ir, vis, ir)
    assert as_visible["pixel"] == 0 and as_visible["shallow"] == 0 and as_infrared["deep"] == 0
    assert loss(vis, vis, vis)["sobel"] == 0
    w = LRCFuseLossWeights()
    expected = (w.pixel * as_infrared["pixel"] + w.shallow * as_infrared["shallow"] + as_infrared["middle"]
                + w.deep * as_infrared["deep"] + w.sobel * as_infrared["sobel"])
    assert torch.isclose(as_infrared["total"], expected)


def test_loss_gradients_reach_the_fused_image_but_not_the_loss_network():
    network = random_vgg()
    fused = torch.rand(1, 1, 32, 32, requires_grad=True)
    MultiLevelLoss(network)(fused, torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))["total"].backward()
    assert fused.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in network.parameters())


def test_random_loss_network_is_fixed_and_multi_scale():
    a, b = random_vgg(), make_feature_network("random:8")
    image = torch.rand(1, 1, 32, 32)
    levels = a(image)
    assert [tuple(level.shape[2:]) for level in levels] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert [level.shape[1] for level in levels] == [16, 32, 64, 128]
    assert torch.equal(random_vgg()(image)[3], levels[3])
    assert b(image)[3].shape[1] == 64


@pytest.mark.parametrize("layout", ["torchvision", "named"])
def test_vgg16_checkpoints_load_in_both_layouts(tmp_path, layout):
    torch.manual_seed(0)
    source = VGGFeatures()
    state = source.state_dict()
    if layout == "named":
        names = [f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3)) for i in range(1, n + 1)]
        convs = [k[: -len(".weight")] for k in state if k.endswith(".weight")]
        state = {f"{name}.{p}": state[f"{conv}.{p}"] for name, conv in zip(names, convs) for p in ("weight", "bias")}
    path = tmp_path / "vgg16.pth"
    torch.save({"state_dict": state}, path)
    image = torch.rand(1, 1, 32, 32)
    loaded = vgg16_from_checkpoint(path)
    assert torch.allclose(loaded(image)[2], source(image)[2])
    assert not any(p.requires_grad for p in loaded.parameters())


def test_bad_vgg16_checkpoints_and_specs_are_named(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="not a VGG-16 checkpoint"):
        vgg16_from_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        make_feature_network(f"vgg16:{tmp_path / 'missing.pth'}")
    with pytest.raises(ValueError, match="unknown feature network"):
        make_feature_network("resnet")


def test_training_writes_checkpoints_a_log_and_a_shipped_model(shipped):
    run = shipped.parent.parent / "runs" / "lrcfuse"
    assert {p.name for p in run.iterdir()} >= {"last.pt", "final.pt", "log.jsonl"}
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and "val" in records[-1]
    assert {"pixel", "shallow", "middle", "deep", "sobel"} <= set(records[0])
    manifest = json.loads(shipped.with_suffix(".json").read_text())
    assert manifest["kind"] == "dual" and manifest["inputs"] == ["luminance", "infrared"]
    assert manifest["outputs"] == ["fused"] and manifest["metadata"]["feature_network"] == "random"


def test_resume_continues_from_the_last_checkpoint(synthetic_dataset, shipped, capsys):
    out = shipped.parent.parent / "runs"
    assert dcmif(["train", "lrcfuse", "--data", str(synthetic_dataset), "--out", str(out), "--steps", "4",
                  "--batch-size", "2", "--crop", "32", "--val-every", "4", "--val-images", "1", "--resume"]) == 0
    assert "last.pt at step 3" in capsys.readouterr().out  # the end of the first run


@pytest.fixture(scope="module")
def engine(shipped) -> FusionEngine:
    """The fp32 graph (auto may pick the export's int8 graph on the CPU, where it measured it faster)."""
    return FusionEngine(shipped.with_suffix(".onnx"), provider="cpu", precision="fp32")


@pytest.mark.parametrize("height,width", [(37, 53), (64, 96)])
def test_onnxruntime_matches_pytorch(engine, shipped, height, width):
    from dcmif_ros.inference.dual import load_dual_checkpoint

    model, metadata = load_dual_checkpoint(shipped)
    rng = np.random.default_rng(height)
    luminance, infrared = rng.random((2, height, width), dtype=np.float32)
    fused, pseudo_ir, gate = engine.infer_dual(luminance, infrared)
    assert pseudo_ir is None and gate is None and fused.shape == (height, width)
    with torch.no_grad():
        reference = model(*(torch.from_numpy(pad_to_multiple(x, 1))[None, None] for x in (luminance, infrared)))
    assert np.abs(fused - reference[0, 0].numpy()).max() <= PARITY_TOLERANCE
    assert metadata["train_config"]["stage"] == "lrcfuse"


def test_run_dual_puts_the_fused_luminance_into_the_frame(engine):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (60, 80), dtype=np.uint8)
    infrared = rng.integers(0, 256, (60, 80), dtype=np.uint8)
    result = engine.run_dual(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), infrared, want_gate=True)
    assert result.fused.shape == (60, 80, 3) and result.pseudo_ir is None and result.gate is None
    fused, _, _ = engine.infer_dual(grey / np.float32(255), infrared / np.float32(255))
    assert np.abs(result.fused[..., 1].astype(int) - to_uint8(fused).astype(int)).max() <= 1
    assert set(result.timings_ms) == {"pre", "infer", "post", "total"}


def test_processing_size_applies_to_both_inputs(shipped):
    engine = FusionEngine(shipped.with_suffix(".onnx"), provider="cpu", processing_size=(40, 30))
    frame = np.full((120, 160, 3), 100, np.uint8)
    assert engine.run_dual(frame, np.full((120, 160), 200, np.uint8)).fused.shape == frame.shape


def test_models_refuse_the_wrong_call_and_unregistered_infrared(engine, random_tiny_onnx):
    frame = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(EngineError, match="dual model: call run_dual"):
        engine.run(frame)
    with pytest.raises(ValueError, match="registered"):
        engine.run_dual(frame, np.zeros((16, 32), np.uint8))
    with pytest.raises(EngineError, match="visible model: call run"):
        FusionEngine(random_tiny_onnx, provider="cpu").run_dual(frame, np.zeros((32, 32), np.uint8))


def test_unknown_manifest_kind_is_refused(shipped, tmp_path):
    for suffix in (".onnx", ".json"):
        (tmp_path / f"m{suffix}").write_bytes(shipped.with_suffix(suffix).read_bytes())
    manifest = json.loads((tmp_path / "m.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps(manifest | {"kind": "triple"}))
    with pytest.raises(EngineError, match="kind 'triple'"):
        FusionEngine(tmp_path / "m.onnx")


def test_lrcfuse_is_a_report_method(shipped, random_tiny_onnx):
    from dcmif_ros.evaluation.methods import make_method

    method = make_method(f"lrcfuse:{shipped.with_suffix('.onnx')}")
    assert method.uses_infrared and method.label == "lrcfuse:lrcfuse"
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert method(frame, frame[..., 0]).fused.shape == frame.shape
    with pytest.raises(ValueError, match="needs a dual-modal model"):
        make_method(f"lrcfuse:{random_tiny_onnx}")


def test_fuse_with_ir_pairs_files_by_name(synthetic_dataset, shipped, tmp_path, capsys):
    inputs = tmp_path / "vi"
    inputs.mkdir()
    for name in ("000.png", "001.png"):
        (inputs / name).write_bytes((synthetic_dataset / "vi" / name).read_bytes())
    cv2.imwrite(str(inputs / "lonely.png"), np.zeros((64, 64, 3), np.uint8))
    out, model, infrared = tmp_path / "out", str(shipped.with_suffix(".onnx")), str(synthetic_dataset / "ir")
    code = dcmif(["fuse", str(inputs), "--ir", infrared, "--model", model, "--out", str(out)])
    assert code == 1  # lonely.png has no infrared partner
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "001.png"]
    assert "lonely.png: needs exactly one infrared image named lonely" in capsys.readouterr().err
    assert dcmif(["fuse", str(inputs), "--ir", infrared, "--model", model, "--out", str(out), "--save-pseudo-ir"]) == 2


def test_shipped_lrcfuse_brings_the_infrared_into_a_real_night_scene(shared_data):
    from dcmif_ros.evaluation.methods import make_method, shipped_dual_model
    from dcmif_ros.training.data import collect_pairs

    if not shipped_dual_model("lrcfuse").is_file():
        pytest.skip("models/lrcfuse.onnx is not shipped in this checkout")
    pair = collect_pairs([shared_data / "msrs_fullres"], "val")[0]  # 00008N, a night scene
    visible, infrared = cv2.imread(str(pair.visible_path)), cv2.imread(str(pair.infrared_path), cv2.IMREAD_GRAYSCALE)
    fused = make_method("lrcfuse").fuse(visible, infrared)
    correlation = lambda image: np.corrcoef(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).ravel(), infrared.ravel())[0, 1]
    assert correlation(fused) > correlation(visible)
