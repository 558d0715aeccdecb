"""QoS of dcmif_node's topics, following REP-2003 as image_pipeline does since Jazzy.

Images in are best effort, keep-last 1: that matches both reliable cameras (usb_cam) and best-effort ones
(RealSense), and a frame that arrives while one is processed replaces it rather than queueing. Outputs are
reliable, which best-effort and reliable subscribers (e.g. yolo_ros with ``image_reliability:=1``) both accept.
Every endpoint takes ``qos_overrides.<topic>.<publisher|subscription>.<history|depth|reliability>``
parameters, and a peer with incompatible QoS is logged with the policy named, instead of a silent "no data".
"""
from __future__ import annotations

from collections.abc import Callable

from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.impl.rcutils_logger import RcutilsLogger
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_policy_name_from_kind,
)
from rclpy.qos_overriding_options import QoSOverridingOptions

INPUT_DEPTH = 1
"""Only the newest camera frame is worth processing."""

MAX_PLAUSIBLE_LOSS = 1 << 20
"""More frames than this lost between two events is a corrupt count, not a loss."""

OUTPUT_DEPTH = 5
"""Enough for a reliable subscriber to absorb a short hiccup without the writer's history growing large."""


def input_qos() -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=INPUT_DEPTH,
                      reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)


def output_qos() -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=OUTPUT_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def overridable() -> QoSOverridingOptions:
    """History, depth and reliability become read-only ``qos_overrides.*`` parameters (set at start-up)."""
    return QoSOverridingOptions.with_default_policies()


def subscription_events(logger: RcutilsLogger, topic: str,
                        on_message_lost: Callable[[int], None]) -> SubscriptionEventCallbacks:
    """Name the incompatible policy and the override that fixes it; report frames lost in transport."""

    def incompatible(event) -> None:
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        logger.warning(
            f"a publisher on '{topic}' offers QoS incompatible with this subscription "
            f"(policy {policy}): no images will be received from it; match it with the parameter "
            f"qos_overrides.{topic}.subscription.{policy.lower()}")

    return SubscriptionEventCallbacks(
        incompatible_qos=incompatible,
        message_lost=lambda event: on_message_lost(plausible_loss(event.total_count_change)),
    )


def plausible_loss(count_change: int) -> int:
    """Frames one message_lost event reports, where rmw_fastrtps sometimes reports nonsense.

    Seen here: after a frame larger than the shared-memory segment, an event with total_count_change
    2147483647 and total_count 2**64 - 2**31; it stands for a loss, so it counts as one frame.
    """
    return count_change if 0 <= count_change < MAX_PLAUSIBLE_LOSS else 1


def publisher_events(logger: RcutilsLogger, topic: str) -> PublisherEventCallbacks:
    def incompatible(event) -> None:
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        logger.warning(
            f"a subscription on '{topic}' requests QoS incompatible with this publisher "
            f"(policy {policy}): it will receive nothing; change the subscriber or set "
            f"qos_overrides.{topic}.publisher.{policy.lower()}")

    return PublisherEventCallbacks(incompatible_qos=incompatible)
