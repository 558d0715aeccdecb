"""``dcmif train``: the three DCMIF stages chained on a synthetic dataset, resume, loss-weight overrides, errors."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dcmif_ros.inference.checkpoint import load_bundle
from dcmif_ros.cli import main as dcmif
from dcmif_ros.training.data import ImagePair, PairDataset
from dcmif_ros.training.losses import with_overrides
from dcmif_ros.training.stages import AFRIWeights, VGIIWeights

STEPS = 3


def small_run(steps: int = STEPS, prior: str = "none") -> list[str]:
    """Arguments of a few-step training run that validates at its last step."""
    return ["--steps", str(steps), "--batch-size", "2", "--crop", "32", "--val-every", str(steps),
            "--val-images", "1", "--checkpoint-every", "2", "--prior", prior]


SMALL_RUN = small_run()


@pytest.fixture(scope="module")
def chain(synthetic_dataset, tmp_path_factory) -> Path:
    """``dcmif train all`` for a few steps per stage, shipped; returns the run folder."""
    out = tmp_path_factory.mktemp("run")
    assert dcmif(["train", "all", "--data", str(synthetic_dataset), "--out", str(out), *SMALL_RUN,
                  "--ship", str(out / "models" / "dcmif_tiny.pt")]) == 0
    return out


def run_on(chain: Path, tmp_path: Path) -> Path:
    """A fresh run folder whose jsrl stage is the chain's, so later stages run without touching the chain."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "jsrl").symlink_to(chain / "jsrl")
    return out


def log_records(stage_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (stage_dir / "log.jsonl").read_text().splitlines()]


def test_the_three_stages_chain_and_each_writes_checkpoints_and_a_log(chain):
    for stage, validation_keys in (("jsrl", {"psnr_vis", "psnr_ir", "d0_drift"}),
                                   ("vgii", {"pir_psnr", "pir_l1", "vis_psnr", "pir_warm", "ir_warm"}),
                                   ("afri", {"AG", "EN", "SF", "EI", "MI", "SCD"})):
        stage_dir = chain / stage
        assert {p.name for p in stage_dir.iterdir()} >= {"last.pt", "final.pt", "log.jsonl"}
        records = log_records(stage_dir)
        assert [r["step"] for r in records] == list(range(1, STEPS + 1))
        assert validation_keys <= set(records[-1]["val"])
        assert all(torch.isfinite(torch.tensor(r["total"])) for r in records)


def test_vgii_and_afri_train_only_their_own_networks(chain):
    jsrl = torch.load(chain / "jsrl" / "final.pt", weights_only=False)
    vgii = torch.load(chain / "vgii" / "final.pt", weights_only=False)
    afri = torch.load(chain / "afri" / "final.pt", weights_only=False)
    from dcmif_ros.models.dcmif import dcmif_from_jsrl
    from dcmif_ros.training.stages import jsrl_from_output

    built = dcmif_from_jsrl(*jsrl_from_output(jsrl)).state_dict()  # REN and D as JSRL made them
    frozen = [name for name in built if name.startswith("ren.") or name == "dictionary"]
    assert frozen and all(torch.equal(vgii["net"][name], built[name]) for name in frozen)
    assert torch.allclose(vgii["net"]["dictionary"].norm(dim=(2, 3)), torch.ones(1, 16))  # unit-norm atoms of D
    assert jsrl["dictionary"].shape == vgii["net"]["dictionary"].shape
    changed = {name for name, value in vgii["net"].items() if not torch.equal(value, afri["net"][name])}
    assert changed and all(name.startswith("rfn.") for name in changed)


def test_the_shipped_checkpoint_loads_and_records_how_it_was_made(chain):
    bundle = load_bundle(chain / "models" / "dcmif_tiny.pt")
    assert bundle.net.config.name == "tiny" and bundle.prior_encoder_id == "none"
    assert bundle.metadata["train_config"]["steps"] == STEPS
    luminance = torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        fused, pseudo_ir, gate = bundle.net(luminance, *bundle.net.identity_film())
    assert fused.shape == pseudo_ir.shape == gate.shape == luminance.shape
    assert float(gate.min()) >= 0 and float(gate.max()) <= 1


def test_resume_continues_from_the_last_checkpoint(synthetic_dataset, chain, tmp_path, capsys):
    out = run_on(chain, tmp_path)
    for stage in ("vgii", "afri"):
        shutil.copytree(chain / stage, out / stage)
    arguments = small_run(STEPS + 1)
    assert dcmif(["train", "afri", "--data", str(synthetic_dataset), "--out", str(out), *arguments, "--resume"]) == 0
    assert f"at step {STEPS}" in capsys.readouterr().out
    assert [r["step"] for r in log_records(out / "afri")] == list(range(1, STEPS + 2))


