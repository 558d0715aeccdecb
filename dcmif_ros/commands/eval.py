"""``dcmif eval``: fusion metrics of a folder of fused images against their visible and infrared sources."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# dcmif_ros.evaluation.metrics.MODES, repeated so that `dcmif --help` does not import numpy and OpenCV.
MODES = ("gray", "vifb")
EXIT_SOME_SKIPPED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` parser; called by ``dcmif_ros.cli`` for every module in this package."""
    parser = subparsers.add_parser(
        "eval",
        help="score fused images with the standard fusion metrics (AG, CE, EI, EN, Qcb, SF, MI, SSIM, ...)",
        description=(
            "Compute AG, CE, EI, EN, Qcb, SF, MI, SSIM, SD, VIF, Nabf, Qabf, SCD and PSNR for every fused "
            "image against its visible and infrared sources. Files pair up by name without extension "
            "across the three folders; unmatched names, duplicate names and size mismatches are reported "
            "and skipped (exit code 1), the rest are still scored. Prints a per-image table and the mean."
        ),
    )
    parser.add_argument("--vi", required=True, type=Path, metavar="DIR",
                        help="folder of visible source images (8-bit, colour or grey)")
    parser.add_argument("--ir", required=True, type=Path, metavar="DIR",
                        help="folder of infrared source images (8-bit grey)")
    parser.add_argument("--fused", required=True, type=Path, metavar="DIR",
                        help="folder of fused images to score, named like their sources")
    parser.add_argument("--mode", choices=MODES, default=MODES[0],
                        help="gray: metrics on BT.601 luma with our documented conventions (MI in bits, "
                             "SSIM as the sum over both sources, textbook PSNR); vifb: reproduce the VIFB "
                             "toolbox (per colour channel, MI in nats, VIFB's PSNR) to compare with papers "
                             "that used it (default: %(default)s)")
    parser.add_argument("--csv", type=Path, metavar="FILE",
                        help="also write the per-image values to this CSV file (header image,AG,...,PSNR)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score the folders, print the table, report skipped images; 1 when any image was skipped."""
    from dcmif_ros.evaluation.scoring import evaluate_dirs, format_table, write_csv

    evaluation = evaluate_dirs(args.vi, args.ir, args.fused, mode=args.mode)
    print(format_table(evaluation))
    for stem, reason in evaluation.errors.items():
        print(f"dcmif eval: skipped {stem}: {reason}", file=sys.stderr)
    if args.csv is not None:
        print(f"per-image values written to {write_csv(evaluation, args.csv)}")
    return EXIT_SOME_SKIPPED if evaluation.errors else 0
