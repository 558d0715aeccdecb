"""DCMIF with real infrared: assembly from JSRL + AFRI, the ``dual`` stage, checkpoints, ONNX and serving."""
from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from dcmif_ros.cli import main as dcmif
from dcmif_ros.inference.dual import (
    DualDCMIF,
    dual_from_dcmif,
    load_dual_checkpoint,
    save_dual_checkpoint,
)
from dcmif_ros.inference.engine import FusionEngine, pad_to_multiple
from dcmif_ros.models import JSRL, get_config
from dcmif_ros.models.config import FUSION_GATE, FUSION_WARMTH
from dcmif_ros.models.dcmif import dcmif_from_jsrl, ren_from_jsrl, with_fresh_gate
from dcmif_ros.models.dictionary import synthesize
from synthetic_pairs import write_pairs

TINY = get_config("tiny")
PAPER_GATE = replace(TINY, fusion=FUSION_GATE)
PARITY_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def trained_pieces():
    """A random JSRL and a DCMIF net built from it with the paper's gate (which the dual model starts from), a
    non-trivial one (as after AFRI)."""
    torch.manual_seed(0)
    jsrl = JSRL(TINY).eval()
    net = dcmif_from_jsrl(jsrl, jsrl.dictionary_zero().detach(), PAPER_GATE)
    with torch.no_grad():
        for param in net.rfn.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return jsrl, net.eval()


@pytest.fixture(scope="module")
def run_dir(trained_pieces, tmp_path_factory):
    """``<out>/jsrl/final.pt`` and ``<out>/afri/final.pt`` as the DCMIF stages write them."""
    jsrl, net = trained_pieces
    out = tmp_path_factory.mktemp("runs")
    for stage, output in (("jsrl", {"model_config": TINY.to_dict(), "jsrl": jsrl.state_dict(),
                                    "dictionary": net.dictionary.clone()}),
                          ("afri", {"model_config": PAPER_GATE.to_dict(), "net": net.state_dict()})):
        (out / stage).mkdir()
        torch.save(output, out / stage / "final.pt")
    return out


def test_real_infrared_takes_the_place_of_the_pseudo_infrared(trained_pieces):
    jsrl, net = trained_pieces
    dual = dual_from_dcmif(net, jsrl)
    luminance, infrared = torch.rand(1, 1, 48, 64), torch.rand(1, 1, 48, 64)
    with torch.no_grad():
        for param in dual.rfn.parameters():  # a non-trivial gate, as after the dual stage
            param.add_(torch.randn_like(param) * 0.02)
        coef_vis, coef_ir = net.ren(luminance), ren_from_jsrl(jsrl, "ir")(infrared)
        weight, _ = dual.rfn(coef_vis, coef_ir)
        expected = synthesize((1 - weight) * coef_vis + weight * coef_ir, net.dictionary)
        fused, gate = dual(luminance, infrared)
    assert torch.allclose(fused, expected, atol=1e-5)
    assert torch.allclose(gate, weight.mean(1, keepdim=True))
    assert not any(p.requires_grad for p in list(dual.ren_vis.parameters()) + list(dual.ren_ir.parameters()))


def test_the_dual_gate_starts_from_a_paper_gate_and_afresh_from_a_warmth_gate(trained_pieces):
    """A gate-fusion net's RFN fuses two coefficient maps, as the dual model does: it is copied. A warmth-fusion
    net's gate reads RIN's features, which the dual model has not: its RFN starts from fresh weights."""
    jsrl, gate_net = trained_pieces
    copied = dual_from_dcmif(gate_net, jsrl)
    warmth_net = with_fresh_gate(copy.deepcopy(gate_net), FUSION_WARMTH)
    fresh = dual_from_dcmif(warmth_net, jsrl)
    for key, value in gate_net.rfn.state_dict().items():
        assert torch.equal(copied.rfn.state_dict()[key], value)
    assert not all(torch.equal(fresh.rfn.state_dict()[k], v) for k, v in gate_net.rfn.state_dict().items())


