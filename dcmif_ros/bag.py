"""Replay a rosbag2 through the FusionPipeline into a new bag, with ``rosbags``: no ROS install needed.

What the output bag holds (sqlite3 or mcap, by default the input's storage):

* the input topic, each message copied byte for byte, with the recorded QoS;
* the node's outputs under the input topic's namespace, with the node's relative names:
  ``/camera/image_raw`` gives ``/camera/fused/image`` (bgr8), ``/camera/pseudo_thermal/image`` (mono8) and
  ``/camera/status`` (``dcmif_msgs/msg/FusionStatus``, one per fused frame). A CompressedImage topic is
  named by its base topic: ``/camera/image_raw/compressed`` gives the same three.

Each output message has the receive timestamp of the input it came from; the images carry the input header
verbatim, the status header has the input's receive time (what the node's clock reads under
``use_sim_time`` while the bag plays with ``--clock``) and frame_id.

Frames go through ``FusionPipeline.process`` in bag order with the synchronous prior refresh: the node's
every-N-frames rule, applied exactly, so a replay is deterministic. Status ages are in bag time, and
latencies are measured wall time.

A message that cannot be deserialised, decoded or fused is reported by its index in the topic (0-based)
and left out of the output altogether, so every input message there has its fused counterpart and tools
reading the output never meet it.

The bag is written into a hidden temporary sibling of the output and renamed into place once complete; an
exception or Ctrl-C removes the temporary, so no half-written bag ever has the final name. A temporary left by
a killed run (SIGKILL, power loss) names its process; the next run for that output removes it and says so.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from tqdm import tqdm

from dcmif_ros.image_codec import ImageFields, decode_compressed, decode_image_fields
from dcmif_ros.image_codec import encode_bgr8, encode_mono8
from dcmif_ros.inference.pipeline import FusionPipeline, PipelineConfig
from dcmif_ros.prior import Prior
from dcmif_ros.resources import packaged_file

FUSED_TOPIC = "fused/image"
PSEUDO_THERMAL_TOPIC = "pseudo_thermal/image"
STATUS_TOPIC = "status"
COMPRESSED_TOPIC_SUFFIX = "/compressed"

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
STATUS_TYPE = "dcmif_msgs/msg/FusionStatus"
STATUS_DEFINITION_FILE = Path("msg") / "FusionStatus.msg"
STATUS_PACKAGE = "dcmif_msgs"

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
MCAP_SUFFIX = ".mcap"
LATENCY_WINDOW = 100  # frames in the status's p95 latency
LATENCY_PERCENTILE = 95
NANOSECONDS_PER_SECOND = 1_000_000_000
PARTIAL_SUFFIX = ".partial"
OWNER_FILE = "owner.pid"
"""Inside a temporary output folder: the pid of the run writing it."""


class BagReplayError(ValueError):
    """The input or output bag cannot be used as asked; the message says why (and what would work)."""


@dataclass(frozen=True)
class OutputTopics:
    fused: str
    pseudo_thermal: str
    status: str


@dataclass(frozen=True)
class SkippedMessage:
    """An input message that was not fused: its 0-based index in the topic and why."""

    index: int
    reason: str


@dataclass(frozen=True)
class ReplaySummary:
    output: Path
    input_topic: str
    topics: OutputTopics
    frames_read: int
    frames_fused: int
    skipped: tuple[SkippedMessage, ...]
    removed_partials: tuple[Path, ...] = ()  # temporaries of killed runs, removed before this one


def output_topics(input_topic: str, compressed: bool = False) -> OutputTopics:
    """The node's relative output names resolved in the namespace of the input (base) topic."""
    base = input_topic
    if compressed and base.endswith(COMPRESSED_TOPIC_SUFFIX):
        base = base[: -len(COMPRESSED_TOPIC_SUFFIX)]
    namespace = PurePosixPath("/" + base.strip("/")).parent
    return OutputTopics(*(str(namespace / name) for name in (FUSED_TOPIC, PSEUDO_THERMAL_TOPIC, STATUS_TOPIC)))


