"""``dcmif bag``: replay of rosbag2 files (sqlite3 and mcap) built here with rosbags, through a random tiny model."""
from __future__ import annotations

import os
import re
import struct
import subprocess
from dataclasses import astuple
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from dcmif_ros import cli
from dcmif_ros.bag import OWNER_FILE, BagReplayError, OutputTopics, output_topics, replay_bag
from dcmif_ros.image_codec import decode_image_fields
from dcmif_ros.inference.pipeline import FusionPipeline, PipelineConfig

TOPIC = "/camera/image_raw"
OUTPUTS = OutputTopics("/camera/fused/image", "/camera/pseudo_thermal/image", "/camera/status")
OTHER_TOPIC = "/camera/camera_info_stand_in"
SHAPE = (24, 32)  # height, width: tiny, but above the model's minimum
ROW_PADDING = 4   # bytes after each row, so decoding must honour step
FRAME_ID = "camera_optical"
STAMP_SEC = 1_700_000_000
RECEIVED_NS = 1_700_000_000_500_000_000
FRAME_PERIOD_NS = 100_000_000
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
STORAGE_SUFFIXES = {"sqlite3": ".db3", "mcap": ".mcap"}
MCAP_MESSAGE_OPCODE = 0x05

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
Image, CompressedImage, Header, Time = (TYPESTORE.types[name] for name in (
    "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "std_msgs/msg/Header",
    "builtin_interfaces/msg/Time"))


def frame(index: int) -> np.ndarray:
    """A smooth random BGR frame, different per index."""
    noise = np.random.default_rng(index).integers(0, 256, (*SHAPE, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (5, 5), 0)


def header(index: int) -> Header:
    return Header(stamp=Time(sec=STAMP_SEC + index, nanosec=index * 1000), frame_id=FRAME_ID)


def received_ns(index: int) -> int:
    return RECEIVED_NS + index * FRAME_PERIOD_NS


def image_message(index: int, encoding: str = "rgb8") -> Image:
    """rgb8 with padded rows (or a given encoding, to make one undecodable)."""
    height, width = SHAPE
    rows = cv2.cvtColor(frame(index), cv2.COLOR_BGR2RGB).reshape(height, width * 3)
    data = np.pad(rows, ((0, 0), (0, ROW_PADDING))).reshape(-1)
    return Image(header=header(index), height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=width * 3 + ROW_PADDING, data=data)


def compressed_message(index: int) -> CompressedImage:
    """PNG, lossless, so the decoded frame equals ``frame(index)``."""
    ok, png = cv2.imencode(".png", frame(index))
    assert ok
    return CompressedImage(header=header(index), format="png", data=png.reshape(-1))


def serialize(message) -> bytes:
    return bytes(TYPESTORE.serialize_cdr(message, message.__msgtype__))


def write_bag(path: Path, storage: str, messages: list[bytes], topic: str = TOPIC,
              msgtype: str = Image.__msgtype__) -> Path:
    """A bag with ``messages`` (serialised) on ``topic`` and one message on another topic."""
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage]) as writer:
        images = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
        other = writer.add_connection(OTHER_TOPIC, Header.__msgtype__, typestore=TYPESTORE)
        writer.write(other, received_ns(0), serialize(header(0)))
        for index, raw in enumerate(messages):
            writer.write(images, received_ns(index), raw)
    return path


def read_bag(path: Path) -> dict[str, list[tuple[int, object, bytes]]]:
    """Every topic's (receive time, message, raw bytes), in bag order."""
    topics: dict[str, list] = {}
    with AnyReader([path]) as reader:
        for connection, timestamp, raw in reader.messages():
            message = reader.deserialize(raw, connection.msgtype)
            topics.setdefault(connection.topic, []).append((timestamp, message, raw))
    return topics


def stamp(header) -> tuple[int, int, str]:
    return header.stamp.sec, header.stamp.nanosec, header.frame_id


@pytest.fixture(scope="module")
def config(random_tiny_onnx) -> PipelineConfig:
    return PipelineConfig(model_path=random_tiny_onnx, provider="cpu", prior="none")


@pytest.fixture(scope="module")
def expected_no_prior(config) -> list:
    """What the pipeline gives for frames 0..4, fused on their own (no prior: order does not matter)."""
    with FusionPipeline(config) as pipeline:
        return [pipeline.process(frame(index)) for index in range(5)]


