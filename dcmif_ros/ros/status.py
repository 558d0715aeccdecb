"""The health report as a dcmif_msgs/FusionStatus message (the typed twin of the /diagnostics entry)."""
from __future__ import annotations

from builtin_interfaces.msg import Time
from dcmif_msgs.msg import FusionStatus
from std_msgs.msg import Header

from dcmif_ros.ros.health import Health, NodeReport


def fusion_status(report: NodeReport, health: Health, stamp: Time,
                  fusion_mode: str = FusionStatus.FUSION_MODE_VIS_ONLY) -> FusionStatus:
    """``fusion_mode``: what produced the latest output (the node's default path: DCMIF's inferred infrared)."""
    counts, prior = report.counts, report.prior
    return FusionStatus(
        header=Header(stamp=stamp, frame_id=counts.last_frame_id),
        level=health.level,
        fusion_mode=fusion_mode,
        model_name=report.engine.model_name,
        execution_provider=report.engine.provider,
        inference_latency_ms=counts.inference_ms_last or 0.0,
        inference_latency_p95_ms=counts.inference_ms_p95 or 0.0,
        last_input_stamp=counts.last_input_stamp or Time(),
        frames_received=counts.received,
        frames_processed=counts.processed,
        frames_dropped=counts.dropped,
        frames_replaced=counts.stale,
        frames_rejected=counts.rejected,
        frames_lost_in_transport=counts.lost_in_transport,
        prior_version=prior.version,
        prior_age_s=prior.age_s,
        prior_age_frames=prior.age_frames,
        prior_backend=prior.backend,
        last_error=counts.last_error,
        precision=report.engine.precision,
        processing_width=report.engine.network_size[0] if report.engine.network_size else 0,
        processing_height=report.engine.network_size[1] if report.engine.network_size else 0,
    )