def test_resume_drops_log_records_after_the_checkpoint(synthetic_dataset, chain, tmp_path):
    """--checkpoint-every 2 left last.pt at step 2 of a 3-step jsrl run: step 3 is trained (and logged) again."""
    out = tmp_path / "run"
    shutil.copytree(chain / "jsrl", out / "jsrl")
    checkpoint = torch.load(out / "jsrl" / "last.pt", weights_only=False)
    checkpoint["step"] = 2
    torch.save(checkpoint, out / "jsrl" / "last.pt")
    assert dcmif(["train", "jsrl", "--data", str(synthetic_dataset), "--out", str(out), *SMALL_RUN, "--resume"]) == 0
    assert [r["step"] for r in log_records(out / "jsrl")] == [1, 2, 3]


def test_same_seed_same_losses(synthetic_dataset, tmp_path):
    totals = []
    for run in ("a", "b"):
        assert dcmif(["train", "jsrl", "--data", str(synthetic_dataset), "--out", str(tmp_path / run), *SMALL_RUN]) == 0
        totals.append([r["total"] for r in log_records(tmp_path / run / "jsrl")])
    assert totals[0] == totals[1]


def test_loss_weight_overrides_reach_the_loss(synthetic_dataset, chain, tmp_path):
    out = run_on(chain, tmp_path)
    assert dcmif(["train", "vgii", "--data", str(synthetic_dataset), "--out", str(out), *SMALL_RUN,
                  "--loss-weights", "gradient=0", "thermal_region=2"]) == 0
    for record in log_records(out / "vgii"):
        expected = record["int"] + record["coef"] + 2 * record["reg"]
        assert record["total"] == pytest.approx(expected, abs=3e-5)  # each term is logged to 5 decimals


def test_with_all_stages_each_takes_its_own_loss_weights(synthetic_dataset, tmp_path, capsys):
    from dcmif_ros.commands.train import loss_weights_per_stage

    shares = loss_weights_per_stage(("jsrl", "vgii", "afri"), {"gradient": 0.0, "sparsity": 0.01})
    assert shares == {"jsrl": {"sparsity": 0.01}, "vgii": {"gradient": 0.0}, "afri": {"gradient": 0.0}}
    assert dcmif(["train", "all", "--data", str(synthetic_dataset), "--out", str(tmp_path), *SMALL_RUN,
                  "--loss-weights", "nonsense=1"]) == 2
    assert "unknown loss weight(s) nonsense for stages jsrl, vgii, afri" in capsys.readouterr().err
    assert not (tmp_path / "jsrl").exists()  # refused before any training


def test_overrides_name_what_is_wrong(synthetic_dataset, chain, tmp_path, capsys):
    assert with_overrides(AFRIWeights(), {"gradient": 0.25}).gradient == 0.25
    with pytest.raises(ValueError, match="unknown loss weight.*nonsense.*choose from coefficients, gradient"):
        with_overrides(VGIIWeights(), {"nonsense": 1.0})
    assert dcmif(["train", "vgii", "--data", str(synthetic_dataset), "--out", str(run_on(chain, tmp_path)),
                  *SMALL_RUN, "--loss-weights", "nonsense=1"]) == 2
    assert "unknown loss weight(s) nonsense" in capsys.readouterr().err
    for bad in ("gradient", "gradient=nan", "gradient=-1", "=1"):
        with pytest.raises(SystemExit):
            dcmif(["train", "vgii", "--data", str(synthetic_dataset), "--loss-weights", bad])
        assert "expected NAME=NUMBER with a finite number >= 0" in capsys.readouterr().err


def test_vgii_init_fine_tunes_another_runs_rin_and_names_what_starts_fresh(synthetic_dataset, chain, tmp_path,
                                                                           capsys):
    out = run_on(chain, tmp_path)
    started = chain / "vgii" / "final.pt"
    assert dcmif(["train", "vgii", "--data", str(synthetic_dataset), "--out", str(out), *SMALL_RUN, "--lr", "0",
                  "--init", str(started)]) == 0
    assert f"started from {started}; fresh: none" in capsys.readouterr().out
    before, after = (torch.load(p, weights_only=False)["net"] for p in (started, out / "vgii" / "final.pt"))
    rin = [key for key in before if key.startswith("rin.")]
    assert rin and all(torch.equal(before[key], after[key]) for key in rin)  # lr 0: RIN is the one it started from
    checkpoint = chain / "vgii" / "last.pt"  # a checkpoint starts a fine-tune too
    assert dcmif(["train", "vgii", "--data", str(synthetic_dataset), "--out", str(out), *SMALL_RUN, "--lr", "0",
                  "--init", str(checkpoint)]) == 0
    assert f"started from {checkpoint}; fresh: none" in capsys.readouterr().out
    assert dcmif(["train", "vgii", "--data", str(synthetic_dataset), "--out", str(out), *SMALL_RUN,
                  "--init", str(chain / "jsrl" / "final.pt")]) == 2
    assert "is a 'jsrl' output, not a vgii one" in capsys.readouterr().err
    # refused before any training: an --init that a stage would ignore, or that --resume would overwrite
    for stage, extra, message in (("jsrl", [], "--init starts a vgii stage"),
                                  ("vgii", ["--resume"], "--init and --resume contradict each other")):
        assert dcmif(["train", stage, "--data", str(synthetic_dataset), "--out", str(out), *SMALL_RUN, *extra,
                      "--init", str(started)]) == 2
        assert message in capsys.readouterr().err


