"""``dcmif fuse``: infer the infrared of visible images and fuse it in, writing PNGs named like the inputs.

Outputs in ``--out``: ``NAME.png`` (fused, colour), ``pseudo_ir/NAME.png`` (pseudo-thermal, grey, with
``--save-pseudo-ir``) and ``gate/NAME.png`` (weight of the pseudo-IR per pixel, 0..255, with
``--save-gate``). Subfolders rather than suffixes keep every name equal to its input's, so
``dcmif eval --fused OUT`` pairs them with the sources by name.

With ``--ir DIR`` a real infrared camera replaces the inference: each input is fused with the infrared image of the
same name in DIR by a dual-modal model (LRCFuse by default, see ``dcmif_ros.inference.dual``).

Also home of the model options that ``dcmif bag`` and ``dcmif report`` share (``add_model_arguments``,
``add_provider_argument``, ``pipeline_config``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dcmif_ros.inference.pipeline import PipelineConfig

PSEUDO_IR_FOLDER = "pseudo_ir"
GATE_FOLDER = "gate"
OUTPUT_SUFFIX = ".png"
EXIT_SOME_FAILED = 1
STILL_REFRESH_EVERY = 1  # stills are usually unrelated scenes: each gets its own prior unless told otherwise


def positive_int(text: str) -> int:
    """argparse type for counts and periods, where 0 would mean nothing sensible."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_provider_argument(parser: argparse.ArgumentParser) -> None:
    """--provider and --precision, checked by the engine (the choices live in dcmif_ros.inference.engine, too heavy to
    import here)."""
    parser.add_argument("--provider", default="auto",
                        help="onnxruntime execution provider: auto, tensorrt, cuda or cpu (default: %(default)s)")
    parser.add_argument("--precision", default="auto",
                        help="graph precision: auto (the exported fp16 graph on CUDA, the int8 graph on the CPU "
                             "where its export found it faster and accurate, else fp32), fp32, fp16 or int8 "
                             "(default: %(default)s)")


def add_model_arguments(parser: argparse.ArgumentParser, refresh_default: int | None,
                        refresh_help: str) -> None:
    """--model, --provider, --prior and --refresh-every, as the fusion front ends share them."""
    from dcmif_ros.prior import add_prior_argument

    parser.add_argument("--model", type=Path, metavar="ONNX",
                        help="exported model (its .json manifest and FiLM heads beside it); default: the "
                             "shipped models/dcmif_tiny.onnx")
    add_provider_argument(parser)
    add_prior_argument(parser)
    parser.add_argument("--refresh-every", type=positive_int, default=refresh_default, metavar="N",
                        help=refresh_help)


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The PipelineConfig the shared model options describe; refreshes are synchronous (deterministic)."""
    from dcmif_ros.inference.pipeline import PipelineConfig

    refresh = {} if args.refresh_every is None else {"refresh_every_n_frames": args.refresh_every}
    return PipelineConfig(model_path=args.model, provider=args.provider, precision=args.precision,
                          prior=args.prior, synchronous_prior=True, **refresh)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fuse`` parser; called by ``dcmif_ros.cli`` for every module in this package."""
    parser = subparsers.add_parser(
        "fuse",
        help="fuse visible images with their inferred infrared (files or folders of images)",
        description=(
            "Run the DCMIF model on visible images and write the fused image to OUT/NAME.png, the "
            f"pseudo-thermal image to OUT/{PSEUDO_IR_FOLDER}/NAME.png (--save-pseudo-ir) and the fusion gate "
            f"to OUT/{GATE_FOLDER}/NAME.png (--save-gate), NAME being the input's name without extension. "
            "Folders are read in name order (not recursively, hidden files left out). Grey, colour, RGBA "
            "and 16-bit inputs of any size work. Files that cannot be read or fused are reported by name "
            "and skipped; the rest are still written, and the exit code is 1."
        ),
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_DIR", help="images or folders")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--save-pseudo-ir", action="store_true",
                        help=f"also write the pseudo-thermal image to OUT/{PSEUDO_IR_FOLDER}/")
    parser.add_argument("--save-gate", action="store_true",
                        help=f"also write the per-pixel weight of the pseudo-IR to OUT/{GATE_FOLDER}/")
    parser.add_argument("--ir", type=Path, metavar="DIR",
                        help="folder of registered infrared images: fuse each input with the infrared image of "
                             "the same name (without extension) by a dual-modal model (--model; default the "
                             "shipped models/lrcfuse.onnx); --prior and --refresh-every do not apply")
    add_model_arguments(parser, STILL_REFRESH_EVERY,
                        "recompute the prior from every N-th image (0, N, 2N, ... in input order), which "
                        "then serves the following images too; 1 gives every image its own prior "
                        "(default: %(default)s)")
    parser.set_defaults(func=run)


def expand_inputs(inputs: list[Path]) -> tuple[list[Path], dict[str, str]]:
    """Files to fuse in order (folders expanded by name), and the arguments that name nothing."""
    files: list[Path] = []
    errors: dict[str, str] = {}
    for path in inputs:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")))
        elif path.exists():
            files.append(path)
        else:
            errors[str(path)] = "no such file or folder"
    return files, errors


