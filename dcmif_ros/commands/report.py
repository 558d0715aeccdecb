"""``dcmif report``: fusion methods compared on datasets' validation pairs, as a Markdown report and a figure."""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from dcmif_ros.commands.fuse import add_provider_argument, positive_int

# The built-in methods of dcmif_ros.evaluation.methods, repeated so that `dcmif --help` does not import numpy and OpenCV.
DEFAULT_METHODS = ("visible", "max", "dcmif-tiny", "dcmif-tiny-noprior")
DEFAULT_OUT = Path("out") / "report"
DEFAULT_FIGURE_SCENES = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` parser; called by ``dcmif_ros.cli`` for every module in this package."""
    parser = subparsers.add_parser(
        "report",
        help="compare fusion methods on datasets' validation pairs (Markdown tables and a figure)",
        description=(
            "Fuse the validation pairs of each dataset folder (vi/ + ir/; every 5th pair by name, as "
            "training holds out) with each method, and write OUT/report.md (mean fusion metrics per method "
            "and dataset, gray mode, best in bold; closeness of each pseudo-infrared to the real infrared "
            "next to the visible luminance's) and OUT/comparison.png (per scene: VIS | IR | each method)."
        ),
    )
    parser.add_argument("--data", nargs="+", required=True, type=Path, metavar="DIR",
                        help="dataset folders, each with vi/ and ir/ (e.g. ../shared/data/msrs_fullres)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="SPEC",
                        help="methods to compare: visible (the visible image), max (max(Y_vis, IR) with the "
                             "visible colour; reads the real IR), dcmif:MODEL:PRIOR (our model on the visible "
                             "image; MODEL empty = the shipped one, PRIOR a --prior spec, default embedded), "
                             "the aliases dcmif-tiny (= dcmif::embedded) and dcmif-tiny-noprior "
                             "(= dcmif::none), or any method registered in dcmif_ros.evaluation.methods "
                             f"(default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help="output folder (default: %(default)s)")
    parser.add_argument("--max-pairs", type=positive_int, metavar="N",
                        help="use only the first N validation pairs of each dataset (default: all)")
    parser.add_argument("--figure-scenes", type=int, default=DEFAULT_FIGURE_SCENES, metavar="N",
                        help="scenes per dataset in the figure (default: %(default)s)")
    add_provider_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the methods (all before any work, so a bad spec fails fast), run the report, free the models."""
    from dcmif_ros.evaluation.methods import MethodOptions, label_apart, make_method
    from dcmif_ros.evaluation.report import build_report

    options = MethodOptions(provider=args.provider, precision=args.precision)
    with contextlib.ExitStack() as resources:
        methods = []
        for spec in args.methods:
            method = make_method(spec, options)
            resources.callback(method.close)
            methods.append(method)
        files = build_report(args.data, label_apart(methods, args.methods), args.out, args.figure_scenes,
                             max_pairs=args.max_pairs)
    print(f"wrote {files.markdown}" + (f" and {files.figure}" if files.figure else ""))
    return 0