def test_a_stage_without_its_predecessor_names_the_missing_file(synthetic_dataset, tmp_path, capsys):
    assert dcmif(["train", "vgii", "--data", str(synthetic_dataset), "--out", str(tmp_path), *SMALL_RUN]) == 2
    assert f"{tmp_path / 'jsrl' / 'final.pt'} not found" in capsys.readouterr().err


def test_vgii_takes_its_network_shapes_from_the_model_preset_and_checks_the_jsrl_fits_it(
        synthetic_dataset, chain, tmp_path, capsys):
    from dcmif_ros.models.config import BackboneConfig, get_config

    jsrl_config = get_config("tiny")
    older = replace(jsrl_config, rin=BackboneConfig(width=8, blocks_per_level=(1, 1)))
    assert jsrl_config.with_encoder_of(older) is jsrl_config  # RIN is VGII's own: it may differ
    with pytest.raises(ValueError, match="atoms 16 vs 64"):
        get_config("base").with_encoder_of(jsrl_config)
    out = run_on(chain, tmp_path)
    assert dcmif(["train", "vgii", "--data", str(synthetic_dataset), "--out", str(out), *SMALL_RUN,
                  "--model", "base"]) == 2
    assert "another encoder than the base preset" in capsys.readouterr().err


def test_afri_refuses_a_model_preset_other_than_the_one_vgii_trained(synthetic_dataset, chain, tmp_path, capsys):
    out = run_on(chain, tmp_path)
    (out / "vgii").symlink_to(chain / "vgii")
    assert dcmif(["train", "afri", "--data", str(synthetic_dataset), "--out", str(out), *SMALL_RUN,
                  "--model", "base"]) == 2
    error = capsys.readouterr().err
    assert f"{out}/vgii/final.pt holds a tiny model, not the base preset: pass --model tiny" in error
    assert "atoms 16 vs 64" in error and not (out / "afri").exists()


@pytest.mark.parametrize("stage,crop,model,expected", [
    ("jsrl", 40, "tiny", "--crop 40 does not fit the tiny jsrl networks: crops must be multiples of 16"),
    ("all", 8, "tiny", "at least 16 pixels"),
    ("vgii", 32, "paper", "unknown model size 'paper'"),
    ("lrcfuse", 32, "base", "unknown LRCFuse size 'base'"),
])
def test_a_crop_or_preset_the_networks_cannot_take_is_refused_before_training(
        synthetic_dataset, tmp_path, capsys, stage, crop, model, expected):
    args = small_run()
    args[args.index("--crop") + 1] = str(crop)
    assert dcmif(["train", stage, "--data", str(synthetic_dataset), "--out", str(tmp_path), *args,
                  "--model", model]) == 2
    assert expected in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_film_trains_last_on_features_of_the_final_first_pass(synthetic_dataset, chain, tmp_path, capsys):
    """With a prior, VGII's last quarter freezes RIN and re-reviews its first pass: the cached features
    then describe exactly the pseudo-IR that inference will show the prior."""
    from dcmif_ros.training.stages import PriorFeatureCache, first_pass_fingerprint, vgii_from_run

    out = run_on(chain, tmp_path)
    arguments = small_run(4, prior="embedded")
    assert dcmif(["train", "vgii", "--data", str(synthetic_dataset), "--out", str(out), *arguments]) == 0
    net, vgii = vgii_from_run(out)
    cache = PriorFeatureCache(Path(vgii["prior_cache"]))
    assert vgii["use_prior"] and len(cache.features) == 10
    assert cache.fingerprint == first_pass_fingerprint(net)
    assert vgii["prior_fingerprint"] == cache.fingerprint
    assert dcmif(["train", "afri", "--data", str(synthetic_dataset), "--out", str(out), *arguments]) == 0
    torch.save({"fingerprint": "another first pass", "features": cache.features}, cache.path)
    capsys.readouterr()
    assert dcmif(["train", "afri", "--data", str(synthetic_dataset), "--out", str(out), *arguments]) == 2
    assert f"{cache.path} holds prior reviews of another first pass" in capsys.readouterr().err
    # `--prior none`: the gate trains on the identity-FiLM first pass and needs no reviews at all
    assert dcmif(["train", "afri", "--data", str(synthetic_dataset), "--out", str(out), *small_run(4)]) == 0


