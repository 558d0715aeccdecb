"""Packaging for dcmif_ros: works with colcon (ament_python) and with plain pip (the .venv set-up)."""
import sys
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pip's legacy backend and colcon both run from here
from dcmif_ros.model_files import export_files  # noqa: E402  (standard library only)

PACKAGE = "dcmif_ros"


def model_files() -> list[str]:
    """Every shipped export: each manifest in models/ and every file it names (what the engine opens)."""
    return [str(path) for manifest in sorted(glob("models/*.json")) for path in export_files(manifest)]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models", model_files()),
    ],
    package_data={PACKAGE: ["assets/*"]},
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="dcmif_ros developers",
    description="Live infrared inference and visible/infrared fusion for ROS 2 cameras.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "dcmif = dcmif_ros.cli:main",
            "dcmif_node = dcmif_ros.ros.node_main:main",
        ],
    },
)
