"""``dcmif demo``: the live ROS 2 graph on bundled sample photographs, without ``ros2 launch``.

launch_ros has no PyPI wheel, so this command stands in for ``ros2 launch dcmif_ros dcmif.launch.py`` plus a
camera: it starts dcmif_node in its own process and, in this one, a sample camera and the subscribers a
detector would have, all with config/fastdds_shm.xml loaded. It reports the frame rate and the end-to-end
latency and writes a contact sheet (input | pseudo-thermal | fused).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# dcmif_ros.sample_camera.CAMERA_QOS's names, repeated so that `dcmif --help` does not import rclpy.
CAMERA_RELIABILITIES = ("best_effort", "reliable")
DEFAULT_REFRESH_EVERY = 30
CONTACT_SHEET_TILE = (320, 240)
LABEL_HEIGHT = 28
COLUMN_LABELS = ("input (visible)", "pseudo-thermal", "fused")


def positive_number(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    from dcmif_ros.commands.bench import parse_sizes
    from dcmif_ros.commands.fuse import add_model_arguments

    parser = subparsers.add_parser(
        "demo",
        help="run the live ROS 2 node on sample photographs and measure it (no ros2 launch needed)",
        description=(
            "Run the live graph without ros2 launch: dcmif_node in its own process and, in this one, a sample "
            "camera (photos bundled with scikit-image as 640x480 video) and the subscribers a detector would "
            "have, all with config/fastdds_shm.xml. Prints the frame rate and the end-to-end latency (camera "
            "publish to fused image received) and writes a contact sheet (input | pseudo-thermal | fused), a "
            "JSON summary and the node's log. Exits 2 with the end of that log if the node dies."
        ),
    )
    parser.add_argument("--out", type=Path, default=Path("out/demo"), metavar="DIR",
                        help="folder for contact_sheet.png, summary.json and the node's log (default: %(default)s)")
    add_model_arguments(parser, DEFAULT_REFRESH_EVERY,
                        f"refresh the prior every N processed frames (default: {DEFAULT_REFRESH_EVERY})")
    parser.add_argument("--processing-size", type=parse_sizes, metavar="WxH",
                        help="run the network at this size (outputs keep the camera's 640x480); default: the "
                             "node's own, auto (about 320x240, on a GPU too for this visible model)")
    parser.add_argument("--rate", type=positive_number, default=15.0, help="camera frames per second (default: 15)")
    parser.add_argument("--duration", type=positive_number, default=10.0,
                        help="seconds of video once the node is ready (default: 10)")
    parser.add_argument("--camera-qos", choices=CAMERA_RELIABILITIES, default="best_effort",
                        help="best_effort as RealSense publishes, reliable as usb_cam does (default: best_effort)")
    parser.add_argument("--rows", type=int, default=4, help="rows of the contact sheet (default: %(default)s)")
    parser.add_argument("--photos", nargs="+", type=Path, default=[], metavar="FILE",
                        help="image files the sample camera replays in turn (default: the photos bundled with "
                             "scikit-image); make run passes night street scenes from ../shared/data")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dcmif_ros.inference.pipeline import default_model_path
    from dcmif_ros.ros.live_run import LiveRunConfig, run_live

    missing = [str(path) for path in args.photos if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"--photos: no such image file: {', '.join(missing)}")
    model = (args.model or default_model_path()).resolve()
    if not model.is_file():
        raise FileNotFoundError(f"model {model} not found: export a model there or pass --model")
    parameters = node_parameters(args, model)
    print(f"dcmif demo: starting dcmif_node ({model.name}, provider {args.provider}, prior {args.prior}); "
          f"its log: {args.out / 'dcmif_node.log'}", flush=True)
    result = run_live(LiveRunConfig(out_dir=args.out, node_parameters=parameters, rate_hz=args.rate,
                                    duration_s=args.duration, camera_reliability=args.camera_qos,
                                    sample_rows=args.rows, photos=tuple(args.photos)))
    if not result.fused_received:
        raise RuntimeError(f"no fused image came back from dcmif_node in {args.duration:g} s "
                           f"({result.published} frames published); see {args.out / 'dcmif_node.log'}")
    summary = {"camera": {"rate_hz": args.rate, "duration_s": args.duration, "reliability": args.camera_qos},
               "model": str(model), "prior": args.prior, **result.summary()}
    sheet_path = args.out / "contact_sheet.png"
    if result.samples:
        write_contact_sheet(result.samples, sheet_path)
        summary["contact_sheet"] = str(sheet_path)
    summary_path = args.out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(describe(summary))
    print(f"wrote {summary_path}" + (f" and {sheet_path}" if result.samples else ""))
    return 0


def node_parameters(args: argparse.Namespace, model: Path) -> dict:
    """The node's parameters for the demo's options (their defaults are the node's own)."""
    parameters = {"model_path": str(model), "provider": args.provider, "precision": args.precision,
                  "prior": args.prior, "refresh_every_n_frames": args.refresh_every}
    if args.processing_size:
        parameters["processing_width"], parameters["processing_height"] = args.processing_size[0]
    return parameters


def describe(summary: dict) -> str:
    latency, node = summary["latency_ms"], summary["node"] or {}
    lines = [
        f"  camera: {summary['published']} frames at {summary['camera']['rate_hz']:g} Hz "
        f"({summary['camera']['reliability']}), fused images received: {summary['fused_received']}",
        f"  rate: {summary['rate_hz']:.1f} fused frames/s; end-to-end latency (publish -> fused received): "
        f"median {latency['median_ms']:.1f} ms, p95 {latency['p95_ms']:.1f} ms; headers intact: "
        f"{summary['headers_intact']}",
    ]
    if node:
        diagnostics = summary.get("node_diagnostics") or {}
        lines.append(f"  node: {node['frames_processed']} processed, {node['frames_dropped']} dropped of "
                     f"{node['frames_received']} received; {node['execution_provider']} "
                     f"{diagnostics.get('precision', '')} at {diagnostics.get('network resolution', '?')}, inference "
                     f"{node['inference_latency_ms']:.1f} ms; prior '{node['prior_backend']}' "
                     f"version {node['prior_version']}")
    return "\n".join(lines)


def write_contact_sheet(samples, path: Path) -> None:
    """One row per sample: input | pseudo-thermal | fused, under a row of column labels."""
    import cv2
    import numpy as np

    width, height = CONTACT_SHEET_TILE
    header = np.full((LABEL_HEIGHT, width * len(COLUMN_LABELS), 3), 255, np.uint8)
    for column, label in enumerate(COLUMN_LABELS):
        cv2.putText(header, label, (column * width + 8, LABEL_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (0, 0, 0), 1, cv2.LINE_AA)
    rows = [np.hstack([cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
                       for image in (sample.input, sample.pseudo_thermal, sample.fused)])
            for sample in samples]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.vstack([header, *rows])):
        raise OSError(f"could not write {path}")
