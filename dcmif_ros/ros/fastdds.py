"""The Fast DDS profile every process of a dcmif graph should load: config/fastdds_shm.xml.

Fast DDS's default shared-memory segment (512 KiB) is smaller than one 640x480 bgr8 image, so images travel
in fragments and a best-effort link loses nearly all of them (measured here: 0-1 of 75 frames at 15 Hz);
the profile's 32 MiB segment carries them whole (75 of 75). Fast DDS reads the profile once, when a process
creates its first participant, so it goes into the environment before rclpy starts.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dcmif_ros.resources import packaged_file

PROFILE_FILE_NAME = "fastdds_shm.xml"
PROFILE_ENV_VAR = "FASTDDS_DEFAULT_PROFILES_FILE"
LEGACY_PROFILE_ENV_VAR = "FASTRTPS_DEFAULT_PROFILES_FILE"
"""What Fast DDS 2 (ROS 2 Humble) reads; Kilted's rmw warns that it is deprecated, so it is only respected."""
RMW_ENV_VAR = "RMW_IMPLEMENTATION"
FASTDDS_RMW = "rmw_fastrtps_cpp"


def fastdds_profile_path() -> Path:
    """The profile installed in the package's share directory by colcon, else the one in the source tree."""
    return packaged_file("dcmif_ros", Path("config") / PROFILE_FILE_NAME)


def fastdds_environment(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` plus the profile and the Fast DDS RMW, unless it already names a profile or an RMW."""
    env = dict(base)
    if not (env.get(PROFILE_ENV_VAR) or env.get(LEGACY_PROFILE_ENV_VAR)):
        env[PROFILE_ENV_VAR] = str(fastdds_profile_path())
    env.setdefault(RMW_ENV_VAR, FASTDDS_RMW)
    return env


def transport_loss_hint(environ: Mapping[str, str]) -> str:
    """What to do about frames lost in transport, given whether this process loaded a Fast DDS profile."""
    profile = environ.get(PROFILE_ENV_VAR) or environ.get(LEGACY_PROFILE_ENV_VAR)
    if profile:
        return (f"the Fast DDS profile {profile} is loaded, so these are frames larger than its shared-memory "
                "segment, bursts faster than the node reads, or a link between hosts: set this subscription's "
                "reliability to reliable, or send smaller or compressed images")
    return (f"large images over a best-effort link lose fragments: load config/{PROFILE_FILE_NAME} in every "
            f"process ({PROFILE_ENV_VAR}), or set this subscription's reliability to reliable")