def no_leftovers(folder: Path, *names: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


# ---------------------------------------------------------------------------------------------------------


def test_output_topics_sit_in_the_input_namespace():
    assert output_topics("/camera/image_raw") == OUTPUTS
    assert output_topics("/camera/image_raw/compressed", compressed=True) == OUTPUTS
    assert output_topics("/image_raw").fused == "/fused/image"
    assert output_topics("robot/front/image").status == "/robot/front/status"


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_replay_writes_outputs_keeping_stamps_and_receive_times(tmp_path, config, expected_no_prior, storage):
    raw_inputs = [serialize(image_message(index)) for index in range(3)]
    bag_in = write_bag(tmp_path / "in", storage, raw_inputs)

    summary = replay_bag(bag_in, tmp_path / "out", TOPIC, config)

    assert (summary.frames_read, summary.frames_fused, summary.skipped) == (3, 3, ())
    assert summary.topics == OUTPUTS
    no_leftovers(tmp_path, "in", "out")
    assert [p.suffix for p in (tmp_path / "out").iterdir() if p.name != "metadata.yaml"] == [
        STORAGE_SUFFIXES[storage]]
    topics = read_bag(tmp_path / "out")
    assert sorted(topics) == sorted([TOPIC, *astuple(OUTPUTS)])
    assert [raw for _, _, raw in topics[TOPIC]] == raw_inputs
    for name in (TOPIC, OUTPUTS.fused, OUTPUTS.pseudo_thermal, OUTPUTS.status):
        assert [t for t, _, _ in topics[name]] == [received_ns(i) for i in range(3)]
    for index, expected in enumerate(expected_no_prior[:3]):
        (_, fused, _), (_, pseudo, _) = topics[OUTPUTS.fused][index], topics[OUTPUTS.pseudo_thermal][index]
        assert stamp(fused.header) == stamp(pseudo.header) == stamp(header(index))
        assert (fused.encoding, pseudo.encoding) == ("bgr8", "mono8")
        np.testing.assert_array_equal(decode_image_fields(fused), expected.fused)
        np.testing.assert_array_equal(decode_image_fields(pseudo)[:, :, 0], expected.pseudo_ir)


def test_status_reports_counts_model_and_bag_time(tmp_path, config, random_tiny_onnx):
    bag_in = write_bag(tmp_path / "in", "mcap", [serialize(image_message(index)) for index in range(3)])
    replay_bag(bag_in, tmp_path / "out", TOPIC, config)

    statuses = [message for _, message, _ in read_bag(tmp_path / "out")[OUTPUTS.status]]
    for index, status in enumerate(statuses):
        assert divmod(received_ns(index), 1_000_000_000) == (status.header.stamp.sec, status.header.stamp.nanosec)
        assert status.header.frame_id == FRAME_ID
        assert (status.last_input_stamp.sec, status.last_input_stamp.nanosec) == stamp(header(index))[:2]
        assert (status.frames_received, status.frames_processed, status.frames_dropped) == (index + 1, index + 1, 0)
        assert status.level == status.LEVEL_OK and status.last_error == ""
        assert status.fusion_mode == status.FUSION_MODE_VIS_ONLY
        assert status.model_name == random_tiny_onnx.stem
        assert status.execution_provider == "CPUExecutionProvider"
        assert (status.precision, status.processing_height, status.processing_width) == ("fp32", *SHAPE)
        assert status.prior_backend == "none" and status.prior_version == 0
        assert status.prior_age_s == pytest.approx(index * FRAME_PERIOD_NS / 1e9)
        assert status.inference_latency_ms > 0 and status.inference_latency_p95_ms > 0


def test_compressed_input_and_another_output_storage(tmp_path, config, expected_no_prior):
    compressed_topic = TOPIC + "/compressed"
    bag_in = write_bag(tmp_path / "in", "mcap", [serialize(compressed_message(index)) for index in range(2)],
                       topic=compressed_topic, msgtype=CompressedImage.__msgtype__)

    summary = replay_bag(bag_in, tmp_path / "out", compressed_topic, config, storage="sqlite3")

    assert summary.topics == OUTPUTS
    assert any(p.suffix == ".db3" for p in (tmp_path / "out").iterdir())
    topics = read_bag(tmp_path / "out")
    assert sorted(topics) == sorted([compressed_topic, *astuple(OUTPUTS)])
    for index, (_, fused, _) in enumerate(topics[OUTPUTS.fused]):
        assert stamp(fused.header) == stamp(header(index))
        np.testing.assert_array_equal(decode_image_fields(fused), expected_no_prior[index].fused)


def test_prior_refreshes_every_n_frames_deterministically(tmp_path, random_tiny_onnx, config):
    frames = 5
    bag_in = write_bag(tmp_path / "in", "sqlite3", [serialize(image_message(index)) for index in range(frames)])
    with_prior = PipelineConfig(model_path=random_tiny_onnx, provider="cpu", prior="embedded",
                                refresh_every_n_frames=2)  # asynchronous asked: the replay makes it synchronous
    replay_bag(bag_in, tmp_path / "first", TOPIC, with_prior)
    replay_bag(bag_in, tmp_path / "second", TOPIC, with_prior, storage="mcap")
    replay_bag(bag_in, tmp_path / "no_prior", TOPIC, config)

    first, second, no_prior = (read_bag(tmp_path / name) for name in ("first", "second", "no_prior"))
    for topic in (OUTPUTS.fused, OUTPUTS.pseudo_thermal):
        assert [raw for _, _, raw in first[topic]] == [raw for _, _, raw in second[topic]]
    statuses = [message for _, message, _ in first[OUTPUTS.status]]
    # Frames 0, 2, 4 refresh; a prior serves from the frame after the one it was computed from.
    assert [s.prior_version for s in statuses] == [0, 1, 1, 2, 2]
    assert [s.prior_age_frames for s in statuses] == [1, 1, 2, 1, 2]
    assert statuses[0].prior_backend == "embedded"
    fused_with, fused_without = ([raw for _, _, raw in bag[OUTPUTS.fused]] for bag in (first, no_prior))
    assert fused_with[0] == fused_without[0]  # frame 0 runs before any refresh
    assert all(a != b for a, b in zip(fused_with[1:], fused_without[1:]))


def test_corrupt_messages_are_reported_by_index_and_skipped(tmp_path, config):
    messages = [serialize(image_message(index)) for index in range(4)]
    messages[1] = messages[1][:40]  # truncated CDR
    messages[3] = serialize(image_message(3, encoding="32FC1"))  # deserialises, cannot be decoded
    bag_in = write_bag(tmp_path / "in", "mcap", messages)

    summary = replay_bag(bag_in, tmp_path / "out", TOPIC, config)

    assert [s.index for s in summary.skipped] == [1, 3]
    assert "deserialize" in summary.skipped[0].reason and "32FC1" in summary.skipped[1].reason
    assert (summary.frames_read, summary.frames_fused) == (4, 2)
    topics = read_bag(tmp_path / "out")
    assert [raw for _, _, raw in topics[TOPIC]] == [messages[0], messages[2]]
    status = topics[OUTPUTS.status][-1][1]
    assert (status.frames_received, status.frames_processed, status.frames_dropped) == (3, 2, 1)
    assert status.level == status.LEVEL_WARN and status.last_error.startswith("input message 1 skipped")


def test_missing_topic_lists_the_topics_the_bag_has(tmp_path, config):
    bag_in = write_bag(tmp_path / "in", "sqlite3", [serialize(image_message(0))])
    with pytest.raises(BagReplayError, match="no topic /front/image_raw") as error:
        replay_bag(bag_in, tmp_path / "out", "/front/image_raw", config)
    assert f"{TOPIC} (sensor_msgs/msg/Image, 1 messages)" in str(error.value)
    assert OTHER_TOPIC in str(error.value)
    with pytest.raises(BagReplayError, match="expected sensor_msgs/msg/Image or"):
        replay_bag(bag_in, tmp_path / "out", OTHER_TOPIC, config)
    with pytest.raises(BagReplayError, match="not found"):
        replay_bag(tmp_path / "absent", tmp_path / "out", TOPIC, config)
    no_leftovers(tmp_path, "in")


def test_existing_output_is_refused_unless_overwrite(tmp_path, config):
    bag_in = write_bag(tmp_path / "in", "mcap", [serialize(image_message(0))])
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous run")
    with pytest.raises(BagReplayError, match="exists; pass --overwrite"):
        replay_bag(bag_in, out, TOPIC, config)
    with pytest.raises(BagReplayError, match="is the input bag"):
        replay_bag(bag_in, bag_in, TOPIC, config, overwrite=True)
    assert (out / "old.txt").exists()

    replay_bag(bag_in, out, TOPIC, config, overwrite=True)

    assert not (out / "old.txt").exists() and (out / "metadata.yaml").exists()
    no_leftovers(tmp_path, "in", "out")


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, OSError])
def test_interrupted_replay_leaves_no_output_and_keeps_the_old_one(tmp_path, config, monkeypatch, interruption):
    bag_in = write_bag(tmp_path / "in", "mcap", [serialize(image_message(index)) for index in range(3)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous run")
    process = FusionPipeline.process
    calls = []

    def fail_on_second_frame(self, frame_bgr, want_gate=False):
        calls.append(1)
        if len(calls) == 2:
            raise interruption("stop")
        return process(self, frame_bgr, want_gate)

    monkeypatch.setattr(FusionPipeline, "process", fail_on_second_frame)
    with pytest.raises(interruption):
        replay_bag(bag_in, out, TOPIC, config, overwrite=True)
    no_leftovers(tmp_path, "in", "out")
    no_leftovers(out, "old.txt")
    calls.clear()
    with pytest.raises(interruption):
        replay_bag(bag_in, tmp_path / "fresh", TOPIC, config)
    no_leftovers(tmp_path, "in", "out")


def test_cli_bag_reports_skips_and_errors(tmp_path, random_tiny_onnx, capsys):
    messages = [serialize(image_message(index)) for index in range(2)]
    messages[1] = messages[1][:40]
    bag_in = write_bag(tmp_path / "in", "sqlite3", messages)
    common = ["--model", str(random_tiny_onnx), "--provider", "cpu", "--prior", "none"]

    assert cli.main(["bag", str(bag_in), "--out", str(tmp_path / "out"), *common]) == 1
    captured = capsys.readouterr()
    assert f"1 of 2 frames of {TOPIC} fused into {OUTPUTS.fused}" in captured.out
    assert f"skipped message 1 of {TOPIC}" in captured.err

    assert cli.main(["bag", str(bag_in), "--out", str(tmp_path / "out"), *common]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert cli.main(["bag", str(bag_in), "--out", str(tmp_path / "other"), "--topic", "/nope", *common]) == 2
    assert f"its topics: {OTHER_TOPIC}" in capsys.readouterr().err


def corrupt_mcap_record(bag: Path, message_index: int) -> None:
    """Give the ``message_index``-th message record of the bag's first (uncompressed) chunk an impossible length."""
    path = next(bag.glob("*.mcap"))
    data = bytearray(path.read_bytes())
    chunk = data.index(b"\x06", 8)  # the first record after the magic and the header is the chunk
    compression_length = struct.unpack_from("<I", data, chunk + 37)[0]
    position, messages = chunk + 41 + compression_length + 8, -1
    while messages < message_index:
        opcode, length = data[position], struct.unpack_from("<Q", data, position + 1)[0]
        messages += opcode == MCAP_MESSAGE_OPCODE
        if messages < message_index:
            position += 9 + length
    struct.pack_into("<Q", data, position + 1, 2**40)
    path.write_bytes(bytes(data))


def test_a_corrupt_record_in_an_mcap_chunk_fails_in_one_line(tmp_path, random_tiny_onnx, capsys):
    bag_in = write_bag(tmp_path / "in", "mcap", [serialize(image_message(index)) for index in range(4)])
    corrupt_mcap_record(bag_in, 3)  # the other topic's message, then the images 0, 1: image 2 is corrupt; rosbags
    # reads a chunk whole, so the error comes at the chunk's first image
    out = tmp_path / "out"
    code = cli.main(["bag", str(bag_in), "--out", str(out), "--model", str(random_tiny_onnx), "--provider", "cpu",
                     "--prior", "none"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert re.search(rf"cannot read message \d of {TOPIC} \(the bag is corrupt there.*ReaderError: Truncated", err)
    no_leftovers(tmp_path, "in")


def test_a_partial_output_left_by_a_killed_run_is_removed_and_reported(tmp_path, random_tiny_onnx, capsys):
    bag_in = write_bag(tmp_path / "in", "sqlite3", [serialize(image_message(0))])
    killed = tmp_path / ".out.killed.partial"
    killed.mkdir()
    (killed / OWNER_FILE).write_text(str(_exited_pid()))
    killed_early = tmp_path / ".out.early.partial"
    (killed_early / "out").mkdir(parents=True)  # killed before it wrote its pid
    running = tmp_path / ".out.running.partial"
    running.mkdir()
    (running / OWNER_FILE).write_text(str(os.getpid()))  # a run still writing: not ours to remove
    code = cli.main(["bag", str(bag_in), "--out", str(tmp_path / "out"), "--model", str(random_tiny_onnx),
                     "--provider", "cpu", "--prior", "none"])
    err = capsys.readouterr().err
    assert code == 0
    for partial in (killed, killed_early):
        assert f"removed {partial}, left by an interrupted run" in err and not partial.exists()
    no_leftovers(tmp_path, "in", "out", running.name)


def _exited_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_an_unwritable_output_fails_in_one_line(tmp_path, unwritable_path, random_tiny_onnx, capsys):
    bag_in = write_bag(tmp_path / "in", "sqlite3", [serialize(image_message(0))])
    code = cli.main(["bag", str(bag_in), "--out", str(unwritable_path), "--model", str(random_tiny_onnx),
                     "--provider", "cpu", "--prior", "none"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dcmif bag: error:") and err.count("\n") == 1, err
