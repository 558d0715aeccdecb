"""``dcmif bench``: per-stage and end-to-end latency of the engine, against PyTorch eager on the same weights."""
from __future__ import annotations

import argparse


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            width, height = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size {item!r} is not WIDTHxHEIGHT") from None
        if width <= 0 or height <= 0:
            raise argparse.ArgumentTypeError(f"size {item!r} must be positive")
        sizes.append((width, height))
    return sizes


def register(subparsers) -> None:
    from dcmif_ros.commands.fuse import add_provider_argument

    parser = subparsers.add_parser(
        "bench",
        help="benchmark the fusion engine (latency, frames per second)",
        description="Time the engine per stage (pre-processing, inference, post-processing) and end to end, "
                    "report median and p95 latency and frames per second, and compare with PyTorch eager "
                    "inference of the same weights.",
    )
    parser.add_argument("--model", default="tiny", choices=("tiny", "base"), help="model size")
    parser.add_argument("--model-path", help="ONNX file (default: models/dcmif_<model>.onnx)")
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("320x240,640x480,1280x720"),
                        help="comma-separated WIDTHxHEIGHT list")
    add_provider_argument(parser)
    parser.add_argument("--runs", type=int, default=30,
                        help="timed runs per size and graph, rounded up to whole blocks (the first run of each "
                             "block of five is untimed: it pays for the switch from the other graph)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: default)")
    parser.add_argument("--processing-size", type=parse_sizes, default=None,
                        help="run the network at this WIDTHxHEIGHT and transfer the result to the input size")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch eager comparison")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    from dcmif_ros.prior import add_prior_argument
    add_prior_argument(parser, default="none")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from dcmif_ros.benchmark import BenchmarkSettings, run_benchmark

    settings = BenchmarkSettings(
        model_path=Path(args.model_path or Path("models") / f"dcmif_{args.model}.onnx"),
        sizes=args.sizes, provider=args.provider, precision=args.precision, runs=args.runs,
        threads=args.threads or None,
        processing_size=args.processing_size[0] if args.processing_size else None,
        compare_torch=not args.no_torch, prior=args.prior,
    )
    results = run_benchmark(settings)
    for row in results:
        torch_part = f"  torch eager {row['torch_latency_ms']['median']:.1f} ms (onnxruntime {row['speedup_vs_torch']:.2f}x)" \
            if "torch_latency_ms" in row else ""
        stages = "  ".join(f"{k} {v['median']:.1f}" for k, v in row["stages"].items())
        where = f"{row['provider']}/{row['precision']}"
        print(f"{row['model']:>12} {row['size']:>10} {where:>13}: {row['fps']:6.1f} fps  "
              f"median {row['latency_ms']['median']:.1f} ms  p95 {row['latency_ms']['p95']:.1f} ms  [{stages}]  "
              f"fused only {row['fused_only_latency_ms']['median']:.1f} ms{torch_part}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"results": results}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
