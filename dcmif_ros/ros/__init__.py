"""The ROS 2 side of dcmif_node: QoS, parameters, message conversion, health reporting, process helpers.

Everything here imports rclpy; the fusion itself (``dcmif_ros.inference.pipeline``) and the image codec do not, so they
stay usable and testable without ROS.
"""
