"""The files one exported model consists of, read from its manifest (``models/<name>.json``).

The export writes a manifest that names every file it wrote beside it (graph, fp16 graph, FiLM heads,
weights); the engine opens the ones it needs by those names. setup.py installs exactly what the manifests
name, so a file added to an export is installed without anyone editing setup.py. Standard library only:
setup.py imports this module before any dependency is installed.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def named_files(manifest: dict) -> Iterator[str]:
    """Every file name the manifest gives: values of keys ``*_file`` and of ``file`` in nested entries."""
    for key, value in manifest.items():
        if isinstance(value, dict):
            yield from named_files(value)
        elif isinstance(value, str) and (key == "file" or key.endswith("_file")):
            yield value


def export_files(manifest_path: str | Path) -> list[Path]:
    """The manifest and every file it names, all beside it; a named file that is missing is an error."""
    manifest_path = Path(manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the model manifest {manifest_path}: {exc}") from None
    files = [manifest_path] + [manifest_path.with_name(name) for name in dict.fromkeys(named_files(manifest))]
    missing = [path.name for path in files if not path.is_file()]
    if missing:
        raise ValueError(f"{manifest_path} names files that are not beside it: {', '.join(missing)}")
    return files