def ramp_pairs(root: Path, shapes: list[tuple[int, int]]) -> list[ImagePair]:
    """Pairs whose visible and infrared images are the same horizontal ramp (half a grey level per pixel)."""
    pairs = []
    for i, (height, width) in enumerate(shapes):
        ramp = np.tile((np.arange(width) // 2 % 256).astype(np.uint8), (height, 1))
        paths = [root / f"{i}_{band}.png" for band in ("vi", "ir")]
        for path in paths:
            cv2.imwrite(str(path), ramp)
        pairs.append(ImagePair(str(i), *paths))
    return pairs


def test_crops_at_a_fixed_scale_are_plain_slices_and_small_images_are_enlarged_to_the_crop(tmp_path):
    pairs = ramp_pairs(tmp_path, [(100, 300), (40, 60)])
    dataset = PairDataset(pairs, crop=64, augment=False)
    big, small = dataset[0], dataset[1]
    assert big["vis"].shape == small["vis"].shape == (1, 64, 64)
    rng = np.random.default_rng((0, 0, 0))  # the draws of (seed, epoch, index): top, then left
    top, left = int(rng.integers(0, 100 - 64 + 1)), int(rng.integers(0, 300 - 64 + 1))
    ramp = cv2.imread(str(pairs[0].visible_path), cv2.IMREAD_GRAYSCALE)
    assert torch.equal((big["vis"][0] * 255).round().byte(), torch.from_numpy(ramp[top:top + 64, left:left + 64]))
    stretched = (small["vis"][0, 0] * 255).round().numpy()
    assert np.ptp(stretched) == pytest.approx(19, abs=1)  # a 40-pixel square (the short side), enlarged
    assert torch.equal(big["vis"], big["ir"]) and torch.equal(small["vis"], small["ir"])


def test_crop_scales_show_a_larger_region_downscaled(tmp_path):
    pairs = ramp_pairs(tmp_path, [(400, 500)])
    spans = {}
    for scale in (1.0, 0.25):
        crop = PairDataset(pairs, crop=64, scales=(scale, scale))[0]
        assert crop["vis"].shape == (1, 64, 64) and torch.equal(crop["vis"], crop["ir"])
        spans[scale] = float(np.ptp(crop["vis"][0, 0].numpy() * 255))
    assert spans[1.0] == pytest.approx(31, abs=1)  # 64 columns of the ramp
    assert spans[0.25] == pytest.approx(127, abs=3)  # 256 columns, resized to 64
    drawn = PairDataset(pairs, crop=64, scales=(0.25, 1.0))
    spans = set()
    for epoch in range(12):
        drawn.set_epoch(epoch)
        spans.add(round(float(np.ptp(drawn[0]["vis"][0, 0].numpy() * 255))))
    assert min(spans) >= 30 and max(spans) <= 128 and len(spans) > 3  # scales drawn between the two
    with pytest.raises(ValueError, match="crop scales"):
        PairDataset(pairs, crop=64, scales=(1.0, 0.5))


def test_warm_contrast_is_how_far_the_real_infrareds_hottest_tenth_stands_out():
    from dcmif_ros.training.stages import warm_contrast

    infrared = torch.zeros(1, 1, 10, 10)
    infrared[..., :1, :] = 1.0  # the hottest 10 %: the first row
    image = torch.full_like(infrared, 0.2)
    image[..., :1, :] = 0.7
    assert warm_contrast(image, infrared) == pytest.approx(0.5)
    assert warm_contrast(infrared, infrared) == pytest.approx(1.0)
    assert warm_contrast(image, torch.full_like(infrared, 0.4)) == 0.0  # uniform: nothing is warm


def test_fine_detail_is_the_edges_not_the_shading():
    """AFRI's visible-detail term compares what a σ = 2 px blur removes: a smooth ramp has none (away from the
    frame's border, where the replicated edge bends it), a step edge has it next to the edge only."""
    from dcmif_ros.training.losses import fine_detail

    ramp = torch.linspace(0, 1, 64).repeat(1, 1, 64, 1)
    assert fine_detail(ramp)[..., 8:-8].abs().max() < 1e-5
    step = torch.zeros(1, 1, 64, 64)
    step[..., 32:] = 1.0
    detail = fine_detail(step).abs()[0, 0, 32]
    assert detail[30:34].min() > 0.1 and detail[:20].max() < 1e-6 and detail[44:].max() < 1e-6