def output_names(files: list[Path], out_dir: Path) -> tuple[dict[Path, str], dict[str, str]]:
    """Each input's output file name, and the inputs that cannot have one (name taken, or it is an input's)."""
    names: dict[Path, str] = {}
    errors: dict[str, str] = {}
    owners: dict[str, Path] = {}
    inputs = {path.resolve() for path in files}
    for path in files:
        name = path.stem + OUTPUT_SUFFIX
        if name in owners:
            errors[str(path)] = f"output name {name} already taken by {owners[name]}"
        elif (out_dir / name).resolve() in inputs:
            errors[str(path)] = f"its output {out_dir / name} would overwrite an input"
        else:
            owners[name] = path
            names[path] = name
    return names, errors


def missing_folders(folders: list[Path]) -> list[Path]:
    """The folders (and their parents) that do not exist yet, deepest first: what mkdir will create."""
    missing = set()
    for folder in folders:
        for path in (folder, *folder.parents):
            if path.exists():
                break
            missing.add(path)
    return sorted(missing, key=lambda path: len(path.parts), reverse=True)


def dual_modal_fuser(args: argparse.Namespace):
    """``--ir``: a function fusing an input file with the infrared file of the same stem in ``args.ir``."""
    from dcmif_ros.inference.engine import FusionEngine
    from dcmif_ros.inference.export import KIND_DUAL
    from dcmif_ros.image_codec import read_gray, read_image
    from dcmif_ros.evaluation.methods import shipped_dual_model

    if not args.ir.is_dir():
        raise FileNotFoundError(f"infrared folder not found: {args.ir}")
    if args.save_pseudo_ir:
        raise ValueError("--save-pseudo-ir: a dual-modal model reads the real infrared and infers none")
    engine = FusionEngine(args.model or shipped_dual_model("lrcfuse"), provider=args.provider,
                          precision=args.precision)
    if engine.kind != KIND_DUAL:
        raise ValueError(f"--ir needs a dual-modal model (LRCFuse, DCMIF with real infrared); "
                         f"{engine.model_path} is {engine.kind}")
    if args.save_gate and "gate" not in engine.manifest["outputs"]:
        raise ValueError(f"--save-gate: {engine.model_path.name} has no gate output")
    infrared: dict[str, list[Path]] = {}
    for path in sorted(args.ir.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            infrared.setdefault(path.stem, []).append(path)

    def fuse_file(path: Path):
        candidates = infrared.get(path.stem, [])
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates) or "none"
            raise ValueError(f"needs exactly one infrared image named {path.stem}.* in {args.ir} (found {found})")
        return engine.run_dual(read_image(path), read_gray(candidates[0]), want_gate=args.save_gate)

    return fuse_file


def run(args: argparse.Namespace) -> int:
    """Fuse every input in order; report the failures; 1 when any input was skipped."""
    import contextlib

    import cv2

    from dcmif_ros.image_codec import read_image, to_uint8
    from dcmif_ros.evaluation.methods import StillImageFuser
    from dcmif_ros.inference.pipeline import FusionPipeline

    files, errors = expand_inputs(args.inputs)
    names, naming_errors = output_names(files, args.out)
    errors |= naming_errors
    folders = [args.out]
    folders += [args.out / PSEUDO_IR_FOLDER] if args.save_pseudo_ir else []
    folders += [args.out / GATE_FOLDER] if args.save_gate else []
    written = 0
    with contextlib.ExitStack() as resources:
        if args.ir is None:
            pipeline = resources.enter_context(FusionPipeline(pipeline_config(args)))
            fuser = StillImageFuser(pipeline, args.refresh_every)
            fuse_file = lambda path: fuser(read_image(path), want_gate=args.save_gate)
        else:
            fuse_file = dual_modal_fuser(args)
        created = missing_folders(folders)
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        for path, name in names.items():
            try:
                result = fuse_file(path)
            except (OSError, ValueError, RuntimeError) as exc:  # unreadable (ImageDecodeError is a ValueError)
                errors[str(path)] = str(exc)                    # or refused by the engine
                continue
            outputs = [(args.out, result.fused)]
            outputs += [(args.out / PSEUDO_IR_FOLDER, result.pseudo_ir)] if args.save_pseudo_ir else []
            outputs += [(args.out / GATE_FOLDER, to_uint8(result.gate))] if args.save_gate else []
            for folder, image in outputs:
                if not cv2.imwrite(str(folder / name), image):
                    raise OSError(f"cannot write {folder / name}")
            written += 1
    if written:
        print(f"fused {written} image(s) into {args.out}")
    else:
        for folder in created:  # nothing fused: leave no empty output behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        print(f"fused no image; {args.out} not written")
    for source, reason in errors.items():
        print(f"dcmif fuse: skipped {source}: {reason}", file=sys.stderr)
    return EXIT_SOME_FAILED if errors else 0
