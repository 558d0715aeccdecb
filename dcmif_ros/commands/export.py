"""``dcmif export``: write the ONNX inference graph, FiLM heads and manifest for a model size, or re-export a
shipped dual-modal checkpoint (LRCFuse, DCMIF with real infrared)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a DCMIF checkpoint to ONNX (+ FiLM heads and a manifest)",
        description="Export the inference graph (REN, RIN, RFN, TailNet with D; γ, β as inputs) to ONNX with "
                    "dynamic height and width and no FFT/complex ops, plus <name>.film.npz and <name>.json, and "
                    "beside it <name>.fp16.onnx and <name>.int8.onnx (statically quantised, calibrated on training "
                    "frames) with their parity in the manifest.",
    )
    parser.add_argument("--model", default="tiny", choices=("tiny", "base"), help="model size")
    parser.add_argument("--checkpoint", help="checkpoint to export (default: models/dcmif_<model>.pt); a "
                                             "dual-modal checkpoint (e.g. models/lrcfuse.pt) is exported as "
                                             "<its name>.onnx + .json")
    parser.add_argument("--out", default="models", help="output folder")
    parser.add_argument("--int8-data", nargs="*", type=Path, metavar="DIR",
                        help="vi/ + ir/ folders to calibrate the int8 graph on (their train split; default: "
                             "../shared/data/msrs_train_128 and msrs_fullres, or under $DCMIF_DATA; none given: "
                             "no int8 graph)")
    parser.add_argument("--untrained", action="store_true",
                        help="export randomly initialised weights (for speed benchmarks only; marked in the manifest)")
    parser.set_defaults(func=run)


def untrained_bundle(size: str):
    """A randomly initialised network of the given size, for speed benchmarks where no trained weights exist."""
    import torch

    from dcmif_ros.inference.checkpoint import DCMIFBundle
    from dcmif_ros.models import JSRL, FiLMHeads, get_config
    from dcmif_ros.models.dcmif import dcmif_from_jsrl
    from dcmif_ros.prior import MINILM_FEATURE_DIM

    torch.manual_seed(0)
    jsrl = JSRL(get_config(size))
    net = dcmif_from_jsrl(jsrl, jsrl.dictionary_zero().detach())
    return DCMIFBundle(net.eval(), FiLMHeads(MINILM_FEATURE_DIM, net.config.atoms).eval(), "untrained",
                       MINILM_FEATURE_DIM, {"untrained": True})


def is_dual_checkpoint(path: Path) -> bool:
    import torch

    from dcmif_ros.inference.dual import CHECKPOINT_FORMAT

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    data = torch.load(path, map_location="cpu", weights_only=False)
    return isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT


def run(args: argparse.Namespace) -> int:
    from dcmif_ros.inference.checkpoint import load_bundle
    from dcmif_ros.inference.export import export_bundle

    name = f"dcmif_{args.model}"
    if args.checkpoint and is_dual_checkpoint(Path(args.checkpoint)):
        from dcmif_ros.inference.dual import architecture_of, load_dual_checkpoint
        from dcmif_ros.inference.export import export_dual

        checkpoint = Path(args.checkpoint)
        model, metadata = load_dual_checkpoint(checkpoint)
        onnx_path = export_dual(model, args.out, checkpoint.stem, architecture_of(model), source=checkpoint,
                                metadata=metadata, int8_data=args.int8_data)
    elif args.untrained:
        onnx_path = export_bundle(untrained_bundle(args.model), args.out, name, trained=False,
                                  int8_data=args.int8_data)
    else:
        checkpoint = Path(args.checkpoint or Path("models") / f"{name}.pt")
        bundle = load_bundle(checkpoint)
        if bundle.net.config.name != args.model:
            raise ValueError(f"{checkpoint} holds a {bundle.net.config.name!r} model, not {args.model!r}")
        onnx_path = export_bundle(bundle, args.out, name, source=checkpoint, int8_data=args.int8_data)
    print(f"wrote {onnx_path}, {onnx_path.with_suffix('.json')}")
    return 0
