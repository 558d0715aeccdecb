"""DCMIF networks (PyTorch): shared dictionary, JSRL, REN/RIN/RFN and the inference graph."""
from dcmif_ros.models.config import PRESETS, BackboneConfig, DCMIFConfig, get_config
from dcmif_ros.models.dcmif import DCMIFNet, FiLMHeads, dcmif_from_jsrl
from dcmif_ros.models.jsrl import JSRL

__all__ = ["PRESETS", "BackboneConfig", "DCMIFConfig", "get_config", "DCMIFNet", "FiLMHeads", "dcmif_from_jsrl", "JSRL"]
