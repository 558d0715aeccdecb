"""Files the project ships (models, message definitions), found the same way whether installed or not."""
from __future__ import annotations

from pathlib import Path

SOURCE_TREE = Path(__file__).resolve().parent.parent


def packaged_file(package: str, relative: str | Path) -> Path:
    """``share/<package>/<relative>`` when a ROS install (colcon) has it, else ``<source tree>/<relative>``.

    The source-tree path is returned even when it does not exist, so callers name it in their errors.
    """
    try:
        from ament_index_python.packages import get_package_share_directory
        installed = Path(get_package_share_directory(package)) / relative
        if installed.is_file():
            return installed
    except (ImportError, LookupError, ValueError, OSError):  # no ament index, or AMENT_PREFIX_PATH unset (a venv)
        pass
    return SOURCE_TREE / relative
