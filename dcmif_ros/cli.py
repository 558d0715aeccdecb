"""The ``dcmif`` console command: one entry point, one module per subcommand in ``dcmif_ros.commands``.

Each subcommand module defines ``register(subparsers)``, which adds its parser and sets ``func``;
modules are discovered, so adding a subcommand means adding a module.
Heavy imports (torch, onnxruntime) happen inside the subcommands, so ``dcmif --help`` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from dcmif_ros import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcmif",
        description="Infer infrared from visible images and fuse them (DCMIF), offline and for ROS 2.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"dcmif_ros.commands.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("dcmif: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as exc:  # OSError: e.g. a read-only --out, named in the message
        print(f"dcmif {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
