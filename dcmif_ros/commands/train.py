"""``dcmif train``: train the DCMIF stages (and the dual-modal models) on folders of vi/ + ir/ pairs."""
from __future__ import annotations

import argparse
import math

STAGES = ("jsrl", "vgii", "afri")
DUAL_MODAL_STAGES = ("lrcfuse", "dual")  # LRCFuse; DCMIF with real infrared (reads jsrl and afri)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a DCMIF stage (jsrl, vgii, afri, or all three in order), or a dual-modal model (lrcfuse, dual)",
        description="Train one DCMIF stage, or all in order. Each stage reads the previous stage's "
                    "<out>/<stage>/final.pt, so the three chain with no manual file handling. Checkpoints "
                    "go to <out>/<stage>/last.pt every --checkpoint-every steps; --resume continues from there.",
    )
    parser.add_argument("stage", choices=STAGES + DUAL_MODAL_STAGES + ("all",),
                        help="which stage to train: lrcfuse trains LRCFuse (visible + real infrared); dual builds "
                             "DCMIF with real infrared from <out>/jsrl and <out>/afri and fine-tunes its gate "
                             "(--steps 0: the AFRI gate as is)")
    parser.add_argument("--data", nargs="+", required=True, metavar="DIR",
                        help="dataset folders, each with vi/ and ir/ (e.g. ../shared/data/msrs_fullres)")
    parser.add_argument("--out", default="runs/tiny", help="run folder holding every stage's checkpoints")
    parser.add_argument("--model", default="tiny", choices=("tiny", "base", "paper"),
                        help="model size preset: tiny or base for DCMIF, tiny or paper for lrcfuse")
    parser.add_argument("--steps", type=int, default=2000, help="optimisation steps for this stage")
    parser.add_argument("--batch-size", type=int, default=8, help="crops per step")
    parser.add_argument("--crop", type=int, default=128, help="random crop size in pixels")
    parser.add_argument("--crop-scales", nargs=2, type=float, default=(1.0, 1.0), metavar=("LOW", "HIGH"),
                        help="draw each crop at a random scale in [LOW, HIGH] (a crop/scale region resized to "
                             "--crop; e.g. 0.25 1 also shows scenes downscaled up to 4x); images smaller than a "
                             "crop are enlarged to fit it (default: 1 1)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine decay)")
    parser.add_argument("--seed", type=int, default=0, help="seed for initialisation, shuffles and crops")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda[:N]")
    parser.add_argument("--val-every", type=int, default=250, help="validate every N steps")
    parser.add_argument("--val-images", type=int, default=8, help="validation pairs used each time")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="write last.pt every N steps")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/<stage>/last.pt")
    parser.add_argument("--init", metavar="PATH",
                        help="vgii: start RIN (with its semantic branch) and the FiLM heads from another run's "
                             "<run>/vgii/final.pt or last.pt (fine-tuning); layers whose names or shapes differ "
                             "keep their fresh initialisation and are listed")
    parser.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    parser.add_argument("--ship", metavar="PATH",
                        help="after afri, write the shipped checkpoint here (e.g. models/dcmif_tiny.pt); after "
                             "lrcfuse or dual, the checkpoint plus its ONNX graph and manifest beside it "
                             "(e.g. models/lrcfuse.pt)")
    parser.add_argument("--feature-network", default="random", metavar="SPEC",
                        help="lrcfuse loss network: random[:DIVISOR] (fixed random VGG-16-style features, widths "
                             "/DIVISOR, default 4), vgg16:PATH (a local VGG-16 checkpoint, the paper's choice) or "
                             "jsrl:PATH (a trained DCMIF JSRL, e.g. runs/tiny/jsrl/final.pt) (default: %(default)s)")
    parser.add_argument("--afri-target", default="pseudo_ir", choices=("pseudo_ir", "real_ir"),
                        help="infrared in the AFRI max-intensity/max-gradient targets: the pseudo-IR (the paper) "
                             "or the real infrared (default: %(default)s; docs/model.md says why)")
    parser.add_argument("--loss-weights", nargs="+", default=[], metavar="NAME=VALUE", type=loss_weight,
                        help="override this stage's loss weights, e.g. gradient=0.1 thermal_region=3 for vgii "
                             "(names: the fields of JSRLWeights, VGIIWeights, AFRIWeights, LRCFuseLossWeights; "
                             "with 'all' each stage takes the names it has)")
    from dcmif_ros.prior import add_prior_argument
    add_prior_argument(parser)
    parser.set_defaults(func=run)


