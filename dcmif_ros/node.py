"""dcmif_node: the infrared a thermal camera would see, inferred from a visible camera and fused with it, live.

Topics (relative, so namespaces and remapping work):
  in   image_raw (sensor_msgs/Image), or image_raw/compressed (CompressedImage) with use_compressed;
       ir_image (sensor_msgs/Image, a registered thermal camera) with use_ir
  out  fused/image (bgr8, pixel-aligned with the input), pseudo_thermal/image (mono8), debug/gate (bgr8
       colour map, off by default), status (dcmif_msgs/FusionStatus), /diagnostics
Every image output carries its input's header verbatim; an output without subscribers is not computed.

Lifecycle (yolo_ros layout): configure reads and checks the parameters and creates the publishers; activate
loads the model(s) (onnxruntime sessions, warm-up, prior backend) and subscribes; deactivate unsubscribes and
frees the model. The node runs configure and activate itself unless ``autostart`` is false.

Threads: the image callback only stores the newest frame (``LatestFrameSlot``); ``inference_workers`` workers
(two on the CPU, one on a GPU) each take the newest frame when free, decode, fuse and publish it, in arrival
order (a frame finished after a newer one was published is dropped); the pipeline's refresher computes FiLM priors
in a thread of its own, so nothing on the image path ever waits for the language model. A worker survives
anything a frame does to it (the exception is counted, reported and logged); should a thread stop all the
same, the report timer says ERROR and starts a new one.
"""
from __future__ import annotations

import os
import itertools
import signal
import sys
import threading
import time

import rclpy
from dcmif_msgs.msg import FusionStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle.publisher import LifecyclePublisher
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image

from dcmif_ros.bounded_text import clip
from dcmif_ros.image_codec import encode_bgr8, encode_mono8
from dcmif_ros.inference.pipeline import FusionPipeline
from dcmif_ros.inference.processing_resolution import describe as describe_processing
from dcmif_ros.ros import qos
from dcmif_ros.ros.conversions import decode_input, describe_input, gate_colormap, image_message
from dcmif_ros.ros.diagnostics import DiagnosticsPublisher
from dcmif_ros.ros.fastdds import transport_loss_hint
from dcmif_ros.ros.frame_slot import LatestFrameSlot, PendingFrame
from dcmif_ros.ros.frame_stats import FrameStats
from dcmif_ros.ros.health import EngineState, PriorState, ReportBuilder, WorkerState, assess
from dcmif_ros.ros.infrared import InfraredInput
from dcmif_ros.ros.problem_log import ProblemKind, ProblemLog
from dcmif_ros.ros.parameters import (
    ConfigError,
    NodeConfig,
    OutputSwitches,
    declare_parameters,
    read_config,
    read_runtime_settings,
    runtime_change_problem,
    runtime_parameter_names,
)
from dcmif_ros.ros.status import fusion_status

NODE_NAME = "dcmif_node"
INPUT_TOPIC = "image_raw"
COMPRESSED_INPUT_TOPIC = "image_raw/compressed"
IR_TOPIC = "ir_image"
FUSED_TOPIC = "fused/image"
PSEUDO_THERMAL_TOPIC = "pseudo_thermal/image"
GATE_TOPIC = "debug/gate"
STATUS_TOPIC = "status"

PROBLEM_LOG_INTERVAL_S = 5.0
"""A recurring kind of problem (bad frames 30 times a second) is logged once per this interval."""
MAX_FRAME_ID_CHARS = 256
"""A longer input frame_id is cut before status repeats it every period."""

WORKER_THREAD_NAME = "dcmif-fusion-worker"
WORKER_JOIN_TIMEOUT_S = 10.0
"""Deactivation waits this long for the frame being fused to finish."""

CTRL_C_POLL_S = 0.1
"""main() spins in steps this long, so that Ctrl-C (a KeyboardInterrupt in the main thread) is seen promptly."""
_ctrl_c = threading.Event()
"""Set by main()'s SIGINT handler. A Ctrl-C can surface as another error (an import it cuts short raises
ImportError), so activation asks this rather than the exception's type."""


class DcmifNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self._runtime_parameters = runtime_parameter_names()
        self._settings = read_runtime_settings(self)
        self._config: NodeConfig | None = None
        self._outputs: dict[str, LifecyclePublisher] = {}
        self._diagnostics: DiagnosticsPublisher | None = None
        self._pipeline: FusionPipeline | None = None
        self._subscription = None
        self._infrared: InfraredInput | None = None
        self._ir_subscription = None
        self._fusion_mode = FusionStatus.FUSION_MODE_VIS_ONLY
        self._slot: LatestFrameSlot | None = None
        self._workers: list[threading.Thread] = []
        self._worker_started_s = 0.0
        self._publish_lock = threading.Lock()  # outputs leave in arrival order, whichever worker fused them
        self._last_published_sequence = 0
        self._worker_names = itertools.count()
        self._report_timer = None
        self._stats = FrameStats()
        self._reports = ReportBuilder()
        self._problems = ProblemLog(self.get_logger(), PROBLEM_LOG_INTERVAL_S)
        self._level = FusionStatus.LEVEL_STALE
        self.add_on_set_parameters_callback(self._check_parameter_change)
        self.add_post_set_parameters_callback(self._apply_parameter_change)

    # --- lifecycle -------------------------------------------------------------------------------------

    def start_up(self) -> bool:
        """Configure and activate (what ``autostart`` does); False, with the reason logged, if either fails."""
        return (self.trigger_configure() == TransitionCallbackReturn.SUCCESS
                and self.trigger_activate() == TransitionCallbackReturn.SUCCESS)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._config = read_config(self)
        except ConfigError as exc:
            self.get_logger().error(f"cannot configure: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._settings = read_runtime_settings(self)
        self._outputs = {topic: self._create_publisher(Image, topic)
                         for topic in (FUSED_TOPIC, PSEUDO_THERMAL_TOPIC, GATE_TOPIC)}
        self._outputs[STATUS_TOPIC] = self._create_publisher(FusionStatus, STATUS_TOPIC)
        self._diagnostics = DiagnosticsPublisher(self)
        self._stats = FrameStats()
        self._reports = ReportBuilder()
        self._level = FusionStatus.LEVEL_STALE
        config = self._config
        self.get_logger().info(f"configured: model {config.model_path}, provider '{config.provider}', precision "
                               f"'{config.precision}', prior '{config.prior}', input "
                               f"'{self.resolve_topic_name(self._input_topic(config.use_compressed)[1])}'")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        config = self._config
        pipeline = None
        try:
            pipeline = FusionPipeline(config.pipeline_config(self._settings.refresh_every_n_frames))
            infrared = InfraredInput(config) if config.ir is not None else None
        except BaseException as exc:  # rclpy turns an escaping exception into a silent ERROR transition
            if pipeline is not None:
                pipeline.close()
            if _ctrl_c.is_set() or not isinstance(exc, Exception):
                raise KeyboardInterrupt from exc  # Ctrl-C mid-activation: main() shuts down quietly
            self.get_logger().error(f"cannot activate: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        engine = pipeline.engine
        if EngineState.of(pipeline).fallback_warning:
            self.get_logger().warning(engine.fallback_warning)
        self.get_logger().info(f"activated: {engine.model_path.name} ({engine.precision}) on {engine.providers[0]} "
                               f"(provider '{config.provider}'), network resolution "
                               f"{describe_processing(config.processing_size)}, prior '{config.prior}'")
        if infrared is not None:
            self.get_logger().info(f"real infrared on '{self.resolve_topic_name(IR_TOPIC)}', fused by "
                                   f"{infrared.engine.model_path}")
        self._pipeline, self._infrared = pipeline, infrared
        self._fusion_mode = FusionStatus.FUSION_MODE_VIS_ONLY
        enabled = super().on_activate(state)  # enables the publishers before any frame can arrive
        self._slot = LatestFrameSlot()
        self._last_published_sequence = 0
        self._start_workers()
        self._subscription = self._create_input_subscription(config.use_compressed)
        if infrared is not None:
            self._ir_subscription = self._create_image_subscription(Image, IR_TOPIC, infrared.add)
        self._report_timer = self.create_timer(config.diagnostics_period_s, self._publish_reports,
                                               clock=Clock(clock_type=ClockType.STEADY_TIME))
        return enabled

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self.get_logger().info("deactivated: model freed, input unsubscribed")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_outputs()
        self.get_logger().info("cleaned up: publishers destroyed")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        self.get_logger().info("shut down")
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return TransitionCallbackReturn.SUCCESS  # back to unconfigured, ready to configure again

    def release(self) -> None:
        """Stop the threads, free the model and the endpoints, in any state (also without a context)."""
        self._stop_processing()
        self._destroy_outputs()

    def _stop_processing(self) -> None:
        for subscription in (self._subscription, self._ir_subscription):
            if subscription is not None:
                self.destroy_subscription(subscription)
        self._subscription = self._ir_subscription = None
        if self._report_timer is not None:
            self.destroy_timer(self._report_timer)
            self._report_timer = None
        if self._slot is not None:
            if self._slot.close():
                self._stats.count_stale()
            self._slot = None
        deadline = time.monotonic() + WORKER_JOIN_TIMEOUT_S
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if any(worker.is_alive() for worker in self._workers):
            self.get_logger().warning(f"a fusion worker was still busy {WORKER_JOIN_TIMEOUT_S:g} s after "
                                      "deactivation; it will exit after its frame")
        self._workers = []
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        self._infrared = None  # frees the dual-modal session once the worker has let go of it

    def _destroy_outputs(self) -> None:
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = {}
        if self._diagnostics is not None:
            self._diagnostics.destroy()
            self._diagnostics = None

    # --- endpoints ------------------------------------------------------------------------------------

    def _create_publisher(self, message_type, topic: str) -> LifecyclePublisher:
        return self.create_lifecycle_publisher(
            message_type, topic, qos.output_qos(), qos_overriding_options=qos.overridable(),
            event_callbacks=qos.publisher_events(self.get_logger(), self.resolve_topic_name(topic)))

    @staticmethod
    def _input_topic(use_compressed: bool) -> tuple[type, str]:
        return (CompressedImage, COMPRESSED_INPUT_TOPIC) if use_compressed else (Image, INPUT_TOPIC)

    def _create_input_subscription(self, use_compressed: bool):
        return self._create_image_subscription(*self._input_topic(use_compressed), self._on_image)

    def _create_image_subscription(self, message_type, topic: str, callback):
        events = qos.subscription_events(self.get_logger(), self.resolve_topic_name(topic), self._on_frames_lost)
        return self.create_subscription(message_type, topic, callback, qos.input_qos(),
                                        qos_overriding_options=qos.overridable(), event_callbacks=events)

    def _on_image(self, message: Image | CompressedImage) -> None:
        replaced_one = self._slot.put(message)
        self._stats.count_received(clip(message.header.frame_id, MAX_FRAME_ID_CHARS), replaced_one)

    def _on_frames_lost(self, count: int) -> None:
        self._stats.count_lost(count)
        self._problems.report(ProblemKind.LOST_IN_TRANSPORT,
                              f"{count} input frame(s) lost in transport: {transport_loss_hint(os.environ)}")

    # --- the worker -------------------------------------------------------------------------------------

    def _start_workers(self) -> None:
        """Start the missing ones of the ``workers`` worker threads (all of them on activation)."""
        alive = [worker for worker in self._workers if worker.is_alive()]
        for _ in range(len(alive), self._config.workers):
            worker = threading.Thread(target=self._serve_frames, args=(self._slot, self._pipeline, self._infrared),
                                      name=f"{WORKER_THREAD_NAME}-{next(self._worker_names)}", daemon=True)
            worker.start()
            alive.append(worker)
        self._workers = alive
        self._worker_started_s = time.monotonic()

    def _serve_frames(self, slot: LatestFrameSlot, pipeline: FusionPipeline, infrared: InfraredInput | None) -> None:
        while (pending := slot.take()) is not None:
            self._stats.start_frame(pending.taken_s)
            try:
                self._fuse(pending, pipeline, infrared)
            except Exception as exc:  # a bug or a publisher fault: one frame lost, never the worker
                reason = clip(f"the fusion worker lost a {describe_input(pending.message)} image to "
                              f"{type(exc).__name__}: {exc}")
                self._stats.count_failed(reason)
                self._problems.report(ProblemKind.WORKER_FAULT, reason)
            finally:  # also when the thread ends here (SystemExit): no frame stays "in progress" for ever
                self._stats.end_frame()

    def _fuse(self, pending: PendingFrame, pipeline: FusionPipeline, infrared: InfraredInput | None) -> None:
        message = pending.message
        wanted = self._wanted_outputs()
        if not wanted.any_image:
            self._stats.count_idle()
            return
        partner = None if infrared is None else infrared.partner(message.header.stamp)
        if partner is None and infrared is not None and infrared.live:
            self._stats.count_idle()  # the thermal camera runs but missed this frame: skip rather than mix modes
            return
        try:
            frame = decode_input(message, self._config.max_input_pixels)
            if partner is None:
                result = pipeline.process(frame, want_gate=wanted.debug_gate, want_pseudo_ir=wanted.pseudo_thermal)
                thermal, mode = result.pseudo_ir, FusionStatus.FUSION_MODE_VIS_ONLY
            else:
                result, thermal = infrared.fuse(frame, partner, wanted.debug_gate)
                mode = FusionStatus.FUSION_MODE_DUAL_DCMIF
        except ValueError as exc:  # ImageDecodeError, or a frame the engine refuses: the input's fault
            reason = clip(f"dropped a {describe_input(message)} image: {exc}")
            self._stats.count_rejected(reason)
            self._problems.report(ProblemKind.REJECTED_INPUT, reason)
            return
        except Exception as exc:  # onnxruntime's own errors; the next frame may well succeed
            reason = clip(f"inference failed on a {describe_input(message)} image: {type(exc).__name__}: {exc}")
            self._stats.count_failed(reason)
            self._problems.report(ProblemKind.INFERENCE_FAILED, reason)
            return
        header = message.header
        outputs = []
        if wanted.fused:
            outputs.append((FUSED_TOPIC, image_message(encode_bgr8(result.fused), header)))
        if wanted.pseudo_thermal:
            outputs.append((PSEUDO_THERMAL_TOPIC, image_message(encode_mono8(thermal), header)))
        if wanted.debug_gate and result.gate is not None:
            outputs.append((GATE_TOPIC, image_message(gate_colormap(result.gate), header)))
        with self._publish_lock:
            if pending.sequence < self._last_published_sequence:
                self._stats.count_superseded()  # another worker published a newer frame first
                return
            self._last_published_sequence = pending.sequence
            for topic, output in outputs:
                self._outputs[topic].publish(output)
            self._fusion_mode = mode
        self._stats.count_processed(pending.received_s, pending.taken_s, result.timings_ms["total"], header.stamp)

    def _wanted_outputs(self) -> OutputSwitches:
        switches = self._settings.outputs

        def listened(topic: str) -> bool:
            return self._outputs[topic].get_subscription_count() > 0

        return OutputSwitches(
            fused=switches.fused and listened(FUSED_TOPIC),
            pseudo_thermal=switches.pseudo_thermal and listened(PSEUDO_THERMAL_TOPIC),
            debug_gate=switches.debug_gate and listened(GATE_TOPIC),
            status=switches.status,
        )

    # --- reports ---------------------------------------------------------------------------------------

    def _publish_reports(self) -> None:
        """Timer callback, alive exactly while the pipeline is (created after it, destroyed before it).

        Also the worker's watchdog: an ERROR is logged when it starts, and a stopped worker is restarted once
        the report saying so is out.
        """
        pipeline, now_s = self._pipeline, time.monotonic()
        counts = self._stats.snapshot()
        worker = WorkerState.of(all(w.is_alive() for w in self._workers), counts, self._worker_started_s, now_s,
                                self._config.workers, self._config.threads)
        report = self._reports.build(counts, EngineState.of(pipeline), PriorState.of(pipeline), worker, now_s)
        health = assess(report)
        if health.level == FusionStatus.LEVEL_ERROR and self._level != FusionStatus.LEVEL_ERROR:
            self._problems.report(ProblemKind.HEALTH_ERROR, f"status ERROR: {health.message}")
        elif self._level == FusionStatus.LEVEL_ERROR and health.level != FusionStatus.LEVEL_ERROR:
            self.get_logger().info(f"status no longer ERROR: {health.message}")
        self._level = health.level
        stamp = self.get_clock().now().to_msg()
        if self._settings.outputs.status:
            self._outputs[STATUS_TOPIC].publish(fusion_status(report, health, stamp, self._fusion_mode))
        self._diagnostics.publish(report, health, stamp)
        if not worker.alive:
            self._start_workers()

    # --- parameters ------------------------------------------------------------------------------------

    def _check_parameter_change(self, parameters: list[Parameter]) -> SetParametersResult:
        changed = [p for p in parameters if p.name in self._runtime_parameters]
        if not changed:
            return SetParametersResult(successful=True)
        problem = runtime_change_problem(self._settings, self.get_parameter("prior").value, changed)
        return SetParametersResult(successful=problem is None, reason=problem or "")

    def _apply_parameter_change(self, parameters: list[Parameter]) -> None:
        changed = [p for p in parameters if p.name in self._runtime_parameters]
        if not changed:
            return
        self._settings = self._settings.with_changes(changed)
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.refresher.set_every_n_frames(self._settings.refresh_every_n_frames)



def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C; with autostart, exit 1 if it cannot configure or activate (launch shows it).

    Ctrl-C exits 0 at any moment, also during the seconds of activation: rclpy's own SIGINT handler is left
    out, because it shuts the context down under a running transition (which then fails with a transition
    error); Python's KeyboardInterrupt instead unwinds the main thread wherever it is. SIGTERM keeps rclpy's.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.SIGTERM)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _on_ctrl_c)
    node = executor = None
    try:
        node = DcmifNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if node.get_parameter("autostart").value and not node.start_up():
            return 1
        while rclpy.ok():
            executor.spin_once(timeout_sec=CTRL_C_POLL_S)
    except ConfigError as exc:  # a start-up value out of range: one line, not rclpy's traceback
        print(f"[{NODE_NAME}] cannot start: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.release()
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _on_ctrl_c(signum, frame) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # under ros2 launch a terminal's Ctrl-C arrives twice: once is enough
    _ctrl_c.set()
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