def replay_bag(input_path: str | Path, output_path: str | Path, topic: str, pipeline_config: PipelineConfig,
               storage: str | None = None, overwrite: bool = False) -> ReplaySummary:
    """Fuse every image of ``topic`` and write the output bag (see the module docstring).

    ``storage``: "mcap" or "sqlite3", None for the input's. The prior refresh is made synchronous whatever
    ``pipeline_config`` says. Raises BagReplayError for unusable input or output paths and a missing topic.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    _check_output(input_path, output_path, overwrite)
    if storage is not None and storage not in STORAGES:
        raise BagReplayError(f"unknown storage {storage!r}; choose one of {', '.join(STORAGES)}")
    typestore = _output_typestore()
    removed = _remove_abandoned_partials(output_path)
    with _open_bag(input_path, typestore) as reader:
        connections = _topic_connections(reader, topic)
        topics = output_topics(topic, compressed=connections[0].msgtype == COMPRESSED_IMAGE_TYPE)
        plugin = STORAGES[storage or _storage_of(input_path)]
        config = dataclasses.replace(pipeline_config, synchronous_prior=True)
        with (FusionPipeline(config) as pipeline, _staged(output_path, overwrite) as staging,
              Writer(staging, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer):
            replay = _Replay(reader, writer, typestore, pipeline, topic, topics, connections)
            replay.run()
    return ReplaySummary(output_path, topic, topics, replay.frames_read, replay.frames_fused,
                         tuple(replay.skipped), removed)


# ---------------------------------------------------------------------------------------------------------
# Paths and bags


def _check_output(input_path: Path, output_path: Path, overwrite: bool) -> None:
    if output_path.resolve() == input_path.resolve():
        raise BagReplayError(f"the output {output_path} is the input bag; choose another --out")
    if output_path.exists() and not overwrite:
        raise BagReplayError(f"output {output_path} exists; pass --overwrite to replace it")


def _storage_of(bag_path: Path) -> str:
    """mcap when the bag (a folder or a single file) has an .mcap file, else sqlite3."""
    files = bag_path.iterdir() if bag_path.is_dir() else [bag_path]
    return "mcap" if any(MCAP_SUFFIX in path.name for path in files) else "sqlite3"


@contextlib.contextmanager
def _open_bag(path: Path, typestore: Typestore) -> Iterator[AnyReader]:
    """An open rosbag2 reader; bags without message definitions decode with ``typestore``."""
    if not path.exists():
        raise BagReplayError(f"input bag not found: {path}")
    try:
        reader = AnyReader([path], default_typestore=typestore)
        if reader.is2:
            reader.open()
    except Exception as exc:  # a corrupt file makes rosbags raise anything from struct.error to UnicodeDecodeError
        raise BagReplayError(f"cannot read {path} as a rosbag2: {type(exc).__name__}: {exc}") from None
    if not reader.is2:
        raise BagReplayError(f"{path} is a ROS 1 bag; convert it first (rosbags-convert --src {path})")
    try:
        yield reader
    finally:
        reader.close()


def _topic_connections(reader: AnyReader, topic: str) -> list[Connection]:
    """The connections of ``topic``, which must carry Image or CompressedImage; else say what the bag has."""
    connections = [c for c in reader.connections if c.topic == topic]
    if not connections:
        available = sorted({f"{c.topic} ({c.msgtype}, {c.msgcount} messages)" for c in reader.connections})
        raise BagReplayError(f"the bag has no topic {topic}; its topics: " + ("; ".join(available) or "none"))
    msgtypes = {c.msgtype for c in connections}
    if len(msgtypes) != 1 or not msgtypes <= {IMAGE_TYPE, COMPRESSED_IMAGE_TYPE}:
        raise BagReplayError(f"topic {topic} carries {', '.join(sorted(msgtypes))}; "
                             f"expected {IMAGE_TYPE} or {COMPRESSED_IMAGE_TYPE}")
    return connections


@contextlib.contextmanager
def _staged(output_path: Path, overwrite: bool) -> Iterator[Path]:
    """A path to write the bag at, inside a hidden sibling folder; renamed to ``output_path`` on success.

    The bag folder keeps its final name inside the temporary one, so its storage files are named as
    rosbag2 would name them. A replaced output is moved aside first and deleted only after the rename.
    """
    output_path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output_path.name}.", suffix=PARTIAL_SUFFIX, dir=output_path.parent))
    try:
        (scratch / OWNER_FILE).write_text(str(os.getpid()))
        staging = scratch / output_path.name
        yield staging
        if overwrite and output_path.exists():
            os.replace(output_path, scratch / "replaced")
        os.replace(staging, output_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _remove_abandoned_partials(output_path: Path) -> tuple[Path, ...]:
    """Remove the temporaries of ``output_path`` whose writer is gone (killed before it could clean up)."""
    removed = []
    for scratch in sorted(output_path.parent.glob(f".{glob.escape(output_path.name)}.*{PARTIAL_SUFFIX}")):
        if scratch.is_dir() and not _process_alive(_owner(scratch)):
            shutil.rmtree(scratch)
            removed.append(scratch)
    return tuple(removed)


def _owner(scratch: Path) -> int | None:
    try:
        return int((scratch / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None  # killed before it wrote its pid


def _process_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


@functools.cache
def _output_typestore() -> Typestore:
    """ROS 2 types plus FusionStatus, registered from its .msg text so no built interface is needed."""
    typestore = get_typestore(Stores.LATEST)
    typestore.register(get_types_from_msg(_status_definition_path().read_text(), STATUS_TYPE))
    return typestore


def _status_definition_path() -> Path:
    """FusionStatus.msg from the installed dcmif_msgs share directory, else from this source tree."""
    source = packaged_file(STATUS_PACKAGE, STATUS_DEFINITION_FILE)
    if not source.is_file():
        raise FileNotFoundError(f"{STATUS_DEFINITION_FILE.name} not found: neither {STATUS_PACKAGE} is "
                                f"installed nor is {source} present")
    return source


# ---------------------------------------------------------------------------------------------------------
# The replay loop


class _Replay:
    """Reads the input topic in bag order, fuses each frame and writes it, its outputs and the status."""

    def __init__(self, reader: AnyReader, writer: Writer, typestore: Typestore, pipeline: FusionPipeline,
                 input_topic: str, topics: OutputTopics, connections: list[Connection]):
        self.reader, self.writer, self.typestore, self.pipeline = reader, writer, typestore, pipeline
        self.connections = connections
        self.input_topic = input_topic
        self.msgtype = connections[0].msgtype
        self.input_out = writer.add_connection(input_topic, self.msgtype, typestore=typestore,
                                               offered_qos_profiles=connections[0].ext.offered_qos_profiles)
        self.fused_out = writer.add_connection(topics.fused, IMAGE_TYPE, typestore=typestore)
        self.pseudo_out = writer.add_connection(topics.pseudo_thermal, IMAGE_TYPE, typestore=typestore)
        self.status_out = writer.add_connection(topics.status, STATUS_TYPE, typestore=typestore)
        self.frames_read = 0
        self.fused_at_ns: list[int] = []  # receive time of every fused frame: the clock of a prior's age
        self.skipped: list[SkippedMessage] = []
        self.rejected = 0  # of the skipped: unusable input, not an inference failure
        self.skipped_since_status = False
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.last_error = ""

    @property
    def frames_fused(self) -> int:
        return len(self.fused_at_ns)

    def run(self) -> None:
        total = sum(c.msgcount for c in self.connections)
        messages = iter(tqdm(self.reader.messages(connections=self.connections), total=total, unit="frame",
                             desc="dcmif bag", disable=None))
        while (record := self._next_record(messages)) is not None:
            self.frames_read += 1
            self._fuse(*record)

    def _next_record(self, messages: Iterator) -> tuple[int, bytes] | None:
        """The next (receive time, raw message), None at the end; BagReplayError when the bag is corrupt there."""
        try:
            _, timestamp, raw = next(messages)
        except StopIteration:
            return None
        except Exception as exc:  # rosbags' ReaderError, AnyReaderError, or whatever a corrupt record raises
            raise BagReplayError(f"cannot read message {self.frames_read} of {self.input_topic} (the bag is "
                                 f"corrupt there; {self.frames_read} message(s) before it were read): "
                                 f"{type(exc).__name__}: {exc}") from None
        return timestamp, raw

    def _fuse(self, timestamp: int, raw: bytes) -> None:
        index = self.frames_read - 1
        prior = self.pipeline.refresher.current
        try:
            message = self.reader.deserialize(raw, self.msgtype)
            result = self.pipeline.process(_decode(message, self.msgtype))
        except (AnyReaderError, ValueError, RuntimeError) as exc:
            # As the node does: undecodable (ImageDecodeError is a ValueError), refused by the engine, or
            # failed in onnxruntime (RuntimeError); the next message may well be fine.
            self.rejected += not isinstance(exc, RuntimeError)
            self.skipped.append(SkippedMessage(index, str(exc)))
            self.skipped_since_status = True
            self.last_error = f"input message {index} skipped: {exc}"
            return
        self.fused_at_ns.append(timestamp)
        self.latencies_ms.append(result.timings_ms["total"])
        stamp = message.header.stamp
        header = self._header(self._time(stamp.sec, stamp.nanosec), message.header.frame_id)
        self.writer.write(self.input_out, timestamp, raw)
        self._write(self.fused_out, timestamp, self._image(header, encode_bgr8(result.fused)))
        self._write(self.pseudo_out, timestamp, self._image(header, encode_mono8(result.pseudo_ir)))
        self._write(self.status_out, timestamp, self._status(timestamp, header, prior))

    def _status(self, timestamp: int, input_header: object, prior: Prior) -> object:
        """FusionStatus after fusing one frame, as the node would report it with the bag as its clock.

        Unlike the node's periodic status, it describes the prior that fused this frame. WARN when a message
        was skipped since the previous status, the last prior refresh failed, or the engine fell back to the
        CPU from a provider named explicitly.
        """
        prior_error = self.pipeline.refresher.last_error
        self.last_error = prior_error or self.last_error
        # The node's rule (ros.health.EngineState): with provider "auto" the CPU is an outcome, not a fallback.
        fell_back = self.pipeline.config.provider != "auto" and self.pipeline.engine.fallback_warning
        degraded = self.skipped_since_status or prior_error or fell_back
        self.skipped_since_status = False
        frame_index = self.frames_fused - 1
        prior_source_ns = self.fused_at_ns[max(prior.frame_index, 0)]
        status = self.typestore.types[STATUS_TYPE]
        network_width, network_height = self.pipeline.engine.network_size or (0, 0)
        return status(
            header=self._header(self._time(*divmod(timestamp, NANOSECONDS_PER_SECOND)), input_header.frame_id),
            level=status.LEVEL_WARN if degraded else status.LEVEL_OK,
            fusion_mode=status.FUSION_MODE_VIS_ONLY,
            model_name=self.pipeline.engine.model_path.stem,
            execution_provider=self.pipeline.engine.providers[0],
            inference_latency_ms=self.latencies_ms[-1],
            inference_latency_p95_ms=float(np.percentile(self.latencies_ms, LATENCY_PERCENTILE)),
            last_input_stamp=input_header.stamp,
            frames_received=self.frames_read,
            frames_processed=self.frames_fused,
            frames_dropped=len(self.skipped),
            frames_replaced=0,  # a replay fuses every frame
            frames_rejected=self.rejected,
            frames_lost_in_transport=0,
            prior_version=prior.version,
            prior_age_s=(timestamp - prior_source_ns) / NANOSECONDS_PER_SECOND,
            prior_age_frames=prior.age_frames(frame_index),
            prior_backend=self.pipeline.prior_name,
            last_error=self.last_error,
            precision=self.pipeline.engine.precision,
            processing_width=network_width,
            processing_height=network_height,
        )

    def _write(self, connection: Connection, timestamp: int, message: object) -> None:
        self.writer.write(connection, timestamp, self.typestore.serialize_cdr(message, message.__msgtype__))

    def _time(self, sec: int, nanosec: int) -> object:
        return self.typestore.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)

    def _header(self, stamp: object, frame_id: str) -> object:
        return self.typestore.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def _image(self, header: object, fields: ImageFields) -> object:
        return self.typestore.types[IMAGE_TYPE](
            header=header, height=fields.height, width=fields.width, encoding=fields.encoding,
            is_bigendian=fields.is_bigendian, step=fields.step, data=np.frombuffer(fields.data, np.uint8),
        )


def _decode(message: object, msgtype: str) -> np.ndarray:
    if msgtype == COMPRESSED_IMAGE_TYPE:
        return decode_compressed(message.format, message.data)
    return decode_image_fields(message)
