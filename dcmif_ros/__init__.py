"""dcmif_ros: infer the missing infrared from a visible camera and fuse the two, live, for ROS 2.

The core (models, engine, codec, priors, metrics, training) imports without ROS; ``dcmif_ros.node``
is the thin ROS layer on top.
"""

__version__ = "0.1.0"
