"""Packaging for dcmif_ros: works with colcon (ament_python) and with plain pip (the .venv set-up)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dcmif_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models", glob("models/*.onnx") + glob("models/*.json") + glob("models/*.pt")),
    ],
    package_data={PACKAGE: ["assets/*"]},
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="dcmif_ros developers",
    description="Live infrared inference and visible/infrared fusion for ROS 2 cameras.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "dcmif = dcmif_ros.cli:main",
            "dcmif_node = dcmif_ros.node:main",
        ],
    },
)