def loss_weight(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        number = float(value) if sep and name else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER with a finite number >= 0, got {text!r}")
    return name, number


def loss_weights_per_stage(stages: tuple[str, ...], overrides: dict[str, float]) -> dict[str, dict[str, float]]:
    """Each stage's share of ``--loss-weights``: with several stages each takes the names its weights have
    (``gradient`` reaches both VGII and AFRI); a name no stage has is an error before any training."""
    if len(stages) == 1:
        return {stages[0]: overrides}
    from dcmif_ros.training.losses import weight_names
    from dcmif_ros.training.stages import STAGE_WEIGHTS

    shares = {stage: {k: v for k, v in overrides.items() if k in weight_names(STAGE_WEIGHTS[stage])}
              for stage in stages}
    unknown = sorted(set(overrides) - {name for share in shares.values() for name in share})
    if unknown:
        raise ValueError(f"unknown loss weight(s) {', '.join(unknown)} for stages {', '.join(stages)}")
    return shares


def check_crop(crop: int, stages: tuple[str, ...], model: str) -> None:
    """Fail on a crop the networks cannot take here, by name, rather than on a shape error inside a U-Net level
    (and on a --model the stage has no preset of, before any data is read)."""
    from dcmif_ros.models import config as dcmif_presets, lrcfuse as lrcfuse_presets

    for stage in stages:
        preset = (lrcfuse_presets if stage == "lrcfuse" else dcmif_presets).get_config(model)
        if crop % preset.pad_multiple or crop < preset.min_side:
            raise ValueError(f"--crop {crop} does not fit the {model} {stage} networks: crops must be multiples of "
                             f"{preset.pad_multiple} (their pad multiple: every level must divide it) and at least "
                             f"{preset.min_side} pixels")


def check_init(init: str | None, stages: tuple[str, ...], resume: bool) -> None:
    """Fail on an --init that would be ignored or found missing only after earlier stages trained."""
    from pathlib import Path

    if init is None:
        return
    if "vgii" not in stages:
        raise ValueError(f"--init starts a vgii stage; {', '.join(stages)} has none")
    if resume:
        raise ValueError("--init and --resume contradict each other: --resume continues from <out>/vgii/last.pt")
    if not Path(init).is_file():
        raise FileNotFoundError(f"--init {init}: no such VGII output or checkpoint")


def run(args: argparse.Namespace) -> int:
    import sys
    from dataclasses import replace

    from dcmif_ros.training.data import PairDataset, collect_pairs
    from dcmif_ros.training.loop import TrainConfig, run_stage, seed_everything
    from dcmif_ros.training.stages import AFRIStage, JSRLStage, VGIIStage, ship

    config = TrainConfig(
        data=args.data, out=args.out, model=args.model, steps=args.steps, batch_size=args.batch_size,
        crop=args.crop, crop_scales=tuple(args.crop_scales), lr=args.lr, seed=args.seed, device=args.device,
        val_every=args.val_every, checkpoint_every=args.checkpoint_every, val_images=args.val_images,
        resume=args.resume,
        prior=args.prior, workers=args.workers,
        extra={"feature_network": args.feature_network, "afri_target": args.afri_target,
               "loss_weights": dict(args.loss_weights), "init": args.init},
    )
    stages = STAGES if args.stage == "all" else (args.stage,)
    check_crop(config.crop, stages, config.model)
    check_init(args.init, stages, args.resume)
    train_pairs, val_pairs = collect_pairs(args.data, "train"), collect_pairs(args.data, "val")
    print(f"{len(train_pairs)} training pairs, {len(val_pairs)} validation pairs")
    dataset = PairDataset(train_pairs, config.crop, seed=config.seed, scales=config.crop_scales)
    weights = loss_weights_per_stage(stages, dict(args.loss_weights))
    base_config = config
    for stage_name in stages:
        config = replace(base_config, extra=base_config.extra | {"loss_weights": weights[stage_name]})
        seed_everything(config.seed)
        if stage_name == "jsrl":
            stage = JSRLStage(config, val_pairs, dataset)
        elif stage_name == "vgii":
            stage = VGIIStage(config, val_pairs, train_pairs)
        elif stage_name == "lrcfuse":
            from dcmif_ros.training.lrcfuse_stage import LRCFuseStage
            stage = LRCFuseStage(config, val_pairs)
        elif stage_name == "dual":
            from dcmif_ros.inference.dual import DualDCMIFStage
            stage = DualDCMIFStage(config, val_pairs)
        else:
            stage = AFRIStage(config, val_pairs, train_pairs)
        run_stage(stage, dataset, config)
    if args.ship:
        command = "dcmif " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("dcmif") else "dcmif train ..."
        metadata = {"command": command, "train_config": vars(args) | {"func": None}}
        if args.stage == "lrcfuse":
            from dcmif_ros.training.lrcfuse_stage import ship_lrcfuse as ship
        elif args.stage == "dual":
            from dcmif_ros.inference.dual import ship_dual_dcmif as ship
        path = ship(config.out, args.ship, metadata)
        print(f"shipped {path}")
    return 0
