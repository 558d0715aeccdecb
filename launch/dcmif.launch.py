"""Launch dcmif_node on a camera topic.

    ros2 launch dcmif_ros dcmif.launch.py input_image_topic:=/camera/color/image_raw
    ros2 launch dcmif_ros dcmif.launch.py --show-args

model_path, provider and prior left empty keep the values of params_file (config/dcmif.yaml by default) and,
failing that, the node's defaults (the model shipped in share/dcmif_ros/models). For a bag replayed with
``ros2 bag play --clock``, set use_sim_time:=true. Images of 640x480 and larger need the Fast DDS profile
share/dcmif_ros/config/fastdds_shm.xml exported in every process of the graph (docs/node.md).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "dcmif_ros"
BOOLEANS = ["true", "false"]
OPTIONAL_OVERRIDES = ("model_path", "provider", "prior")
"""Passed to the node only when given, so that params_file keeps the last word otherwise."""


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="dcmif",
                              description="namespace of the node and of its output topics"),
        DeclareLaunchArgument("input_image_topic", default_value="/camera/image_raw",
                              description="camera topic (sensor_msgs/Image); with use_compressed in params_file, "
                                          "<input_image_topic>/compressed is used"),
        DeclareLaunchArgument("ir_image_topic", default_value="/thermal/image_raw",
                              description="thermal camera topic (sensor_msgs/Image), used with use_ir in params_file"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "dcmif.yaml"]),
                              description="YAML file of node parameters (/**: ros__parameters:)"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="ONNX model file; empty: params_file's, else the shipped model"),
        DeclareLaunchArgument("provider", default_value="", choices=["", "auto", "tensorrt", "cuda", "cpu"],
                              description="onnxruntime execution provider; empty: params_file's"),
        DeclareLaunchArgument("prior", default_value="",
                              description="FiLM prior backend: embedded, none or vlm:PATH; empty: params_file's"),
        DeclareLaunchArgument("use_sim_time", default_value="false", choices=BOOLEANS,
                              description="true when replaying a bag with ros2 bag play --clock"),
        DeclareLaunchArgument("autostart", default_value="true", choices=BOOLEANS,
                              description="configure and activate at once; false waits for ros2 lifecycle set"),
        DeclareLaunchArgument("log_level", default_value="info",
                              choices=["debug", "info", "warn", "error", "fatal"], description="node log level"),
        OpaqueFunction(function=_dcmif_node),
    ])


def _dcmif_node(context):
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    topic = value("input_image_topic")
    overrides = {"use_sim_time": value("use_sim_time") == "true", "autostart": value("autostart") == "true"}
    overrides.update({name: value(name) for name in OPTIONAL_OVERRIDES if value(name)})
    return [Node(
        package=PACKAGE, executable="dcmif_node", name="dcmif_node", namespace=value("namespace"),
        parameters=[value("params_file"), overrides],
        remappings=[("image_raw", topic), ("image_raw/compressed", f"{topic}/compressed"),
                    ("ir_image", value("ir_image_topic"))],
        ros_arguments=["--log-level", value("log_level")],
        output="screen", emulate_tty=True,
    )]