def test_checkpoints_round_trip_and_name_what_is_wrong(trained_pieces, tmp_path):
    jsrl, net = trained_pieces
    dual = dual_from_dcmif(net, jsrl)
    path = save_dual_checkpoint(tmp_path / "dual.pt", dual, {"note": "test"})
    loaded, metadata = load_dual_checkpoint(path)
    assert isinstance(loaded, DualDCMIF) and metadata == {"note": "test"}
    luminance = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(luminance, luminance)[0], dual(luminance, luminance)[0])
    torch.save({"format": "something"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="expected a dcmif-dual-checkpoint/1"):
        load_dual_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_dual_checkpoint(tmp_path / "missing.pt")


@pytest.fixture(scope="module")
def shipped(run_dir, tmp_path_factory):
    data = write_pairs(tmp_path_factory.mktemp("pairs"))
    destination = run_dir / "models" / "dcmif_dual_tiny.pt"
    assert dcmif(["train", "dual", "--data", str(data), "--out", str(run_dir), "--steps", "0",
                  "--val-images", "1", "--ship", str(destination)]) == 0
    return destination


def test_zero_steps_ship_the_afri_gate_unchanged(shipped, trained_pieces):
    jsrl, net = trained_pieces
    model, _ = load_dual_checkpoint(shipped)
    for name, value in net.rfn.state_dict().items():
        assert torch.equal(model.rfn.state_dict()[name], value)
    manifest = json.loads(shipped.with_suffix(".json").read_text())
    assert manifest["kind"] == "dual" and manifest["outputs"] == ["fused", "gate"]
    assert manifest["model"] == "dcmif-dual-tiny" and manifest["pad_multiple"] == TINY.pad_multiple


def test_fine_tuning_moves_only_the_gate(run_dir, shipped, trained_pieces):
    _, net = trained_pieces
    data = write_pairs(run_dir / "pairs")
    assert dcmif(["train", "dual", "--data", str(data), "--out", str(run_dir), "--steps", "2", "--batch-size", "2",
                  "--crop", "32", "--val-images", "1", "--val-every", "2"]) == 0
    state = torch.load(run_dir / "dual" / "final.pt", weights_only=False)["model"]
    assert torch.equal(state["ren_vis.head.conv.weight"], net.ren.head.conv.weight)
    moved = [not torch.equal(state[f"rfn.{k}"], v) for k, v in net.rfn.state_dict().items()]
    assert any(moved)


def test_the_dual_stage_refuses_a_model_preset_other_than_afris(run_dir, capsys):
    data = write_pairs(run_dir / "pairs_for_base")
    assert dcmif(["train", "dual", "--data", str(data), "--out", str(run_dir), "--steps", "0",
                  "--model", "base"]) == 2
    assert f"{run_dir}/afri/final.pt holds a tiny model, not the base preset: pass --model tiny" \
        in capsys.readouterr().err


@pytest.mark.parametrize("height,width", [(37, 53), (64, 96)])
def test_onnxruntime_matches_pytorch(shipped, height, width):
    engine = FusionEngine(shipped.with_suffix(".onnx"), provider="cpu")
    model, _ = load_dual_checkpoint(shipped)
    rng = np.random.default_rng(height)
    luminance, infrared = rng.random((2, height, width), dtype=np.float32)
    fused, pseudo_ir, gate = engine.infer_dual(luminance, infrared)
    assert pseudo_ir is None and fused.shape == gate.shape == (height, width)
    padded = (torch.from_numpy(pad_to_multiple(x, engine.pad_multiple, engine.min_side))[None, None]
              for x in (luminance, infrared))
    with torch.no_grad():
        reference = model(*padded)
    for ours, theirs in zip((fused, gate), reference):
        assert np.abs(ours - theirs[0, 0, :height, :width].numpy()).max() <= PARITY_TOLERANCE


def test_dcmif_dual_is_a_report_method_with_a_gate(shipped):
    from dcmif_ros.evaluation.methods import make_method

    method = make_method(f"dcmif-dual:{shipped.with_suffix('.onnx')}")
    frame = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    assert method.uses_infrared and method(frame, frame[..., 2]).fused.shape == frame.shape
    engine = FusionEngine(shipped.with_suffix(".onnx"), provider="cpu")
    gate = engine.run_dual(frame, frame[..., 2], want_gate=True).gate
    assert gate.shape == frame.shape[:2] and 0 <= gate.min() <= gate.max() <= 1
